#include "agent/agent_metrics.h"

#include <algorithm>

#include "common/clock.h"

namespace sluice::agent {

using metrics::ExpositionWriter;
using metrics::Type;

void AddAgentMetrics(metrics::Registry* registry, const ControlClient* client,
                     const EventSink* events, const ApprovalBroker* approvals) {
  registry->AddCollector([client, events, approvals](ExpositionWriter& out) {
    const ControlClient::LinkState link = client->link_state();
    out.Family("sluice_agent_snapshot_applied_version",
               "Version of the policy snapshot this agent enforces (0: none yet).", Type::kGauge);
    out.Sample("sluice_agent_snapshot_applied_version", {}, link.applied_version);
    out.Family("sluice_agent_control_plane_connected",
               "1 while the stream to the control plane is up (a snapshot came on it).",
               Type::kGauge);
    out.Sample("sluice_agent_control_plane_connected", {}, link.connected ? 1 : 0);
    out.Family("sluice_agent_control_plane_reconnects_total",
               "Times the stream to the control plane ended and was dialled again.",
               Type::kCounter);
    out.Sample("sluice_agent_control_plane_reconnects_total", {}, link.reconnects);
    out.Family("sluice_agent_approvals_pending",
               "Statements held in their sessions now, waiting for approvers.", Type::kGauge);
    out.Sample("sluice_agent_approvals_pending", {},
               static_cast<uint64_t>(approvals != nullptr ? approvals->held() : 0));

    const EventSink::Stats st = events->stats();
    out.Family("sluice_agent_audit_events_total", "Audit events emitted by this process.",
               Type::kCounter);
    out.Sample("sluice_agent_audit_events_total", {}, st.emitted);
    out.Family("sluice_agent_audit_events_unacknowledged",
               "Audit events the control plane has not acknowledged yet (queued and in flight).",
               Type::kGauge);
    out.Sample("sluice_agent_audit_events_unacknowledged", {},
               static_cast<uint64_t>(st.queued_events + st.in_flight_events));
    out.Family("sluice_agent_audit_buffer_bytes",
               "Memory held by audit events not yet acknowledged (evicted ones are on disk only).",
               Type::kGauge);
    out.Sample("sluice_agent_audit_buffer_bytes", {}, static_cast<uint64_t>(st.bytes));
    out.Family("sluice_agent_audit_spool_bytes",
               "Bytes of the on-disk audit spool (events kept until acknowledged).", Type::kGauge);
    out.Sample("sluice_agent_audit_spool_bytes", {}, static_cast<uint64_t>(st.spool_bytes));
    out.Family("sluice_agent_audit_spool_segments", "Segment files of the on-disk audit spool.",
               Type::kGauge);
    out.Sample("sluice_agent_audit_spool_segments", {}, static_cast<uint64_t>(st.spool_segments));
    out.Family("sluice_agent_audit_delivery_lag_seconds",
               "Age of the oldest audit event the control plane has not acknowledged (0 when none "
               "waits).",
               Type::kGauge);
    const int64_t lag_ms =
        st.oldest_unacked_ms > 0 ? std::max<int64_t>(0, NowUnixMs() - st.oldest_unacked_ms) : 0;
    out.Sample("sluice_agent_audit_delivery_lag_seconds", {}, static_cast<double>(lag_ms) / 1000.0);
    out.Family("sluice_agent_audit_refusing_sessions",
               "1 while new sessions are refused because audit events cannot be recorded (the "
               "buffer or spool is full, or the spool cannot be written).",
               Type::kGauge);
    out.Sample("sluice_agent_audit_refusing_sessions", {}, st.refusing.empty() ? 0 : 1);
  });
}

}  // namespace sluice::agent
