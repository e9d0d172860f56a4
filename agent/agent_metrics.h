// The agent's own state on /metrics, read at scrape time (common/metrics.h): the policy snapshot
// it enforces, its link to the control plane, statements held for approval, and its audit
// pipeline (events not yet acknowledged by the control plane, the spool on disk, the delivery
// lag). The session core's counters are agent/session/metrics.h.
#pragma once

#include "agent/approvals/broker.h"
#include "agent/audit/event_sink.h"
#include "agent/control_client.h"
#include "common/metrics.h"

namespace sluice::agent {

// Adds a collector of these families to `registry`; the objects (not owned) outlive it.
// `approvals` may be null.
void AddAgentMetrics(metrics::Registry* registry, const ControlClient* client,
                     const EventSink* events, const ApprovalBroker* approvals);

}  // namespace sluice::agent
