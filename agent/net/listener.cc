#include "agent/net/listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <asio/experimental/as_tuple.hpp>
#include <chrono>
#include <future>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "common/log.h"

namespace sluice::agent::net {
namespace {

// Moves an accepted socket to another loop (the fd is re-registered with that loop's reactor);
// on failure the connection is closed.
asio::error_code MoveToLoop(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to) {
  asio::error_code ec;
  auto protocol = from.local_endpoint(ec).protocol();
  if (ec) return ec;
  int fd = from.release(ec);
  if (ec) return ec;
  to.assign(protocol, fd, ec);
  if (ec) ::close(fd);
  return ec;
}

}  // namespace

struct Listener::State {
  std::string protocol;
  WorkerPool* pool;
  SessionFactory factory;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
};

namespace {

asio::awaitable<void> AcceptLoop(std::shared_ptr<Listener::State> state);

}  // namespace

Listener::Listener(std::string protocol, WorkerPool* pool, SessionFactory factory)
    : state_(
          std::make_shared<State>(State{std::move(protocol), pool, std::move(factory), nullptr})) {}

Listener::~Listener() { Stop(); }

absl::StatusOr<int> Listener::Start(const std::string& listen) {
  std::string host;
  int port = 0;
  if (absl::Status st = SplitHostPort(listen, &host, &port); !st.ok()) return st;
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat(state_->protocol, " listen address '", host, "': ", ec.message()));
  state_->acceptor = std::make_unique<asio::ip::tcp::acceptor>(state_->pool->loop(0));
  asio::ip::tcp::acceptor& acceptor = *state_->acceptor;
  asio::ip::tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen, ": ", ec.message()));
  const int bound = acceptor.local_endpoint().port();
  asio::co_spawn(state_->pool->loop(0), AcceptLoop(state_), asio::detached);
  return bound;
}

void Listener::Stop() {
  if (state_->acceptor == nullptr) return;
  if (state_->pool->size() == 0) {
    // The pool stopped first (a caller's mistake): its loop is gone, and with it what the
    // acceptor would need to be destroyed. Left as it is.
    LogError(state_->protocol, " listener stopped after the worker pool");
    (void)state_->acceptor.release();
    return;
  }
  // Closed and destroyed on its own loop, where the accept is pending (it completes there with
  // operation_aborted and the accept loop ends); waited for, unless that loop no longer runs.
  auto closed = std::make_shared<std::promise<void>>();
  std::future<void> done = closed->get_future();
  asio::post(state_->pool->loop(0), [state = state_, closed] {
    asio::error_code ignored;
    state->acceptor->close(ignored);
    state->acceptor.reset();
    closed->set_value();
  });
  if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    LogWarning(state_->protocol, " listener: its loop did not close the port within 5 s");
  }
}

namespace {

asio::awaitable<void> AcceptLoop(std::shared_ptr<Listener::State> state) {
  WorkerPool* pool = state->pool;
  while (state->acceptor != nullptr && state->acceptor->is_open()) {
    auto [ec, accepted] =
        co_await state->acceptor->async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      LogWarning(state->protocol, " accept failed: ", ec.message());
      continue;
    }
    int cpu = -1;
    socklen_t len = sizeof(cpu);
    if (getsockopt(accepted.native_handle(), SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) != 0)
      cpu = -1;
    const size_t worker = pool->Pick(cpu);
    // The socket moves to its worker's loop (accepted on the acceptor's, which is worker 0's).
    asio::ip::tcp::socket socket(pool->loop(worker));
    if (asio::error_code move_ec = MoveToLoop(accepted, socket)) {
      LogWarning(state->protocol, " connection dropped: ", move_ec.message());
      pool->Release(worker);
      continue;
    }
    asio::co_spawn(pool->loop(worker), state->factory(std::move(socket)),
                   [pool, worker, protocol = state->protocol](std::exception_ptr e) {
                     pool->Release(worker);
                     // Our code does not throw; this would be an allocation failure inside Asio or
                     // OpenSSL.
                     if (e) LogError("a ", protocol, " session ended by an unexpected exception");
                   });
  }
}

}  // namespace
}  // namespace sluice::agent::net
