#include "agent/session/gate.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sluice::agent::session {

using audit::RefusalKind;

Decision StatementGate::Decide(const StatementSummary& s) const {
  if (!s.unsafe.empty()) {
    // Lifting read-only is a write on a read grant; anything else changes a pinned setting.
    return Refusal(s.unsafe_lifts_read_only ? RefusalKind::kReadOnly : RefusalKind::kUnsafeSetting,
                   s.unsafe);
  }
  if (read_only() && s.cls > StatementClass::kOther) return ReadOnly(s);
  if (!s.unmaskable.empty()) {
    return Refusal(RefusalKind::kUnmaskable,
                   absl::StrCat("results are masked here, and ", s.unmaskable));
  }
  if (s.guardrail == nullptr) return Allow{};
  const GuardrailDecision& d = *s.guardrail;
  switch (d.action) {
    case GuardrailDecision::kAllow:
      return Allow{};
    case GuardrailDecision::kAlert:
      LogGuardrail(d, audit::AlertEvent::kDecision);
      return Alert{d};
    case GuardrailDecision::kRequireApproval:
      // Held: the adapter asks for a decision before the statement goes anywhere.
      if (can_hold_ && s.holdable) return Hold{d};
      break;
    case GuardrailDecision::kBlock:
      break;
  }
  return GuardrailRefusal(d);
}

Refuse StatementGate::Refusal(RefusalKind kind, absl::string_view problem) const {
  LogInfo("refused for ", subject_, " on ", connection_, ": ", problem);
  Refuse r;
  r.kind = kind;
  r.message =
      absl::StrCat("Sluice: statement refused on connection \"", connection_, "\": ", problem);
  return r;
}

Refuse StatementGate::ReadOnly(const StatementSummary& s) const {
  const char* what = "cannot be classified";
  switch (s.cls) {
    case StatementClass::kWrite:
      what = "writes data";
      break;
    case StatementClass::kDdl:
      what = "changes the schema";
      break;
    case StatementClass::kDcl:
      what = "changes privileges";
      break;
    default:
      break;
  }
  LogInfo("refused for ", subject_, " on ", connection_, ": ", s.kind, " on a read grant");
  Refuse r;
  r.kind = RefusalKind::kReadOnly;
  r.message = absl::StrCat("Sluice: your access to connection \"", connection_,
                           "\" is read-only (rule ", grant_.rule, "); this statement ", what, " (",
                           s.kind, s.parse_error.empty() ? "" : ": ", s.parse_error, ")");
  return r;
}

Refuse StatementGate::GuardrailRefusal(const GuardrailDecision& d) const {
  const bool block = d.action == GuardrailDecision::kBlock;
  const std::string on = d.target.empty() ? "" : " on " + d.target;
  Refuse r;
  r.guardrail = d;
  if (block) {
    r.kind = RefusalKind::kGuardrailBlocked;
    r.decision = audit::StatementEvent::kBlocked;
    r.message = absl::StrCat("Sluice: statement blocked by guardrail \"", d.guardrail,
                             "\": ", d.match, on, " (", d.statement_kind, ")");
  } else {
    // Refused for want of an approval: the statement cannot wait for one here.
    r.kind = RefusalKind::kApprovalUnavailable;
    r.decision = audit::StatementEvent::kDenied;
    r.message = absl::StrCat("Sluice: statement needs approval under guardrail \"", d.guardrail,
                             "\" (", d.match, on, ", ApprovalPolicy \"", d.approval,
                             "\"), and this agent cannot hold statements, so it is ", "refused");
  }
  LogGuardrail(d, r.decision);
  return r;
}

void StatementGate::LogGuardrail(const GuardrailDecision& d, const char* decision) const {
  LogInfo("guardrail ", d.guardrail, " ", decision, " ", d.match, " for ", subject_, " on ",
          connection_);
}

}  // namespace sluice::agent::session
