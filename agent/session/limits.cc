#include "agent/session/limits.h"

#include "absl/strings/str_cat.h"
#include "common/policy/validation.h"

namespace sluice::agent {
namespace {

// Issuer and subject in one key that no other pair gives (the issuer's length goes first: either
// part may hold any character, a separator included).
std::string IdentityKey(absl::string_view issuer, absl::string_view subject) {
  return absl::StrCat(issuer.size(), ":", issuer, subject);
}

}  // namespace

EffectiveLimits ResolveLimits(const v1::ConnectionLimits& limits) {
  EffectiveLimits out;
  out.max_sessions =
      limits.max_sessions() == 0 ? policy::kDefaultMaxSessions : limits.max_sessions();
  out.max_sessions_per_identity = limits.max_sessions_per_identity() == 0
                                      ? policy::kDefaultMaxSessionsPerIdentity
                                      : limits.max_sessions_per_identity();
  return out;
}

SessionTicket::SessionTicket(SessionTicket&& other) noexcept
    : limiter_(std::exchange(other.limiter_, nullptr)),
      connection_(std::move(other.connection_)),
      identity_(std::move(other.identity_)) {}

SessionTicket& SessionTicket::operator=(SessionTicket&& other) noexcept {
  if (this != &other) {
    Release();
    limiter_ = std::exchange(other.limiter_, nullptr);
    connection_ = std::move(other.connection_);
    identity_ = std::move(other.identity_);
  }
  return *this;
}

SessionTicket::~SessionTicket() { Release(); }

void SessionTicket::Release() {
  if (limiter_ == nullptr) return;
  std::exchange(limiter_, nullptr)->Release(connection_, identity_);
}

absl::StatusOr<SessionTicket> SessionLimiter::Acquire(absl::string_view connection,
                                                      absl::string_view issuer,
                                                      absl::string_view subject,
                                                      const v1::ConnectionLimits& limits) {
  const EffectiveLimits max = ResolveLimits(limits);
  std::string identity = IdentityKey(issuer, subject);
  absl::MutexLock lock(&mu_);
  // Looked up without inserting: a refusal leaves no entry behind.
  auto conn = connections_.find(connection);
  uint32_t total = 0, mine = 0;
  if (conn != connections_.end()) {
    total = conn->second.total;
    if (auto it = conn->second.per_identity.find(identity); it != conn->second.per_identity.end())
      mine = it->second;
  }
  if (mine >= max.max_sessions_per_identity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many sessions for \"", subject, "\" on connection \"", connection, "\" (limit ",
        max.max_sessions_per_identity, " per caller on this agent); close one and try again"));
  }
  if (total >= max.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many sessions on connection \"", connection, "\" (limit ", max.max_sessions,
        " for all callers together on this agent); try again later"));
  }
  Counts& counts = conn != connections_.end() ? conn->second : connections_[connection];
  ++counts.total;
  ++counts.per_identity[identity];
  return SessionTicket(this, std::string(connection), std::move(identity));
}

void SessionLimiter::Release(const std::string& connection, const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto conn = connections_.find(connection);
  if (conn == connections_.end()) return;  // cannot happen: every ticket was counted
  auto it = conn->second.per_identity.find(identity);
  if (it != conn->second.per_identity.end() && --it->second == 0)
    conn->second.per_identity.erase(it);
  if (--conn->second.total == 0) connections_.erase(conn);
}

uint32_t SessionLimiter::Sessions(absl::string_view connection) const {
  absl::MutexLock lock(&mu_);
  auto conn = connections_.find(connection);
  return conn == connections_.end() ? 0 : conn->second.total;
}

uint32_t SessionLimiter::SessionsOf(absl::string_view connection, absl::string_view issuer,
                                    absl::string_view subject) const {
  absl::MutexLock lock(&mu_);
  auto conn = connections_.find(connection);
  if (conn == connections_.end()) return 0;
  auto it = conn->second.per_identity.find(IdentityKey(issuer, subject));
  return it == conn->second.per_identity.end() ? 0 : it->second;
}

}  // namespace sluice::agent
