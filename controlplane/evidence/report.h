// The NIST SP 800-53 evidence report ("Evidence export" in docs/audit-and-evidence.md): for a
// time window, what the control plane's store shows per control — counts, the specific records,
// and the ids ("<agent>/<sequence>") of the agent events they rest on — with the audit chain's
// verification for the same window.
//
// Built from the store alone: the agents' events are read in the one pass that verifies the
// chain (Store::VerifyAudit), then the session index, approvals, the control plane's own audit
// records, resources and agents. Where the store does not hold what a control asks for, the
// control says so in `not_recorded`; nothing is estimated.
//
// The window is [from_ms, until_ms) on each record's own time (an agent event's time_unix_ms, an
// approval's creation, an audit record's time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "controlplane/store/store.h"

namespace sluice::controlplane::evidence {

struct ReportOptions {
  int64_t from_ms = 0;
  int64_t until_ms = 0;
  int64_t now_ms = 0;           // when the report is made ("generated_ms")
  size_t max_listed = 500;      // entries kept per evidence list; the rest are counted
  size_t max_event_ids = 1000;  // event ids kept per control; the rest are counted
};

// InvalidArgument when the window is empty or negative; store errors as they come.
absl::StatusOr<nlohmann::ordered_json> BuildReport(Store& store, const ReportOptions& options);

}  // namespace sluice::controlplane::evidence
