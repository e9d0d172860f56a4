// A session's statements held for approval (the gate's Hold), for any protocol: the request the
// approvers see, the wait for their decision through the ApprovalBroker, a cancel from another
// connection, and what the decision means for the statement.
//
// The wait: the request is submitted; once the control plane registers it (within 10 s) the
// adapter tells its client the statement is held (Notify: PostgreSQL sends a NoticeResponse with
// the request's number), then the session waits, its connection open, until approvers decide or
// the ApprovalPolicy's timeout passes (and 3 s of grace for the control plane's own expiry).
// Denied, never let through, when the control plane cannot be reached, refuses the request or does
// not answer. The wait is on an Asio timer the broker cancels from its thread; an error only when
// the session itself ends meanwhile (the request is then withdrawn).
//
// One ApprovalHold per session, on the session's thread, but for Cancel (any thread).
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/approvals/broker.h"
#include "agent/session/decision.h"
#include "common/jwt.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::session {

// A statement to hold, as the approvers see it.
struct HeldStatement {
  std::string sql;
  std::string fingerprint;
  GuardrailDecision guardrail;          // the require_approval rule that decided
  std::vector<std::string> parameters;  // bound values, as text (PostgreSQL's Bind)
};

// Who holds it.
struct HoldCaller {
  std::string connection;
  jwt::Identity identity;
};

class ApprovalHold {
 public:
  // Tells the client its statement is held, with this text; an error ends the session.
  using Notify = std::function<asio::awaitable<absl::Status>(const std::string& text)>;

  struct Waited {
    ApprovalOutcome outcome;
    uint64_t approval_id = 0;  // 0: never registered
  };

  // `broker` may be null (then nothing is held: the gate refuses instead, see gate.h).
  ApprovalHold(ApprovalBroker* broker, std::string session_id)
      : broker_(broker), session_id_(std::move(session_id)) {}

  // Submits `held`, waits for its decision (see the file comment). Arguments are references the
  // caller keeps alive until this returns (named locals: see docs/architecture.md on GCC 12).
  asio::awaitable<absl::StatusOr<Waited>> Wait(const HeldStatement& held, const HoldCaller& caller,
                                               absl::Duration timeout, const Notify& notify);

  // For holds whose event loop lives only as long as the hold (the HTTP port's): the waiters it
  // makes own `loop` too, so that a decision arriving as the hold ends finds it (ApprovalWaiter).
  void KeepAlive(std::shared_ptr<void> loop) { keep_alive_ = std::move(loop); }

  // Withdraws the statement held now, if any, as cancelled by the client (any thread; a cancel
  // request from another connection). False when none is held.
  bool Cancel() const { return CancelHeld(slot_); }
  // The same, for a registry that may outlive the session.
  std::function<bool()> Canceller() const {
    return [slot = slot_] { return CancelHeld(slot); };
  }

  // ---- The decision logic (pure) ----

  // The ApprovalPolicy `name`'s timeout in `snapshot` (300 s when it sets none).
  static absl::Duration Timeout(const v1::PolicySnapshot& snapshot, absl::string_view name);
  // The request approvers see; `number` makes its id unique in the session.
  v1::ApprovalRequest Request(const HeldStatement& held, const HoldCaller& caller,
                              uint64_t number) const;
  // What the client is told while it waits.
  static std::string WaitingNotice(uint64_t approval_id, absl::Duration timeout,
                                   const GuardrailDecision& d);
  // The outcome once the wait ended with the waiter in state `s`: its decision, or why there is
  // none (refused registration, no answer, no decision in time).
  static ApprovalOutcome OutcomeOf(const ApprovalWaiter::State& s, absl::Duration timeout);
  // What the outcome means for the statement: Allow when approved, else Refuse of its kind.
  static Decision Verdict(const ApprovalOutcome& outcome, const GuardrailDecision& d);

 private:
  struct Slot {  // the statement held now, for a cancel request from another connection
    absl::Mutex mu;
    std::shared_ptr<ApprovalWaiter> waiter ABSL_GUARDED_BY(mu);
  };
  static bool CancelHeld(const std::shared_ptr<Slot>& slot);
  void Hold(std::shared_ptr<ApprovalWaiter> waiter);
  // Waits until the waiter has an answer (a decision; or, unless `decision_only`, a
  // registration) or `deadline` passes. An error when the session is being torn down.
  static asio::awaitable<absl::Status> WaitForAnswer(const std::shared_ptr<ApprovalWaiter>& waiter,
                                                     absl::Time deadline, bool decision_only);

  ApprovalBroker* broker_;
  std::string session_id_;
  uint64_t holds_ = 0;
  std::shared_ptr<void> keep_alive_;
  std::shared_ptr<Slot> slot_ = std::make_shared<Slot>();
};

}  // namespace sluice::agent::session
