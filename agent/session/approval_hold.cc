#include "agent/session/approval_hold.h"

#include <asio/experimental/as_tuple.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/audit/events.h"
#include "common/log.h"

namespace sluice::agent::session {
namespace {

constexpr auto kNoThrow = asio::experimental::as_tuple(asio::use_awaitable);

}  // namespace

asio::awaitable<absl::StatusOr<ApprovalHold::Waited>> ApprovalHold::Wait(const HeldStatement& held,
                                                                         const HoldCaller& caller,
                                                                         absl::Duration timeout,
                                                                         const Notify& notify) {
  v1::ApprovalRequest req = Request(held, caller, ++holds_);
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto waiter = std::make_shared<ApprovalWaiter>(executor, keep_alive_);
  Hold(waiter);
  Waited waited;
  std::string request_id = req.request_id();
  if (!broker_->Submit(std::move(req), waiter)) {
    waited.outcome =
        ApprovalOutcome{ApprovalOutcome::kUnavailable, "the control plane is unreachable", {}};
    Hold(nullptr);
    co_return waited;
  }
  absl::Time registration_deadline = absl::Now() + absl::Seconds(10);
  absl::Status st = co_await WaitForAnswer(waiter, registration_deadline, false);
  ApprovalWaiter::State s = waiter->state();
  if (st.ok() && !s.decided && s.registered && s.error.empty()) {
    waited.approval_id = s.approval_id;
    std::string text = WaitingNotice(s.approval_id, timeout, held.guardrail);
    LogInfo("statement of ", caller.identity.subject, " on ", caller.connection,
            " held: approval request ", s.approval_id);
    st = co_await notify(text);
    absl::Time decision_deadline = absl::Now() + timeout + absl::Seconds(3);
    if (st.ok()) st = co_await WaitForAnswer(waiter, decision_deadline, true);
    s = waiter->state();
  }
  if (!st.ok()) {
    broker_->Withdraw(request_id, "the session ended while the statement was held");
    Hold(nullptr);
    co_return st;  // the session ends
  }
  waited.outcome = OutcomeOf(s, timeout);
  broker_->Withdraw(request_id, waited.outcome.kind == ApprovalOutcome::kCancelled
                                    ? "cancelled by the client"
                                    : "");
  Hold(nullptr);
  co_return waited;
}

asio::awaitable<absl::Status> ApprovalHold::WaitForAnswer(
    const std::shared_ptr<ApprovalWaiter>& waiter, absl::Time deadline, bool decision_only) {
  while (true) {
    ApprovalWaiter::State s = waiter->state();
    if (s.decided || (!decision_only && s.registered)) co_return absl::OkStatus();
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) co_return absl::OkStatus();
    waiter->timer().expires_after(absl::ToChronoMilliseconds(left) + std::chrono::milliseconds(1));
    auto [ec] = co_await waiter->timer().async_wait(kNoThrow);
    (void)ec;  // woken (cancelled) or expired: the state says which
    asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) {
      co_return absl::CancelledError("the session ended while a statement was held");
    }
  }
}

void ApprovalHold::Hold(std::shared_ptr<ApprovalWaiter> waiter) {
  absl::MutexLock lock(&slot_->mu);
  slot_->waiter = std::move(waiter);
}

bool ApprovalHold::CancelHeld(const std::shared_ptr<Slot>& slot) {
  std::shared_ptr<ApprovalWaiter> waiter;
  {
    absl::MutexLock lock(&slot->mu);
    waiter = slot->waiter;
  }
  if (waiter == nullptr) return false;
  waiter->Decided(ApprovalOutcome{ApprovalOutcome::kCancelled, "cancelled by the client", {}});
  return true;
}

