// Computes the policy snapshot one agent receives: only what its labels entitle it to.
// Pure functions over an immutable PolicyState, so they are unit-tested without a server.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/policy/selectors.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::controlplane {

using policy::Labels;

// Every resource at one policy version, with inline secrets decrypted. Immutable once built and
// shared by pointer between the store worker and the agent streams.
struct PolicyState {
  uint64_t version = 0;
  std::vector<v1::Connection> connections;
  std::vector<v1::Issuer> issuers;
  std::vector<v1::AccessRule> access_rules;
  std::vector<v1::Guardrail> guardrails;
  std::vector<v1::MaskingRule> masking_rules;
  std::vector<v1::ApprovalPolicy> approval_policies;
  std::vector<v1::Webhook> webhooks;
  std::vector<v1::RetentionPolicy> retention_policies;  // control plane only
  // The `hash` masking strategy's key, shipped with masking rules (see PolicySnapshot).
  std::string masking_hash_key;
  // While a staged rollout of this version is in progress (canary or halted: docs/deploy.md,
  // "Staged rollout"), only agents whose labels match `canary_selector` are served this state;
  // every other agent is served `previous`, the state of the version before the rollout. Null
  // otherwise.
  std::shared_ptr<const PolicyState> previous;
  Labels canary_selector;

  // Adds one resource to the matching list.
  void Add(const v1::Resource& resource);
};

// The state an agent with `labels` is served: `state`, or its `previous` while a rollout is in
// progress and the agent is not in its canary.
const PolicyState& StateFor(const PolicyState& state, const Labels& labels);

// The snapshot for an agent with `labels`, cut from StateFor(state, labels):
// - connections whose `agents` selector matches the labels (with their credentials);
// - access rules, guardrails and masking rules that select at least one of those connections;
// - approval policies those guardrails reference (without webhooks: they stay here);
// - issuers the included access rules accept (all issuers when a rule does not restrict them).
// An agent that serves no connection gets an empty snapshot (version only).
v1::PolicySnapshot BuildSnapshot(const PolicyState& state, const Labels& labels);

// A digest of the snapshot's content, version excluded: equal digests = nothing to push.
std::string SnapshotDigest(const v1::PolicySnapshot& snapshot);

}  // namespace sluice::controlplane
