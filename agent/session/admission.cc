#include "agent/session/admission.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/policy/validation.h"

namespace sluice::agent::session {
namespace {

using audit::RefusalKind;

Refuse Refused(RefusalKind kind, std::string message, std::string detail = "") {
  Refuse r;
  r.kind = kind;
  r.message = std::move(message);
  r.detail = std::move(detail);
  return r;
}

}  // namespace

std::optional<Refuse> Admission::CheckTransport(bool tls, bool plaintext_allowed) {
  if (tls || plaintext_allowed) return std::nullopt;
  return Refused(RefusalKind::kTlsRequired, "Sluice: this listener requires TLS");
}

std::optional<Refuse> Admission::CheckAudit(bool events_full) {
  if (!events_full) return std::nullopt;
  return Refused(
      RefusalKind::kAuditUnavailable,
      "Sluice: the agent cannot record audit events now (its buffer or spool is full, or the spool "
      "cannot be written); try again later");
}

std::optional<Refuse> Admission::Open(const std::string& name) {
  name_ = name;
  policy_ = holder_->Get();
  connection_ = policy_ ? policy_->FindConnection(name, protocol_) : nullptr;
  if (connection_ != nullptr) return std::nullopt;
  return Refused(RefusalKind::kUnknownConnection,
                 absl::StrCat("Sluice: connection \"", name, "\" does not exist on this agent"));
}

std::variant<Admitted, Refuse> Admission::Admit(absl::string_view token, absl::Time now,
                                                absl::string_view peer) {
  auto identity = policy_->verifier->Verify(token, now);
  if (!identity.ok()) {
    LogInfo(log_name_, " auth refused for ", peer, " on ", name_, ": ",
            identity.status().message());
    return Refused(RefusalKind::kTokenRejected,
                   absl::StrCat("Sluice: token rejected: ", identity.status().message()),
                   std::string(identity.status().message()));
  }
  identity_ = *identity;
  Admitted admitted;
  Caller caller{identity->issuer, identity->subject, identity->groups};
  auto grant = Authorize(policy_->snapshot, *connection_, caller);
  if (!grant) {
    LogInfo(log_name_, " access refused: ", identity->subject, " on ", name_);
    return Refused(RefusalKind::kNoAccessRule,
                   absl::StrCat("Sluice: no access rule lets \"", identity->subject,
                                "\" use connection \"", name_, "\""));
  }
  admitted.grant = *std::move(grant);
  // A place among the connection's sessions on this agent (ConnectionLimits), held until the
  // session ends, so that one caller cannot take every upstream connection slot.
  if (limiter_ != nullptr) {
    auto ticket = limiter_->Acquire(connection_->name(), identity->issuer, identity->subject,
                                    connection_->limits());
    if (!ticket.ok()) {
      LogInfo(log_name_, " session refused for ", peer, ": ", ticket.status().message());
      return Refused(RefusalKind::kSessionLimit,
                     absl::StrCat("Sluice: ", ticket.status().message()));
    }
    admitted.ticket = *std::move(ticket);
  }
  auto secret = policy::ResolvePassword(connection_->credentials());
  if (!secret.ok()) {
    // The caller learns only that the password is missing here; the log says which one.
    LogError("connection ", name_, ": ", secret.status().message());
    return Refused(RefusalKind::kUpstreamUnavailable,
                   "Sluice: the connection's password is not available on this agent");
  }
  admitted.credentials = Credentials{connection_->credentials().username(), *std::move(secret)};
  admitted.identity = *std::move(identity);
  return admitted;
}

}  // namespace sluice::agent::session
