// Session limits: how many sessions each Connection may have open through this agent at once, in
// all and per caller (ConnectionLimits in proto/sluice/v1/policy.proto), so that one caller with
// one valid token cannot take every upstream connection slot.
//
// Protocol-neutral: a protocol's session asks for a ticket once the caller is authenticated and
// authorized and before it logs in upstream, keeps the ticket for as long as it lives, and
// refuses the login in its own protocol when there is none. One SessionLimiter is shared by every
// worker thread of the agent; it is thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent {

// A Connection's limits with the defaults filled in (0 in the policy = the default).
struct EffectiveLimits {
  uint32_t max_sessions = 0;
  uint32_t max_sessions_per_identity = 0;
};
EffectiveLimits ResolveLimits(const v1::ConnectionLimits& limits);

class SessionLimiter;

// One admitted session's place in the counts of its connection and caller; gives it back when
// destroyed (or Release()d). Movable, not copyable. A default-constructed ticket holds nothing.
class SessionTicket {
 public:
  SessionTicket() = default;
  SessionTicket(SessionTicket&& other) noexcept;
  SessionTicket& operator=(SessionTicket&& other) noexcept;
  SessionTicket(const SessionTicket&) = delete;
  SessionTicket& operator=(const SessionTicket&) = delete;
  ~SessionTicket();

  bool held() const { return limiter_ != nullptr; }
  // Gives the place back now; the ticket then holds nothing.
  void Release();

 private:
  friend class SessionLimiter;
  SessionTicket(SessionLimiter* limiter, std::string connection, std::string identity)
      : limiter_(limiter), connection_(std::move(connection)), identity_(std::move(identity)) {}

  SessionLimiter* limiter_ = nullptr;  // not owned; outlives every ticket it hands out
  std::string connection_;
  std::string identity_;  // the caller's key (issuer and subject)
};

// Counts the open sessions of each connection, in all and per caller (issuer + subject), and
// hands out tickets while both counts are under the connection's limits. The counts follow the
// tickets, not the policy: a new policy's limits apply to the next Acquire, and sessions already
// open are never ended by a lower limit. Must outlive every ticket it hands out.
class SessionLimiter {
 public:
  SessionLimiter() = default;
  SessionLimiter(const SessionLimiter&) = delete;
  SessionLimiter& operator=(const SessionLimiter&) = delete;

  // A ticket for one more session of `subject` (vouched for by `issuer`) on `connection`, or
  // ResourceExhausted when that would exceed a limit. The message, meant for the caller, names the
  // limit and its value and says what to do: `too many sessions for "alice" on connection "demo"
  // (limit 20 per caller on this agent); close one and try again`.
  absl::StatusOr<SessionTicket> Acquire(absl::string_view connection, absl::string_view issuer,
                                        absl::string_view subject,
                                        const v1::ConnectionLimits& limits);

  // Sessions open now on `connection`, in all and of one caller.
  uint32_t Sessions(absl::string_view connection) const;
  uint32_t SessionsOf(absl::string_view connection, absl::string_view issuer,
                      absl::string_view subject) const;

 private:
  friend class SessionTicket;
  void Release(const std::string& connection, const std::string& identity);

  struct Counts {
    uint32_t total = 0;
    absl::flat_hash_map<std::string, uint32_t> per_identity;  // only callers with sessions open
  };
  mutable absl::Mutex mu_;
  // Only connections with sessions open: the maps do not grow with every caller ever seen.
  absl::flat_hash_map<std::string, Counts> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent
