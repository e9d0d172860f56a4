#include "agent/gcs/bigquery_jobs.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sluice::agent::gcs {

std::string BigQueryJobs::Key(const std::string& connection, const std::string& project,
                              const std::string& job_id) {
  return absl::StrCat(connection, "\n", project, "\n", job_id);
}

void BigQueryJobs::DropOld(absl::Time now) {
  while (!order_.empty()) {
    auto it = jobs_.find(order_.front());
    if (it != jobs_.end() && it->second.expires > now && jobs_.size() < max_jobs_) break;
    if (it != jobs_.end()) jobs_.erase(it);
    order_.pop_front();
  }
}

bool BigQueryJobs::Bind(BigQueryJob job, absl::Time now) {
  const std::string key = Key(job.connection, job.project, job.job_id);
  absl::MutexLock lock(&mu_);
  DropOld(now);
  auto it = jobs_.find(key);
  if (it != jobs_.end()) {
    return it->second.issuer == job.issuer && it->second.subject == job.subject;
  }
  job.expires = now + ttl_;
  jobs_.emplace(key, std::move(job));
  order_.push_back(key);
  return true;
}

std::optional<BigQueryJob> BigQueryJobs::Find(const std::string& connection,
                                              const std::string& project, const std::string& job_id,
                                              const std::string& issuer, const std::string& subject,
                                              absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(Key(connection, project, job_id));
  if (it == jobs_.end() || it->second.expires <= now || it->second.issuer != issuer ||
      it->second.subject != subject) {
    return std::nullopt;
  }
  return it->second;
}

bool BigQueryJobs::OwnedByAnother(const std::string& connection, const std::string& project,
                                  const std::string& job_id, const std::string& issuer,
                                  const std::string& subject, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(Key(connection, project, job_id));
  return it != jobs_.end() && it->second.expires > now &&
         (it->second.issuer != issuer || it->second.subject != subject);
}

size_t BigQueryJobs::size() {
  absl::MutexLock lock(&mu_);
  return jobs_.size();
}

}  // namespace sluice::agent::gcs
