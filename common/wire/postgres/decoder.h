// Incremental framing of the PostgreSQL frontend/backend protocol (version 3.x). Pure: no I/O,
// no policy. Given the bytes buffered so far, Decode says: need more data (nothing consumed),
// one whole message (and how many bytes it spans), or a protocol error (the caller closes the
// connection — an enforcing gateway never "stops parsing and keeps forwarding").
// https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace sluice::wire::postgres {

enum class Direction { kFrontend, kBackend };

struct DecodeLimits {
  // PostgreSQL itself refuses startup packets over 10000 bytes.
  size_t max_startup_bytes = 10000;
  // Every length field is checked against this before anything is buffered for it.
  size_t max_message_bytes = 64 << 20;
};

struct RawMessage {
  char type = 0;              // message type byte; 0 for startup-phase messages (no type byte)
  absl::string_view payload;  // the bytes after the length field
  size_t wire_size = 0;       // bytes this message spans in the input, header included
};

enum class DecodeStatus { kNeedMore, kMessage, kError };

struct DecodeResult {
  DecodeStatus status = DecodeStatus::kNeedMore;
  RawMessage message;  // valid when status == kMessage; views into the input
  std::string error;   // when status == kError
};

// The first message of a connection, and of a TLS session after SSLRequest: Int32 length,
// Int32 code, body. (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.)
DecodeResult DecodeStartupFrame(absl::string_view buffered, const DecodeLimits& limits);

// Any later message: Byte1 type, Int32 length, body. Types that this direction never sends are
// protocol errors.
DecodeResult DecodeFrame(absl::string_view buffered, Direction direction,
                         const DecodeLimits& limits);

// True when `buffered` starts like a TLS ClientHello (PostgreSQL 17 direct TLS,
// sslnegotiation=direct): record type 0x16 (handshake).
bool LooksLikeTlsClientHello(absl::string_view buffered);

}  // namespace sluice::wire::postgres
