#include "agent/gcs/upload_sessions.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::agent::gcs {

void UploadSessions::DropExpired(absl::Time now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = it->second.expires <= now ? sessions_.erase(it) : std::next(it);
  }
}

absl::StatusOr<std::string> UploadSessions::Open(UploadSession s, absl::Time now) {
  absl::MutexLock lock(&mu_);
  DropExpired(now);
  if (sessions_.size() >= max_sessions_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the agent holds ", max_sessions_, " open resumable uploads, its limit; try again later"));
  }
  const size_t mine =
      static_cast<size_t>(std::count_if(sessions_.begin(), sessions_.end(), [&](const auto& entry) {
        return entry.second.issuer == s.issuer && entry.second.subject == s.subject;
      }));
  if (mine >= max_per_caller_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("you have ", max_per_caller_,
                     " open resumable uploads, the limit per caller: finish or cancel one first"));
  }
  s.expires = now + ttl_;
  std::string id = RandomHex(16);
  sessions_.emplace(id, std::move(s));
  return id;
}

std::optional<UploadSession> UploadSessions::Find(const std::string& id,
                                                  const std::string& connection,
                                                  const std::string& bucket,
                                                  const std::string& issuer,
                                                  const std::string& subject, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.expires <= now) return std::nullopt;
  const UploadSession& s = it->second;
  if (s.connection != connection || s.bucket != bucket || s.issuer != issuer ||
      s.subject != subject) {
    return std::nullopt;
  }
  return s;
}

bool UploadSessions::OwnedByAnother(const std::string& id, const std::string& issuer,
                                    const std::string& subject, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  return it != sessions_.end() && it->second.expires > now &&
         (it->second.issuer != issuer || it->second.subject != subject);
}

void UploadSessions::Close(const std::string& id) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(id);
}

size_t UploadSessions::size() {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

}  // namespace sluice::agent::gcs
