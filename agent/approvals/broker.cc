#include "agent/approvals/broker.h"

#include "common/log.h"

namespace sluice::agent {

void ApprovalWaiter::Registered(uint64_t approval_id, std::string error) {
  {
    absl::MutexLock lock(&mu_);
    state_.registered = true;
    state_.approval_id = approval_id;
    state_.error = std::move(error);
  }
  Wake();
}

void ApprovalWaiter::Decided(ApprovalOutcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    if (state_.decided) return;  // the first answer stands
    state_.decided = true;
    state_.outcome = std::move(outcome);
  }
  Wake();
}

ApprovalWaiter::State ApprovalWaiter::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

void ApprovalWaiter::Wake() {
  // The timer belongs to the session's event loop: cancel it there. The task holds no reference:
  // a waiter its session let go of has no timer to cancel (and a loop that owns a task that owns
  // the waiter that owns the loop would never be freed).
  asio::post(timer_.get_executor(), [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->timer_.cancel();
  });
}

bool ApprovalBroker::Submit(v1::ApprovalRequest request, std::shared_ptr<ApprovalWaiter> waiter) {
  absl::MutexLock lock(&mu_);
  if (!connected_) return false;
  waiting_[request.request_id()] = std::move(waiter);
  v1::AgentMessage m;
  *m.mutable_approval_request() = std::move(request);
  outgoing_.push_back(std::move(m));
  return true;
}

void ApprovalBroker::Withdraw(const std::string& request_id, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  waiting_.erase(request_id);
  if (reason.empty() || !connected_) return;
  v1::AgentMessage m;
  m.mutable_approval_withdrawn()->set_request_id(request_id);
  m.mutable_approval_withdrawn()->set_reason(reason);
  outgoing_.push_back(std::move(m));
}

void ApprovalBroker::SetConnected(bool connected) {
  absl::flat_hash_map<std::string, std::shared_ptr<ApprovalWaiter>> failed;
  {
    absl::MutexLock lock(&mu_);
    if (connected_ == connected) return;
    connected_ = connected;
    if (connected) return;
    failed.swap(waiting_);
    outgoing_.clear();
  }
  if (!failed.empty()) {
    LogWarning("lost the control plane with ", failed.size(),
               " statement(s) held for approval: denied");
  }
  for (auto& [id, waiter] : failed) {
    waiter->Decided(
        ApprovalOutcome{ApprovalOutcome::kUnavailable,
                        "the connection to the control plane was lost while the statement was held",
                        {}});
  }
}

std::vector<v1::AgentMessage> ApprovalBroker::TakeOutgoing() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::AgentMessage> out(std::make_move_iterator(outgoing_.begin()),
                                    std::make_move_iterator(outgoing_.end()));
  outgoing_.clear();
  return out;
}

void ApprovalBroker::OnRegistered(const v1::ApprovalRegistered& registered) {
  std::shared_ptr<ApprovalWaiter> waiter;
  {
    absl::MutexLock lock(&mu_);
    auto it = waiting_.find(registered.request_id());
    if (it == waiting_.end()) return;
    waiter = it->second;
    if (!registered.error().empty()) waiting_.erase(it);
  }
  waiter->Registered(registered.approval_id(), registered.error());
}

void ApprovalBroker::OnDecision(const v1::ApprovalDecision& decision) {
  std::shared_ptr<ApprovalWaiter> waiter;
  {
    absl::MutexLock lock(&mu_);
    auto it = waiting_.find(decision.request_id());
    if (it == waiting_.end()) return;  // the session stopped waiting
    waiter = std::move(it->second);
    waiting_.erase(it);
  }
  ApprovalOutcome outcome;
  outcome.kind = decision.approved()  ? ApprovalOutcome::kApproved
                 : decision.expired() ? ApprovalOutcome::kTimedOut
                                      : ApprovalOutcome::kDenied;
  outcome.reason = decision.reason();
  outcome.approvers.assign(decision.approvers().begin(), decision.approvers().end());
  waiter->Decided(std::move(outcome));
}

size_t ApprovalBroker::held() const {
  absl::MutexLock lock(&mu_);
  return waiting_.size();
}

}  // namespace sluice::agent