absl::Duration ApprovalHold::Timeout(const v1::PolicySnapshot& snapshot, absl::string_view name) {
  absl::Duration timeout = absl::Seconds(300);
  for (const auto& p : snapshot.approval_policies()) {
    if (p.name() == name && p.has_timeout()) {
      timeout = absl::Seconds(p.timeout().seconds()) + absl::Nanoseconds(p.timeout().nanos());
    }
  }
  return timeout;
}

v1::ApprovalRequest ApprovalHold::Request(const HeldStatement& held, const HoldCaller& caller,
                                          uint64_t number) const {
  const GuardrailDecision& d = held.guardrail;
  const jwt::Identity& who = caller.identity;
  v1::ApprovalRequest req;
  req.set_request_id(absl::StrCat(session_id_, "-", number));
  req.set_session_id(session_id_);
  req.set_connection(caller.connection);
  req.set_subject(who.subject);
  req.set_issuer(who.issuer);
  for (const auto& g : who.groups) req.add_groups(g);
  req.mutable_attribution()->insert(who.attribution.begin(), who.attribution.end());
  req.set_statement(held.sql.substr(0, audit::kMaxStatementBytes));
  req.set_fingerprint(held.fingerprint);
  req.set_rule(d.match);
  req.set_guardrail(d.guardrail);
  req.set_target(d.target);
  req.set_approval_policy(d.approval);
  for (const auto& p : held.parameters) req.add_parameters(p);
  return req;
}

std::string ApprovalHold::WaitingNotice(uint64_t approval_id, absl::Duration timeout,
                                        const GuardrailDecision& d) {
  return absl::StrCat("Sluice: approval required: request ", approval_id, ", waiting up to ",
                      absl::ToInt64Seconds(timeout), " s (guardrail \"", d.guardrail,
                      "\": ", d.match, d.target.empty() ? "" : " on " + d.target,
                      "; ApprovalPolicy \"", d.approval,
                      "\"). An approver runs: sluicectl approvals approve ", approval_id);
}

ApprovalOutcome ApprovalHold::OutcomeOf(const ApprovalWaiter::State& s, absl::Duration timeout) {
  if (s.decided) return s.outcome;
  if (s.registered && !s.error.empty()) {
    return ApprovalOutcome{ApprovalOutcome::kUnavailable,
                           absl::StrCat("the control plane refused the request: ", s.error),
                           {}};
  }
  if (!s.registered)
    return ApprovalOutcome{ApprovalOutcome::kUnavailable, "the control plane did not answer", {}};
  return ApprovalOutcome{ApprovalOutcome::kTimedOut,
                         absl::StrCat("no decision within ", absl::ToInt64Seconds(timeout), " s"),
                         {}};
}

Decision ApprovalHold::Verdict(const ApprovalOutcome& outcome, const GuardrailDecision& d) {
  Refuse r;
  switch (outcome.kind) {
    case ApprovalOutcome::kApproved:
      return Allow{};
    case ApprovalOutcome::kCancelled:
      r.kind = audit::RefusalKind::kCancelled;
      r.message = "Sluice: canceling statement due to user request (it was waiting for approval)";
      break;
    case ApprovalOutcome::kUnavailable:
      r.kind = audit::RefusalKind::kApprovalUnavailable;
      r.message = absl::StrCat("Sluice: statement needs approval under guardrail \"", d.guardrail,
                               "\" (", d.match, "), but ", outcome.reason, "; it was not run");
      break;
    case ApprovalOutcome::kTimedOut:
    case ApprovalOutcome::kDenied:
      r.kind = outcome.kind == ApprovalOutcome::kTimedOut ? audit::RefusalKind::kApprovalTimedOut
                                                          : audit::RefusalKind::kApprovalDenied;
      r.message = absl::StrCat("Sluice: statement denied (guardrail \"", d.guardrail, "\", ",
                               d.match, "): ", outcome.reason.empty() ? "denied" : outcome.reason);
      break;
  }
  r.decision = audit::StatementEvent::kDenied;
  r.guardrail = d;
  return r;
}

}  // namespace sluice::agent::session
