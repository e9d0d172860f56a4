// The session core's metrics (common/metrics.h), the same for every protocol: sessions by
// protocol, connection and outcome, statements by decision, approval outcomes, guardrail alerts,
// upstream errors and statement latency. SessionAudit, through which every protocol adapter
// records a session's life, updates them: it looks up its connection's series once, when the
// session starts, and each statement then costs a few relaxed atomic additions (no lock).
//
// Labels: `protocol` (postgres, mysql, gcs), `connection` (a Connection's name from the policy;
// empty for a session refused before its connection was known — the name a caller asked for is
// never a label), `outcome`, `decision`, `kind` (a RefusalKind's name): all bounded. Past
// kMaxConnections (protocol, connection) pairs, sessions share the connection "_other".
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/audit/events.h"
#include "common/metrics.h"

namespace sluice::agent::session {

class SessionMetrics {
 public:
  static constexpr size_t kMaxConnections = 512;

  // Registers the families in `registry` (which outlives this).
  explicit SessionMetrics(metrics::Registry* registry);
  SessionMetrics(const SessionMetrics&) = delete;
  SessionMetrics& operator=(const SessionMetrics&) = delete;
  // The process's, in metrics::DefaultRegistry().
  static SessionMetrics& Default();

  // One connection's series (of one protocol).
  struct Series {
    metrics::Counter* started;
    metrics::Gauge* active;
    metrics::Counter* closed;           // sessions_total{outcome="closed"}
    metrics::Counter* error;            // sessions_total{outcome="error"}
    metrics::Counter* session_refused;  // sessions_total{outcome="refused"}
    // statements_total by decision
    metrics::Counter* allowed;
    metrics::Counter* refused;
    metrics::Counter* blocked;
    metrics::Counter* denied;
    metrics::Counter* unavailable;
    metrics::Counter* cancelled;
    metrics::Counter* statement_errors;
    metrics::Counter* alerts;
    // approvals_total by outcome
    metrics::Counter* approved;
    metrics::Counter* approval_denied;
    metrics::Counter* approval_unavailable;
    metrics::Counter* approval_cancelled;
    metrics::Counter* upstream_errors;
    metrics::Histogram* duration;
  };
  // The series of `connection` on `protocol` (made on first use; the pointer stays valid).
  const Series* For(absl::string_view protocol, absl::string_view connection)
      ABSL_LOCKS_EXCLUDED(mu_);

  // A session refused at login (it never started): counted by protocol and kind, and in
  // sessions_total{outcome="refused"} under `connection` when the refusal came after the
  // connection was found (the name is then the policy's, not just what the caller asked for).
  void SessionRefused(absl::string_view protocol, absl::string_view connection,
                      audit::RefusalKind kind);
  // Whether a login refused with `kind` was refused after its connection was found (Admission:
  // Open, then Admit).
  static bool ConnectionKnown(audit::RefusalKind kind);

 private:
  metrics::Family<metrics::Counter>* sessions_started_;
  metrics::Family<metrics::Gauge>* sessions_active_;
  metrics::Family<metrics::Counter>* sessions_;
  metrics::Family<metrics::Counter>* refusals_;
  metrics::Family<metrics::Counter>* statements_;
  metrics::Family<metrics::Counter>* statement_errors_;
  metrics::Family<metrics::Counter>* alerts_;
  metrics::Family<metrics::Counter>* approvals_;
  metrics::Family<metrics::Counter>* upstream_errors_;
  metrics::Family<metrics::Histogram>* duration_;

  absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Series>> series_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent::session
