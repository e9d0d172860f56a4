// A TCP port of the agent for one protocol: binds, accepts on the worker pool's first loop
// (agent/net/worker_pool.h) and runs each connection's session, made by the protocol's factory,
// on the worker the pool picks for it. The protocol brings only its session (and its TLS context,
// agent/net/tls.h); every listener shares the pool.
#pragma once

#include <asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/net/worker_pool.h"

namespace sluice::agent::net {

class Listener {
 public:
  // A connection's session; run on the connection's worker. It must own (or share) what it uses
  // beyond the objects that outlive the pool: the listener may be gone before the session ends.
  using SessionFactory = std::function<asio::awaitable<void>(asio::ip::tcp::socket)>;
  // `protocol` names the port in errors and logs ("PostgreSQL").
  Listener(std::string protocol, WorkerPool* pool, SessionFactory factory);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds `listen` (host:port; port 0 = any free port) and starts accepting. Returns the port.
  absl::StatusOr<int> Start(const std::string& listen);
  // Stops accepting (running sessions go on until the pool stops). Before the pool stops.
  void Stop();

  struct State;  // shared with the accept loop, which may end after the listener

 private:
  std::shared_ptr<State> state_;
};

}  // namespace sluice::agent::net
