// The policy the agent enforces: the snapshot, and what is compiled from it once (the token
// verifier with the issuers' keys). Data-path sessions take the pointer when they start and keep
// it for their life; a new snapshot replaces the pointer, never the object.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/jwt.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent {

struct AgentPolicy {
  v1::PolicySnapshot snapshot;
  std::shared_ptr<const jwt::Verifier> verifier;

  // The connection named `name` with `protocol`, or nullptr.
  const v1::Connection* FindConnection(const std::string& name, v1::Protocol protocol) const {
    for (const auto& c : snapshot.connections()) {
      if (c.name() == name && c.protocol() == protocol) return &c;
    }
    return nullptr;
  }
};

class PolicyHolder {
 public:
  std::shared_ptr<const AgentPolicy> Get() const {
    absl::MutexLock lock(&mu_);
    return policy_;
  }
  void Set(std::shared_ptr<const AgentPolicy> policy) {
    absl::MutexLock lock(&mu_);
    policy_ = std::move(policy);
    generation_.fetch_add(1, std::memory_order_release);
  }
  // Changes with every Set: a cheap way for the data path to notice new policy.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const AgentPolicy> policy_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{0};
};

}  // namespace sluice::agent
