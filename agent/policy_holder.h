// The snapshot the agent enforces. Data-path workers take the pointer when a session starts and
// keep it for the session's life; a new snapshot replaces the pointer, never the object.
#pragma once

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent {

class PolicyHolder {
 public:
  std::shared_ptr<const v1::PolicySnapshot> Get() const {
    absl::MutexLock lock(&mu_);
    return snapshot_;
  }
  void Set(std::shared_ptr<const v1::PolicySnapshot> snapshot) {
    absl::MutexLock lock(&mu_);
    snapshot_ = std::move(snapshot);
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const v1::PolicySnapshot> snapshot_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent
