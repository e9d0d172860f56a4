#include "controlplane/service/metrics.h"

#include <algorithm>

namespace sluice::controlplane {

using metrics::ExpositionWriter;
using metrics::Type;

ControlPlaneMetrics::ControlPlaneMetrics(metrics::Registry* registry)
    : events_stored_(registry->AddCounter("sluice_audit_events_stored_total",
                                          "Audit events of each agent stored (committed) by the "
                                          "control plane.",
                                          {"agent"})),
      ingest_lag_(registry->AddGauge(
          "sluice_audit_ingest_lag_seconds",
          "Per agent: how old the oldest event of its last stored audit batch was when the batch "
          "was committed (by the agent's clock).",
          {"agent"})),
      approvals_pending_(registry
                             ->AddGauge("sluice_approvals_pending",
                                        "Approval requests waiting for approvers (counted up to "
                                        "1000, every half second).")
                             ->Get()) {}

ControlPlaneMetrics& ControlPlaneMetrics::Default() {
  static ControlPlaneMetrics* m = new ControlPlaneMetrics(&metrics::DefaultRegistry());
  return *m;
}

void ControlPlaneMetrics::BatchStored(const std::string& agent_id, size_t events, int64_t oldest_ms,
                                      int64_t now_ms) {
  events_stored_->Get({agent_id})->Inc(events);
  if (oldest_ms > 0) {
    ingest_lag_->Get({agent_id})
        ->Set(static_cast<double>(std::max<int64_t>(0, now_ms - oldest_ms)) / 1000.0);
  }
}

void AddControlPlaneCollector(metrics::Registry* registry, const AgentHub* hub,
                              const GuardedStore* store) {
  registry->AddCollector([hub, store](ExpositionWriter& out) {
    out.Family("sluice_policy_version", "Current global policy version.", Type::kGauge);
    out.Sample("sluice_policy_version", {}, hub->version());
    out.Family("sluice_agents_connected", "Agents with a live stream.", Type::kGauge);
    out.Sample("sluice_agents_connected", {}, static_cast<uint64_t>(hub->connected_count()));
    out.Family("sluice_store_refusing_writes",
               "1 while the control plane's store refuses writes because its data directory is "
               "full, read-only or failing: agents' audit batches are not acknowledged (the agents "
               "keep them) and changes are refused.",
               Type::kGauge);
    out.Sample("sluice_store_refusing_writes", {}, store->WriteFault() ? 1 : 0);
    out.Family("sluice_store_write_faults_total",
               "Times the store started refusing writes for a disk fault.", Type::kCounter);
    out.Sample("sluice_store_write_faults_total", {}, store->faults());
    out.Family("sluice_store_writes_refused_total",
               "Writes the store refused for a disk fault (audit batches, changes, records).",
               Type::kCounter);
    out.Sample("sluice_store_writes_refused_total", {}, store->refused_writes());
    out.Family("sluice_store_audit_records_lost_total",
               "Control-plane audit records (admin calls, approvals, agents' refusals) that could "
               "not be stored; each is logged.",
               Type::kCounter);
    out.Sample("sluice_store_audit_records_lost_total", {}, store->audit_records_lost());
    out.Family("sluice_agents_audit_refusing",
               "Connected agents that refuse new sessions because they cannot record audit events "
               "(their spool cannot be written or is full).",
               Type::kGauge);
    out.Sample("sluice_agents_audit_refusing", {},
               static_cast<uint64_t>(hub->audit_refusing_count()));

    const auto live = hub->LiveStatus();
    out.Family("sluice_agent_audit_ok",
               "Per connected agent: 1 while it records audit events, 0 while it refuses new "
               "sessions because it cannot.",
               Type::kGauge);
    for (const auto& [id, status] : live) {
      const ExpositionWriter::Label labels[] = {{"agent", id}};
      out.Sample("sluice_agent_audit_ok", labels, status.audit_error.empty() ? 1 : 0);
    }
    out.Family("sluice_agent_snapshot_version",
               "Per connected agent: the policy snapshot version last sent to it (state=\"sent\") "
               "and the one it acknowledged applying on its stream (state=\"applied\"; 0 until "
               "it does).",
               Type::kGauge);
    for (const auto& [id, status] : live) {
      const ExpositionWriter::Label sent[] = {{"agent", id}, {"state", "sent"}};
      const ExpositionWriter::Label applied[] = {{"agent", id}, {"state", "applied"}};
      out.Sample("sluice_agent_snapshot_version", sent, status.desired_version);
      out.Sample("sluice_agent_snapshot_version", applied, status.applied_version);
    }
  });
}

}  // namespace sluice::controlplane
