// Admission: who may open a session through this agent, and on what, for any protocol. The
// protocol adapter reads what its wire gives and asks, in this order (each step a Refuse of its
// kind, with the message the caller sees, or on to the next; no wire bytes here):
//
//   CheckTransport  plaintext on a listener that requires TLS             tls_required
//   CheckAudit      the agent cannot record audit events now              audit_unavailable
//   Open            the connection asked for exists on this agent         unknown_connection
//                   (the policy in force is taken here, and kept for the session's life)
//   Admit           the caller's token verifies against the policy's      token_rejected
//                   issuers; an access rule lets the caller use the       no_access_rule
//                   connection; a place under its session limits;         session_limit
//                   the credentials the agent logs in upstream with       upstream_unavailable
//
// The steps are separate because wires interleave them with their own exchanges (PostgreSQL asks
// for the password only once the connection is known). One Admission per session, on its thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/auth/authorizer.h"
#include "agent/policy_holder.h"
#include "agent/session/decision.h"
#include "agent/session/limits.h"
#include "common/jwt.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::session {

// What the agent logs in upstream with (the caller never sees it).
struct Credentials {
  std::string username;
  std::string password;
};

// An admitted caller.
struct Admitted {
  jwt::Identity identity;
  Grant grant;           // the access rule's level (read: a read-only session)
  SessionTicket ticket;  // its place under the session limits: keep it for the session's life
  Credentials credentials;
};

class Admission {
 public:
  // `protocol`: the connections this adapter serves; `log_name` prefixes log lines ("postgres").
  // `limiter` may be null (no session limits).
  Admission(PolicyHolder* policy, SessionLimiter* limiter, v1::Protocol protocol,
            const char* log_name)
      : holder_(policy), limiter_(limiter), protocol_(protocol), log_name_(log_name) {}

  // Plaintext where TLS is required: refused.
  static std::optional<Refuse> CheckTransport(bool tls, bool plaintext_allowed);
  // The agent cannot record events (its event buffer or spool is full or failing): refused.
  static std::optional<Refuse> CheckAudit(bool events_full);
  // The connection named `name`, in the policy in force now (taken here and kept).
  std::optional<Refuse> Open(const std::string& name);
  // The caller's `token` at `now` (after Open); `peer` is for the logs.
  std::variant<Admitted, Refuse> Admit(absl::string_view token, absl::Time now,
                                       absl::string_view peer);

  // After Open: the connection, and the policy it belongs to (the session keeps both).
  const v1::Connection* connection() const { return connection_; }
  const std::shared_ptr<const AgentPolicy>& policy() const { return policy_; }
  // Once the token verified (also when Admit then refused): who the caller is.
  const jwt::Identity& identity() const { return identity_; }

 private:
  PolicyHolder* holder_;
  SessionLimiter* limiter_;
  v1::Protocol protocol_;
  const char* log_name_;
  std::string name_;  // the connection asked for
  std::shared_ptr<const AgentPolicy> policy_;
  const v1::Connection* connection_ = nullptr;  // in policy_
  jwt::Identity identity_;
};

}  // namespace sluice::agent::session
