// Statements held for approval: the sessions that hold them, and the control plane that decides.
// A session submits an ApprovalRequest with a waiter; the control client sends it on the agent's
// stream, and routes the answers (ApprovalRegistered, ApprovalDecision) back to the waiter, which
// wakes the session on its own event loop. When the stream is down, or goes down during a hold,
// every held statement is denied: the control plane being unreachable never lets one through.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

struct ApprovalOutcome {
  // kTimedOut: no decision in time (the control plane's expiry, or the agent's own deadline).
  enum Kind { kApproved, kDenied, kTimedOut, kUnavailable, kCancelled };
  Kind kind = kDenied;
  std::string reason;
  std::vector<std::string> approvers;
};

// One held statement's view of its request. Created by the session on its executor; answers
// may arrive on any thread and wake the session.
class ApprovalWaiter : public std::enable_shared_from_this<ApprovalWaiter> {
 public:
  // `keep_alive` (optional) owns the event loop `executor` runs on, for a loop that lives only as
  // long as its hold (the HTTP port's): the waiter keeps it until its timer is gone, whichever
  // thread lets go of the waiter last.
  explicit ApprovalWaiter(asio::any_io_executor executor, std::shared_ptr<void> keep_alive = {})
      : keep_alive_(std::move(keep_alive)), timer_(executor) {}

  // Any thread.
  void Registered(uint64_t approval_id, std::string error);
  void Decided(ApprovalOutcome outcome);

  // The session's thread: waits until an answer arrives or `deadline` passes.
  asio::steady_timer& timer() { return timer_; }
  struct State {
    bool registered = false;
    uint64_t approval_id = 0;
    std::string error;  // registration refused
    bool decided = false;
    ApprovalOutcome outcome;
  };
  State state() const;

 private:
  void Wake();
  std::shared_ptr<void> keep_alive_;  // destroyed after the timer
  asio::steady_timer timer_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_);
};

class ApprovalBroker {
 public:
  // Sessions. False when the control plane is not connected (nothing is queued).
  bool Submit(v1::ApprovalRequest request, std::shared_ptr<ApprovalWaiter> waiter);
  // The session stopped waiting. With a `reason`, the control plane is told (the client
  // cancelled, or the session ended), so the request cannot be approved any more.
  void Withdraw(const std::string& request_id, const std::string& reason = "");

  // The control client.
  void SetConnected(bool connected);
  // Messages for the control plane (requests and withdrawals), in order.
  std::vector<v1::AgentMessage> TakeOutgoing();
  void OnRegistered(const v1::ApprovalRegistered& registered);
  void OnDecision(const v1::ApprovalDecision& decision);

  size_t held() const;

 private:
  mutable absl::Mutex mu_;
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::AgentMessage> outgoing_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<ApprovalWaiter>> waiting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent
