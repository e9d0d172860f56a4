// Staged rollouts (docs/deploy.md, "Staged rollout"): the rules of their state machine and what
// `sluicectl rollout status` shows, as pure functions over what the store and the hub hold. The
// store keeps each rollout and moves it between states (store.h, RolloutRecord); the policy
// manager starts, promotes and aborts them; the agent service halts one when a canary NACKs.
//
//   canary --(a canary NACKs the version)--> halted
//   canary --promote (every canary ACKed, or --force)--> promoted
//   halted --promote --force--> promoted
//   canary | halted --abort--> aborted (the previous version's documents stored again)
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "controlplane/service/agent_hub.h"
#include "controlplane/store/store.h"
#include "sluice/v1/admin.pb.h"

namespace sluice::controlplane {

// A canary selector given to Apply: at least one label, keys and values as enrollment labels.
absl::Status CheckCanarySelector(const Labels& selector);

// Whether `r` may be promoted now: FailedPrecondition when it is not in progress, and, unless
// `force`, when it is halted or a canary agent is not known to run its version (`live`: the
// connected agents' status from the hub; an agent not connected counts by its stored ACK).
absl::Status CheckPromote(const RolloutRecord& r, const std::vector<AgentRecord>& agents,
                          const std::map<std::string, LiveAgentStatus>& live, bool force);

// What GetRollout answers: the rollout (none when `r` is empty) and every enrolled agent's
// answer to the version it is meant to run in it (RolloutAgent in admin.proto).
v1::RolloutStatus DescribeRollout(const std::optional<RolloutRecord>& r,
                                  const std::vector<AgentRecord>& agents,
                                  const std::map<std::string, LiveAgentStatus>& live,
                                  uint64_t policy_version);

}  // namespace sluice::controlplane
