// One TCP connection of the data path, for any protocol: plaintext or TLS (switchable once, after
// the protocol's TLS request or on a direct-TLS ClientHello), with a receive buffer that the
// protocol's framing reads whole messages from. Coroutine-based (standalone Asio, C++20); errors
// are returned, never thrown. Protocols add their message reads on top (agent/postgres/stream.h,
// agent/mysql/packet_stream.h).
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ssl.hpp>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::net {

// Completion token for coroutine ops that report errors as values: (error_code, result...).
inline constexpr auto kNoThrow = asio::experimental::as_tuple(asio::use_awaitable);

// Received bytes not consumed yet: one growable array, consumed from the front without moving
// memory, compacted only when the free tail is too small, never zero-filled.
class RecvBuffer {
 public:
  absl::string_view data() const { return absl::string_view(buf_.get() + start_, end_ - start_); }
  bool empty() const { return start_ == end_; }
  size_t size() const { return end_ - start_; }
  char operator[](size_t i) const { return buf_[start_ + i]; }
  // Room for `n` more bytes at the tail.
  char* Prepare(size_t n);
  void Commit(size_t n) { end_ += n; }
  void Consume(size_t n);

 private:
  std::unique_ptr<char[]> buf_;
  size_t capacity_ = 0;
  size_t start_ = 0;
  size_t end_ = 0;
};

class Stream {
 public:
  // The socket is switched to non-blocking mode: plaintext writes are tried at once and wait in
  // the event loop only when the socket does not take everything.
  Stream(asio::ip::tcp::socket socket, asio::ssl::context& tls_context)
      : tls_(std::move(socket), tls_context) {
    asio::error_code ignored;
    tls_.next_layer().non_blocking(true, ignored);
  }

  asio::ip::tcp::socket& socket() { return tls_.next_layer(); }
  asio::ssl::stream<asio::ip::tcp::socket>& tls_stream() { return tls_; }
  bool is_tls() const { return is_tls_; }
  // What the peer sent that has not been consumed yet.
  const RecvBuffer& buffer() const { return buffer_; }

  // TLS handshakes. After success every read and write is encrypted. Bytes already buffered
  // before a server handshake are refused (they would be plaintext injected before TLS), unless
  // `buffered_is_tls`: where the protocol has the client start TLS without waiting for an answer
  // (MySQL's SSLRequest), what followed the request is the start of its handshake.
  asio::awaitable<absl::Status> ServerHandshake(bool buffered_is_tls = false);
  asio::awaitable<absl::Status> ClientHandshake();

  // Reads more bytes into buffer(); Unavailable at end of stream. Refuses to grow the buffer
  // past `max_buffer` (a message larger than the decode limit never gets that far).
  asio::awaitable<absl::Status> ReadMore(size_t max_buffer);
  asio::awaitable<absl::Status> Write(absl::string_view data);
  // The next byte without consuming it (plaintext only).
  asio::awaitable<absl::StatusOr<char>> PeekByte();
  void Consume(size_t n) { buffer_.Consume(n); }
  void Close();

 private:
  asio::ssl::stream<asio::ip::tcp::socket> tls_;
  bool is_tls_ = false;
  RecvBuffer buffer_;
};

}  // namespace sluice::agent::net
