// The agent's MySQL port: a net::Listener (agent/net/listener.h) on the agent's shared worker
// pool whose sessions are MySQL sessions (session.h), with the port's TLS context.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/approvals/broker.h"
#include "agent/mysql/session.h"
#include "agent/net/listener.h"
#include "agent/net/worker_pool.h"
#include "agent/policy_holder.h"

namespace sluice::agent::mysql {

struct ListenerOptions {
  std::string listen = "127.0.0.1:3307";  // host:port; port 0 = any free port
  std::string tls_cert_file;              // PEM chain; empty = no TLS
  std::string tls_key_file;
  bool allow_plaintext = false;
  std::chrono::steady_clock::duration login_timeout = std::chrono::seconds(30);
  wire::mysql::DecodeLimits limits;
  session::RecordingLimits recording;
  InflightTable* inflight = nullptr;  // the spool's in-flight table; null = none
  SessionLimiter* limiter = nullptr;  // outlives the pool; null = none
};

class Listener {
 public:
  // `policy`, `events`, `approvals` and what `options` points to outlive `pool`.
  Listener(ListenerOptions options, net::WorkerPool* pool, PolicyHolder* policy, EventSink* events,
           ApprovalBroker* approvals = nullptr);
  ~Listener();

  // Loads the TLS certificate, binds and starts accepting. Returns the bound port.
  absl::StatusOr<int> Start();
  // Stops accepting; the sessions end when the pool stops.
  void Stop();

  // What every session of the port shares: kept alive by each session until it ends.
  struct Shared;

 private:
  ListenerOptions options_;
  std::shared_ptr<Shared> shared_;
  net::Listener listener_;
};

}  // namespace sluice::agent::mysql
