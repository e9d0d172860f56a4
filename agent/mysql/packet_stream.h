// A MySQL connection: the data path's stream (agent/net/stream.h) with MySQL packet reads and
// writes (common/wire/mysql/packets.h: continuations of 16 MiB packets are joined on read and
// split on write). A packet larger than the limit, or continuations out of sequence, are a
// protocol error (InvalidArgument); a closed peer is Unavailable.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "agent/net/stream.h"
#include "common/wire/mysql/packets.h"

namespace sluice::agent::mysql {

using net::kNoThrow;

// One logical packet, copied out of the receive buffer.
struct OwnedPacket {
  uint8_t sequence = 0;
  std::string payload;
};

class PacketStream : public net::Stream {
 public:
  using net::Stream::Stream;

  asio::awaitable<absl::StatusOr<OwnedPacket>> ReadPacket(const wire::mysql::DecodeLimits& limits);
  // The next whole logical packet in the receive buffer, decoded in place (not consumed: the
  // caller consumes `wire_size`), or kNeedMore. Reads nothing.
  wire::mysql::DecodeResult Peek(const wire::mysql::DecodeLimits& limits) const {
    return wire::mysql::DecodeLogical(buffer().data(), limits);
  }
  // Reads until Peek has a whole packet (or fails).
  asio::awaitable<absl::Status> FillPacket(const wire::mysql::DecodeLimits& limits);
  // Writes `payload` framed from `sequence`; returns the next sequence id through `*next`.
  asio::awaitable<absl::Status> WritePacket(absl::string_view payload, uint8_t sequence,
                                            uint8_t* next = nullptr);

 private:
  std::string framed_;  // WritePacket's framing, reused (up to 256 KiB kept)
};

}  // namespace sluice::agent::mysql
