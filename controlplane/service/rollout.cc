#include "controlplane/service/rollout.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/policy/selectors.h"

namespace sluice::controlplane {
namespace {

constexpr size_t kMaxSelectorLabels = 16;
constexpr size_t kMaxLabelBytes = 256;

// The version an agent is meant to run in rollout `r`, or 0 when it is held on the previous
// version (outside the canary of a rollout in progress).
uint64_t TargetVersion(const RolloutRecord& r, bool canary) {
  if (r.state == kRolloutPromoted) return r.version;
  if (r.state == kRolloutAborted) return r.restored_version != 0 ? r.restored_version : r.version;
  return canary ? r.version : 0;
}

struct Answer {
  std::string answer;
  std::string nack_error;
};

// How an agent stands with `target`. A connected agent runs it when it ACKed its last snapshot
// and that snapshot is its view at `target` or later (an agent whose view a version does not
// change is not sent that version); one not connected, by the last ACK stored.
Answer AnswerFor(const AgentRecord& a, const LiveAgentStatus* live, uint64_t target) {
  if (live != nullptr) {
    if (live->checked_version >= target && live->desired_version != 0 &&
        live->applied_version == live->desired_version)
      return {"ack", ""};
  } else if (a.applied_version >= target) {
    return {"ack", ""};
  }
  if (a.last_nack_version >= target && !a.last_nack_error.empty() &&
      a.applied_version < a.last_nack_version)
    return {"nack", a.last_nack_error};
  return {live != nullptr ? "pending" : "offline", ""};
}

}  // namespace

absl::Status CheckCanarySelector(const Labels& selector) {
  if (selector.empty()) return absl::InvalidArgumentError("canary: give at least one label k=v");
  if (selector.size() > kMaxSelectorLabels)
    return absl::InvalidArgumentError(
        absl::StrCat("canary: at most ", kMaxSelectorLabels, " labels"));
  for (const auto& [k, v] : selector) {
    if (k.empty() || k.size() > kMaxLabelBytes || v.size() > kMaxLabelBytes ||
        absl::StrContains(k, "=") || absl::StrContains(k, ",") || absl::StrContains(v, ",")) {
      return absl::InvalidArgumentError(
          absl::StrCat("canary: '", k.substr(0, 64), "=", v.substr(0, 64), "' is not a label k=v"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPromote(const RolloutRecord& r, const std::vector<AgentRecord>& agents,
                          const std::map<std::string, LiveAgentStatus>& live, bool force) {
  if (!r.in_progress()) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", r.id, " is ", r.state, ": there is nothing to promote"));
  }
  if (force) return absl::OkStatus();
  if (r.state == kRolloutHalted) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", r.id, " is halted (", r.reason,
                     "); abort it (sluicectl rollout abort), or promote it anyway with --force"));
  }
  std::vector<std::string> waiting;
  for (const AgentRecord& a : agents) {
    if (!policy::SelectorMatches(r.selector, a.labels)) continue;
    auto it = live.find(a.id);
    Answer answer = AnswerFor(a, it == live.end() ? nullptr : &it->second, r.version);
    if (answer.answer != "ack") waiting.push_back(absl::StrCat(a.id, " (", answer.answer, ")"));
  }
  if (!waiting.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "not every canary agent runs version ", r.version, ": ", absl::StrJoin(waiting, ", "),
        "; wait for them (sluicectl rollout status), or promote anyway with --force"));
  }
  return absl::OkStatus();
}

v1::RolloutStatus DescribeRollout(const std::optional<RolloutRecord>& r,
                                  const std::vector<AgentRecord>& agents,
                                  const std::map<std::string, LiveAgentStatus>& live,
                                  uint64_t policy_version) {
  v1::RolloutStatus out;
  out.set_policy_version(policy_version);
  if (!r) return out;
  v1::Rollout* ro = out.mutable_rollout();
  ro->set_id(static_cast<uint64_t>(r->id));
  ro->set_version(r->version);
  ro->set_previous_version(r->previous_version);
  ro->mutable_canary()->insert(r->selector.begin(), r->selector.end());
  ro->set_state(r->state);
  ro->set_reason(r->reason);
  ro->set_created_unix_ms(r->created_ms);
  ro->set_created_by(r->created_by);
  ro->set_updated_unix_ms(r->updated_ms);
  ro->set_updated_by(r->updated_by);
  ro->set_restored_version(r->restored_version);
  for (const AgentRecord& a : agents) {
    v1::RolloutAgent* s = out.add_agents();
    s->set_agent_id(a.id);
    s->mutable_labels()->insert(a.labels.begin(), a.labels.end());
    const bool canary = policy::SelectorMatches(r->selector, a.labels);
    s->set_canary(canary);
    s->set_applied_version(a.applied_version);
    auto it = live.find(a.id);
    const LiveAgentStatus* l = it == live.end() ? nullptr : &it->second;
    if (l != nullptr) {
      s->set_connected(true);
      s->set_desired_version(l->desired_version);
      // The hub's ACK is newer than the stored one (that is stored on the worker after).
      if (l->applied_version != 0) s->set_applied_version(l->applied_version);
    }
    const uint64_t target = TargetVersion(*r, canary);
    if (target == 0) {
      s->set_answer("held");
      s->set_target_version(r->previous_version);
      continue;
    }
    s->set_target_version(target);
    Answer answer = AnswerFor(a, l, target);
    s->set_answer(answer.answer);
    s->set_nack_error(answer.nack_error);
  }
  return out;
}

}  // namespace sluice::controlplane
