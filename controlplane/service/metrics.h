// The control plane's /metrics (common/metrics.h): the policy version, its agents (connected,
// the snapshot version each was sent and has applied, whether each records audit events), its
// store's state, approvals waiting for approvers, and the audit ingest (events stored per agent,
// and how old they were when stored). Agent ids (from enrollment) are the only labels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/metrics.h"
#include "controlplane/service/agent_hub.h"
#include "controlplane/store/guarded_store.h"

namespace sluice::controlplane {

// Updated where things happen: the ingest of agents' audit batches, the approvals' duties.
class ControlPlaneMetrics {
 public:
  explicit ControlPlaneMetrics(metrics::Registry* registry);
  ControlPlaneMetrics(const ControlPlaneMetrics&) = delete;
  ControlPlaneMetrics& operator=(const ControlPlaneMetrics&) = delete;
  // The process's, in metrics::DefaultRegistry().
  static ControlPlaneMetrics& Default();

  // An audit batch of `agent_id` was committed at `now_ms`: `events` events, the oldest emitted at
  // `oldest_ms` (the agent's clock; 0: unknown).
  void BatchStored(const std::string& agent_id, size_t events, int64_t oldest_ms, int64_t now_ms);
  // Approval requests waiting for approvers now.
  void SetApprovalsPending(size_t pending) {
    approvals_pending_->Set(static_cast<double>(pending));
  }

 private:
  metrics::Family<metrics::Counter>* events_stored_;
  metrics::Family<metrics::Gauge>* ingest_lag_;
  metrics::Gauge* approvals_pending_;
};

// Adds to `registry` what is read at scrape time from `hub` and `store` (not owned; they outlive
// the registry's use): the families the control plane always served (sluice_policy_version,
// sluice_agents_connected, sluice_store_*, sluice_agents_audit_refusing, sluice_agent_audit_ok)
// and each connected agent's snapshot versions.
void AddControlPlaneCollector(metrics::Registry* registry, const AgentHub* hub,
                              const GuardedStore* store);

}  // namespace sluice::controlplane
