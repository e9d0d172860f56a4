// The agent's PostgreSQL port: one acceptor, one event loop (asio::io_context) per worker thread,
// each accepted connection confined to one loop for its whole life, so a session needs no locks.
// Which loop a connection gets: worker_placement.h.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/policy_holder.h"
#include "agent/postgres/cancel_registry.h"
#include "agent/approvals/broker.h"
#include "agent/postgres/session.h"
#include "agent/postgres/worker_placement.h"

namespace sluice::agent::postgres {

struct ListenerOptions {
  std::string listen = "127.0.0.1:6432";  // host:port; port 0 = any free port
  std::string tls_cert_file;              // PEM chain; empty = no TLS
  std::string tls_key_file;
  bool allow_plaintext = false;
  int workers = 2;
  // Pin the workers to the CPUs the agent may run on when there is one worker per CPU, and give
  // each connection to the worker on the CPU it arrives on (agent/postgres/worker_placement.h).
  bool cpu_affinity = true;
  std::chrono::steady_clock::duration login_timeout = std::chrono::seconds(30);
  wire::postgres::DecodeLimits limits;
  RecordingLimits recording;
  InflightTable* inflight = nullptr;  // the spool's in-flight table (agent/audit/inflight.h); null = none
  SessionLimiter* limiter = nullptr;  // agent/session/limits.h, outlives the listener; null = none
};

class Listener {
 public:
  Listener(ListenerOptions options, PolicyHolder* policy, EventSink* events, ApprovalBroker* approvals = nullptr);
  ~Listener();

  // Binds and starts the worker threads. Returns the bound port.
  absl::StatusOr<int> Start();
  void Stop();
  size_t active_cancel_keys() const { return cancels_.size(); }

 private:
  asio::awaitable<void> AcceptLoop();

  ListenerOptions options_;
  PolicyHolder* policy_;
  EventSink* events_;
  ApprovalBroker* approvals_;
  SessionConfig config_;
  CancelRegistry cancels_;
  asio::ssl::context tls_{asio::ssl::context::tls_server};
  // Set by Start, before the acceptor runs; declared before the loops so that sessions the loops
  // still hold when they are destroyed never outlive it.
  std::unique_ptr<WorkerPlacement> placement_;
  std::vector<std::unique_ptr<asio::io_context>> loops_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
};

}  // namespace sluice::agent::postgres
