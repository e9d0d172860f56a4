#include "common/audit/legacy_refusal.h"

#include "absl/strings/match.h"

namespace sluice::audit::legacy {

// The session refusals of the old PostgreSQL agent, in the order the evidence report of that time
// tried them (a message wins over a SQLSTATE where one SQLSTATE had several meanings: 28000).
SessionRefusal DecodeSessionRefusal(absl::string_view refusal, absl::string_view sqlstate,
                                    absl::string_view reason) {
  SessionRefusal out;
  if (!refusal.empty()) {
    out.kind = RefusalKindFromName(refusal);
  } else if (sqlstate == "28P01") {
    out.kind = RefusalKind::kTokenRejected;
    constexpr absl::string_view kPrefix = "Sluice: token rejected: ";
    out.detail =
        std::string(absl::StartsWith(reason, kPrefix) ? reason.substr(kPrefix.size()) : reason);
  } else if (absl::StrContains(reason, "no access rule")) {
    out.kind = RefusalKind::kNoAccessRule;
  } else if (absl::StrContains(reason, "requires TLS")) {
    out.kind = RefusalKind::kTlsRequired;
  } else if (sqlstate == "28000" && absl::StrContains(reason, "no user name given")) {
    out.kind = RefusalKind::kProtocolError;  // the startup message lacked its user
  } else if (sqlstate == "3D000") {
    out.kind = RefusalKind::kUnknownConnection;
  } else if (sqlstate == "53300") {
    out.kind = RefusalKind::kAuditUnavailable;  // a session limit said so in `refusal`
  } else if (sqlstate == "08006") {
    out.kind = RefusalKind::kUpstreamUnavailable;
  } else if (sqlstate == "0A000") {
    out.kind = RefusalKind::kNotSupported;  // replication
  } else if (sqlstate == "08P01") {
    out.kind = RefusalKind::kProtocolError;
  } else if (sqlstate == "22023") {
    out.kind = RefusalKind::kUnsafeSetting;  // startup options, client_encoding
  }
  return out;
}

RefusalKind DecodeStatementRefusal(absl::string_view decision, absl::string_view sqlstate,
                                   absl::string_view reason) {
  if (decision.empty()) return RefusalKind::kNone;
  if (decision == "blocked") return RefusalKind::kGuardrailBlocked;
  // Denied at the statement itself: it needed an approval the agent could not hold.
  if (decision == "denied") return RefusalKind::kApprovalUnavailable;
  if (decision != "refused") return RefusalKind::kOther;
  if (sqlstate == "25006") return RefusalKind::kReadOnly;  // a write, or lifting read-only
  if (sqlstate == "42883") return RefusalKind::kUnknownFunction;
  if (sqlstate == "58000")
    return RefusalKind::kUpstreamUnavailable;  // the function's lookup failed
  if (sqlstate == "42501") {
    // "... where results are masked: ...", "results are masked here, and ...", "results are
    // masked on this connection, and a FunctionCall's result cannot be masked ..."
    if (absl::StrContains(reason, "results are masked")) return RefusalKind::kUnmaskable;
    if (absl::StrContains(reason, "is not accepted (the agent cannot see"))
      return RefusalKind::kNotSupported;
    return RefusalKind::kUnsafeSetting;  // the other refusals with 42501: pinned settings
  }
  return RefusalKind::kOther;
}

RefusalKind DecodeApprovalRefusal(absl::string_view decision, absl::string_view reason) {
  if (decision.empty() || decision == "approved") return RefusalKind::kNone;
  if (decision == "cancelled") return RefusalKind::kCancelled;
  if (decision == "unavailable") return RefusalKind::kApprovalUnavailable;
  if (decision != "denied") return RefusalKind::kOther;
  // The agent's own deadline and the control plane's expiry both said so.
  if (absl::StartsWith(reason, "no decision within")) return RefusalKind::kApprovalTimedOut;
  return RefusalKind::kApprovalDenied;
}

}  // namespace sluice::audit::legacy
