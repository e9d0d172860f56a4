// Retention: the policy's RetentionPolicies say how long each connection's sessions are kept
// after they end; the purge (in the background, and `sluicectl retention purge`) deletes what is
// older, except sessions under a legal hold (Store::PurgeSessions).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "controlplane/snapshot/snapshot_builder.h"
#include "controlplane/store/store.h"

namespace sluice::controlplane {

// For each connection a RetentionPolicy selects: sessions that ended before this time may go
// (the longest `keep` of the policies selecting it wins). Connections none selects are absent:
// kept for good.
std::map<std::string, int64_t> RetentionCutoffs(const PolicyState& state, int64_t now_ms);

// Runs one purge with the cutoffs of `state`.
absl::StatusOr<v1::PurgeExpiredResponse> RunRetention(Store* store, const PolicyState& state,
                                                      const std::string& actor, bool dry_run,
                                                      int64_t now_ms);

}  // namespace sluice::controlplane
