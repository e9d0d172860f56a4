// The BigQuery jobs callers started through the agent. Upstream every job runs as the one
// service account, so the service would let any caller read any job's results; the agent keeps
// each job's owner — the caller who created it (jobs.insert, jobs.query), on that Connection —
// and what its SQL reads (for masking its results, agent/gcs/bigquery_masking.h). A request that
// names a job (jobs.get, jobs.getQueryResults, jobs.cancel, jobs.delete) is let through for its
// owner only; another caller's job and an unknown one look the same to the caller (404, as the
// service answers an unknown job).
//
// In memory only: an agent that restarts forgets its jobs (their callers run them again).
// Bounded: at most `max_jobs`, the oldest forgotten first; each is kept `ttl` (BigQuery keeps a
// query's results 24 hours).
#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/gcs/googlesql.h"

namespace sluice::agent::gcs {

struct BigQueryJob {
  std::string connection;
  std::string project;
  std::string job_id;
  std::string issuer;
  std::string subject;
  // What its SQL reads (none for load, extract and copy jobs), shared with the requests that
  // read its results.
  std::shared_ptr<const GoogleSqlAnalysis> query;
  absl::Time expires;
};

class BigQueryJobs {
 public:
  explicit BigQueryJobs(size_t max_jobs = 100000, absl::Duration ttl = absl::Hours(48))
      : max_jobs_(max_jobs), ttl_(ttl) {}

  // Binds `job` (its `expires` set here) to its owner. A job id already bound to another caller
  // keeps its owner (false).
  bool Bind(BigQueryJob job, absl::Time now);
  // The job when it is `issuer`/`subject`'s on `connection` and `project`; nullopt otherwise.
  std::optional<BigQueryJob> Find(const std::string& connection, const std::string& project,
                                  const std::string& job_id, const std::string& issuer,
                                  const std::string& subject, absl::Time now);
  // Whether `job_id` is a live job of another caller (for the event's refusal kind only).
  bool OwnedByAnother(const std::string& connection, const std::string& project,
                      const std::string& job_id, const std::string& issuer,
                      const std::string& subject, absl::Time now);
  size_t size();

 private:
  static std::string Key(const std::string& connection, const std::string& project,
                         const std::string& job_id);
  void DropOld(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_jobs_;
  const absl::Duration ttl_;
  absl::Mutex mu_;
  std::map<std::string, BigQueryJob> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // keys, oldest first
};

}  // namespace sluice::agent::gcs
