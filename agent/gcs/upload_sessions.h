// The resumable upload sessions callers opened through the agent. Cloud Storage answers a
// resumable upload's start with a session URI — a capability: whoever holds it writes the object,
// as the service account. The agent keeps that URI and gives the caller its own id instead
// (`?uploadType=resumable&upload_id=<id>` on the agent), bound to the caller who started it, the
// Connection, the bucket and the object, and to the policy version it was decided under. Another
// caller's id, an unknown one and an expired one all look the same to the caller (404, as the
// service answers an unknown session).
//
// In memory only: an agent that restarts forgets its sessions, and their callers start again
// (clients do so on a 404). Bounded: at most `max_sessions` in all and `max_per_caller` per caller;
// each lives `ttl` from its start (Cloud Storage keeps a session a week).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/session/statement_facts.h"

namespace sluice::agent::gcs {

struct UploadSession {
  std::string upstream_target;  // the service's session URI: path and query on its host
  std::string connection;
  std::string issuer;
  std::string subject;
  std::string bucket;
  std::string object;
  session::StatementClass cls = session::StatementClass::kWrite;
  uint64_t policy_version = 0;  // the version its start was decided under
  absl::Time expires;
};

class UploadSessions {
 public:
  explicit UploadSessions(size_t max_sessions = 4096, size_t max_per_caller = 64,
                          absl::Duration ttl = absl::Hours(24 * 7))
      : max_sessions_(max_sessions), max_per_caller_(max_per_caller), ttl_(ttl) {}

  // Keeps `s` (its `expires` set here) and returns its new id (128 random bits, hex); an error
  // when the table or the caller's share of it is full.
  absl::StatusOr<std::string> Open(UploadSession s, absl::Time now);
  // The session `id` names when it is `issuer`/`subject`'s, on `connection` and `bucket`, and
  // not expired; nullopt otherwise (the caller cannot tell which).
  std::optional<UploadSession> Find(const std::string& id, const std::string& connection,
                                    const std::string& bucket, const std::string& issuer,
                                    const std::string& subject, absl::Time now);
  // Whether `id` names a live session of another caller (for the event's refusal kind only).
  bool OwnedByAnother(const std::string& id, const std::string& issuer, const std::string& subject,
                      absl::Time now);
  void Close(const std::string& id);
  size_t size();

 private:
  void DropExpired(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_sessions_;
  const size_t max_per_caller_;
  const absl::Duration ttl_;
  absl::Mutex mu_;
  std::map<std::string, UploadSession> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent::gcs
