#include "controlplane/service/retention.h"

#include <algorithm>

#include "common/policy/selectors.h"

namespace sluice::controlplane {

std::map<std::string, int64_t> RetentionCutoffs(const PolicyState& state, int64_t now_ms) {
  std::map<std::string, int64_t> keep_ms;
  for (const auto& r : state.retention_policies) {
    const int64_t keep = r.keep().seconds() * 1000 + r.keep().nanos() / 1000000;
    for (const auto& c : state.connections) {
      if (!policy::SelectsConnection(r.connections(), c)) continue;
      auto [it, added] = keep_ms.emplace(c.name(), keep);
      if (!added) it->second = std::max(it->second, keep);
    }
  }
  std::map<std::string, int64_t> cutoffs;
  for (const auto& [name, keep] : keep_ms) cutoffs[name] = now_ms - keep;
  return cutoffs;
}

absl::StatusOr<v1::PurgeExpiredResponse> RunRetention(Store* store, const PolicyState& state,
                                                      const std::string& actor, bool dry_run,
                                                      int64_t now_ms) {
  PurgeRequest req;
  req.cutoff_ms_by_connection = RetentionCutoffs(state, now_ms);
  req.dry_run = dry_run;
  req.actor = actor;
  req.now_ms = now_ms;
  if (req.cutoff_ms_by_connection.empty()) return v1::PurgeExpiredResponse();
  return store->PurgeSessions(req);
}

}  // namespace sluice::controlplane
