#include "agent/net/stream.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace sluice::agent::net {

namespace {

constexpr size_t kReadChunk = 64 << 10;

absl::Status FromError(const asio::error_code& ec, absl::string_view what) {
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
      ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
      ec == asio::error::operation_aborted) {
    return absl::UnavailableError(absl::StrCat(what, ": connection closed"));
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", ec.message()));
}

}  // namespace

char* RecvBuffer::Prepare(size_t n) {
  if (capacity_ - end_ >= n) return buf_.get() + end_;
  size_t used = end_ - start_;
  if (start_ > 0 && capacity_ - used >= n) {
    std::memmove(buf_.get(), buf_.get() + start_, used);
  } else {
    size_t cap = std::max(capacity_ * 2, used + n);
    auto bigger = std::make_unique_for_overwrite<char[]>(cap);
    if (used > 0) std::memcpy(bigger.get(), buf_.get() + start_, used);
    buf_ = std::move(bigger);
    capacity_ = cap;
  }
  start_ = 0;
  end_ = used;
  return buf_.get() + end_;
}

void RecvBuffer::Consume(size_t n) {
  start_ += n;
  if (start_ == end_) start_ = end_ = 0;
}

asio::awaitable<absl::Status> Stream::ServerHandshake(bool buffered_is_tls) {
  if (!buffer_.empty() && !buffered_is_tls) {
    co_return absl::InvalidArgumentError("data arrived before the TLS handshake");
  }
  // What is buffered goes to TLS first (copied: the buffer is emptied before the handshake).
  const std::string initial(buffer_.data());
  buffer_.Consume(buffer_.size());
  asio::error_code ec;
  if (initial.empty()) {
    std::tie(ec) = co_await tls_.async_handshake(asio::ssl::stream_base::server, kNoThrow);
  } else {
    std::tie(ec, std::ignore) = co_await tls_.async_handshake(asio::ssl::stream_base::server,
                                                              asio::buffer(initial), kNoThrow);
  }
  if (ec) co_return absl::UnavailableError(absl::StrCat("TLS handshake failed: ", ec.message()));
  is_tls_ = true;
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Stream::ClientHandshake() {
  if (!buffer_.empty()) {
    co_return absl::InvalidArgumentError("the server sent data before the TLS handshake");
  }
  auto [ec] = co_await tls_.async_handshake(asio::ssl::stream_base::client, kNoThrow);
  if (ec) co_return absl::UnavailableError(absl::StrCat("TLS handshake failed: ", ec.message()));
  is_tls_ = true;
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Stream::ReadMore(size_t max_buffer) {
  if (buffer_.size() >= max_buffer) {
    co_return absl::ResourceExhaustedError("receive buffer limit reached");
  }
  size_t want = std::min(kReadChunk, max_buffer - buffer_.size());
  char* tail = buffer_.Prepare(want);
  asio::error_code ec;
  size_t n = 0;
  if (is_tls_) {
    std::tie(ec, n) = co_await tls_.async_read_some(asio::buffer(tail, want), kNoThrow);
  } else {
    // Asio's own read tries the socket at once unless its last read drained it; a read of our
    // own first and then a wait would cost an epoll_ctl per wait (measured).
    std::tie(ec, n) = co_await socket().async_read_some(asio::buffer(tail, want), kNoThrow);
  }
  buffer_.Commit(n);
  if (ec) co_return FromError(ec, "read");
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Stream::Write(absl::string_view data) {
  asio::error_code ec;
  if (!is_tls_ && !data.empty()) {
    // Plaintext: what the socket takes now is written without a trip through the event loop.
    size_t n = socket().write_some(asio::buffer(data.data(), data.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      n = 0;
      ec.clear();
    }
    if (ec) co_return FromError(ec, "write");
    if (n == data.size()) co_return absl::OkStatus();
    data.remove_prefix(n);
  }
  if (is_tls_) {
    std::tie(ec, std::ignore) =
        co_await asio::async_write(tls_, asio::buffer(data.data(), data.size()), kNoThrow);
  } else {
    std::tie(ec, std::ignore) =
        co_await asio::async_write(socket(), asio::buffer(data.data(), data.size()), kNoThrow);
  }
  if (ec) co_return FromError(ec, "write");
  co_return absl::OkStatus();
}

asio::awaitable<absl::StatusOr<char>> Stream::PeekByte() {
  char c = 0;
  auto [ec, n] = co_await socket().async_receive(asio::buffer(&c, 1),
                                                 asio::socket_base::message_peek, kNoThrow);
  if (ec) co_return FromError(ec, "read");
  if (n == 0) co_return absl::UnavailableError("read: connection closed");
  co_return c;
}

void Stream::Close() {
  asio::error_code ignored;
  socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
}

}  // namespace sluice::agent::net
