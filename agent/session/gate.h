// The statement gate: what happens to one statement of a session, decided from what the
// protocol's SQL analysis says of it (a StatementSummary: no parser here) and the session's grant,
// in this order — the first that applies decides:
//
//   1. the analysis found the statement unsafe whatever the grant (it would change a setting the
//      agent pins, or the agent cannot read it as the server will): Refuse, unsafe_setting — or
//      read_only when it would lift a read grant's read-only session;
//   2. a read grant, and the statement does more than read: Refuse, read_only;
//   3. results are masked, and this statement's could not be kept masked: Refuse, unmaskable;
//   4. the guardrails' decision: Allow; Alert; require_approval: Hold, or Refuse
//      (approval_unavailable, decision "denied") when the statement cannot be held; block: Refuse
//      (guardrail_blocked, decision "blocked").
//
// Pure but for a log line per refusal and guardrail hit: the caller records the decision's event
// (SessionAudit) and spells a refusal on its wire. The PostgreSQL adapter skips the gate for a
// statement nothing could refuse (a write grant, no guardrails, no masking, no setting named):
// the gate is not on the hot path of such sessions.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "agent/auth/authorizer.h"
#include "agent/session/decision.h"

namespace sluice::agent::session {

// What the protocol's analysis says of one statement. Views: valid for the Decide call.
struct StatementSummary {
  StatementClass cls = StatementClass::kUnknown;
  absl::string_view kind;         // the statement that decided `cls` ("DeleteStmt", "FunctionCall")
  absl::string_view parse_error;  // why it could not be classified
  // 1: why the agent cannot let it run as it is (empty: nothing); whether that lifts read-only.
  absl::string_view unsafe;
  bool unsafe_lifts_read_only = false;
  // 3: why its results could not be kept masked (empty: they can, or nothing is masked).
  absl::string_view unmaskable;
  // 4: the guardrails' decision (null: none applies).
  const GuardrailDecision* guardrail = nullptr;
  // Whether this request can be held for approval at all (false: a protocol message that cannot
  // wait, such as PostgreSQL's FunctionCall; its adapter words that refusal itself).
  bool holdable = true;
};

class StatementGate {
 public:
  StatementGate() = default;
  // `subject` and `connection`, for messages and logs; `can_hold`: this agent can hold
  // statements for approval (it has an approval broker).
  StatementGate(std::string connection, std::string subject, Grant grant, bool can_hold)
      : connection_(std::move(connection)),
        subject_(std::move(subject)),
        grant_(std::move(grant)),
        can_hold_(can_hold) {}

  bool read_only() const { return grant_.access == v1::ACCESS_READ; }
  const Grant& grant() const { return grant_; }

  Decision Decide(const StatementSummary& s) const;

  // The agent's own refusal of a statement, as every check words it: `Sluice: statement refused
  // on connection "<connection>": <problem>` (logged).
  Refuse Refusal(audit::RefusalKind kind, absl::string_view problem) const;
  // Step 2's refusal.
  Refuse ReadOnly(const StatementSummary& s) const;
  // Step 4's refusal: a guardrail blocks the statement, or requires an approval it cannot wait for.
  Refuse GuardrailRefusal(const GuardrailDecision& d) const;

 private:
  void LogGuardrail(const GuardrailDecision& d, const char* decision) const;

  std::string connection_;
  std::string subject_;
  Grant grant_;
  bool can_hold_ = false;
};

}  // namespace sluice::agent::session
