#include "agent/session/approval_hold.h"

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <variant>

namespace sluice::agent::session {
namespace {

using audit::RefusalKind;

GuardrailDecision Rule() {
  GuardrailDecision d;
  d.action = GuardrailDecision::kRequireApproval;
  d.guardrail = "prod-safety";
  d.match = "drop_table";
  d.target = "public.orders";
  d.approval = "dba";
  return d;
}

HoldCaller Alice() {
  HoldCaller c;
  c.connection = "demo";
  c.identity.issuer = "corp";
  c.identity.subject = "alice";
  c.identity.groups = {"developers"};
  c.identity.attribution = {{"ci_job", "42"}};
  return c;
}

// Runs one Wait to its end on an event loop of its own (no sockets). `registration` answers the
// submitted request (nullopt: nothing is answered), `on_notice` runs when the client is told.
struct HoldRun {
  ApprovalBroker broker;
  std::vector<v1::ApprovalRequest> submitted;
  std::vector<v1::AgentMessage> withdrawn;
  std::vector<std::string> notices;
  std::optional<absl::StatusOr<ApprovalHold::Waited>> result;

  void Wait(ApprovalHold& hold, std::optional<v1::ApprovalRegistered> registration,
            std::function<void()> on_notice, absl::Duration timeout = absl::Seconds(30)) {
    asio::io_context io;
    HeldStatement held{"DROP TABLE orders", "DROP TABLE orders", Rule(), {"1", "NULL"}};
    HoldCaller caller = Alice();
    ApprovalHold::Notify notify = [&](const std::string& text) -> asio::awaitable<absl::Status> {
      notices.push_back(text);
      if (on_notice) on_notice();
      co_return absl::OkStatus();
    };
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          result = co_await hold.Wait(held, caller, timeout, notify);
        },
        asio::detached);
    // Once the request is submitted (the hold's first wait), the control plane answers it.
    asio::post(io, [&] {
      for (auto& m : broker.TakeOutgoing()) submitted.push_back(m.approval_request());
      if (registration && !submitted.empty()) {
        registration->set_request_id(submitted.back().request_id());
        broker.OnRegistered(*registration);
      }
    });
    io.run();
    for (auto& m : broker.TakeOutgoing()) {
      if (m.has_approval_withdrawn()) withdrawn.push_back(m);
    }
  }

  void Decide(bool approved, const std::string& reason) {
    v1::ApprovalDecision d;
    d.set_request_id(submitted.back().request_id());
    d.set_approved(approved);
    d.set_reason(reason);
    d.add_approvers("bob");
    broker.OnDecision(d);
  }
};

v1::ApprovalRegistered Registered(uint64_t id) {
  v1::ApprovalRegistered r;
  r.set_approval_id(id);
  return r;
}

TEST(ApprovalHold, ApproversSeeTheRequestAndTheClientIsToldWhileItWaits) {
  HoldRun run;
  run.broker.SetConnected(true);
  ApprovalHold hold(&run.broker, "sess");
  run.Wait(hold, Registered(42), [&] { run.Decide(true, "looks fine"); });

  ASSERT_TRUE(run.result.has_value());
  ASSERT_TRUE(run.result->ok()) << run.result->status();
  EXPECT_EQ((*run.result)->outcome.kind, ApprovalOutcome::kApproved);
  EXPECT_EQ((*run.result)->outcome.approvers, std::vector<std::string>{"bob"});
  EXPECT_EQ((*run.result)->approval_id, 42u);

  ASSERT_EQ(run.submitted.size(), 1u);
  const v1::ApprovalRequest& req = run.submitted[0];
  EXPECT_EQ(req.request_id(), "sess-1");
  EXPECT_EQ(req.session_id(), "sess");
  EXPECT_EQ(req.connection(), "demo");
  EXPECT_EQ(req.subject(), "alice");
  EXPECT_EQ(req.issuer(), "corp");
  EXPECT_EQ(req.groups_size(), 1);
  EXPECT_EQ(req.attribution().at("ci_job"), "42");
  EXPECT_EQ(req.statement(), "DROP TABLE orders");
  EXPECT_EQ(req.rule(), "drop_table");
  EXPECT_EQ(req.guardrail(), "prod-safety");
  EXPECT_EQ(req.target(), "public.orders");
  EXPECT_EQ(req.approval_policy(), "dba");
  EXPECT_EQ(req.parameters_size(), 2);

  ASSERT_EQ(run.notices.size(), 1u);
  EXPECT_EQ(
      run.notices[0],
      "Sluice: approval required: request 42, waiting up to 30 s (guardrail \"prod-safety\": "
      "drop_table on "
      "public.orders; ApprovalPolicy \"dba\"). An approver runs: sluicectl approvals approve 42");
  EXPECT_TRUE(run.withdrawn.empty());  // decided: nothing to withdraw
  EXPECT_FALSE(hold.Cancel());         // nothing is held any more
  EXPECT_TRUE(std::holds_alternative<Allow>(ApprovalHold::Verdict((*run.result)->outcome, Rule())));
}

TEST(ApprovalHold, AnUnreachableControlPlaneDeniesWithoutWaiting) {
  HoldRun run;  // never connected
  ApprovalHold hold(&run.broker, "sess");
  run.Wait(hold, std::nullopt, nullptr);
  ASSERT_TRUE(run.result.has_value() && run.result->ok());
  EXPECT_EQ((*run.result)->outcome.kind, ApprovalOutcome::kUnavailable);
  EXPECT_EQ((*run.result)->outcome.reason, "the control plane is unreachable");
  EXPECT_EQ((*run.result)->approval_id, 0u);
  EXPECT_TRUE(run.notices.empty());
}

TEST(ApprovalHold, ACancelWhileHeldWithdrawsTheRequest) {
  HoldRun run;
  run.broker.SetConnected(true);
  ApprovalHold hold(&run.broker, "sess");
  std::function<bool()> cancel = hold.Canceller();  // as the cancel registry keeps it
  run.Wait(hold, Registered(7), [&] { EXPECT_TRUE(cancel()); });
  ASSERT_TRUE(run.result.has_value() && run.result->ok());
  EXPECT_EQ((*run.result)->outcome.kind, ApprovalOutcome::kCancelled);
  ASSERT_EQ(run.withdrawn.size(), 1u);
  EXPECT_EQ(run.withdrawn[0].approval_withdrawn().reason(), "cancelled by the client");
  EXPECT_FALSE(cancel());

  Decision verdict = ApprovalHold::Verdict((*run.result)->outcome, Rule());
  ASSERT_TRUE(std::holds_alternative<Refuse>(verdict));
  EXPECT_EQ(std::get<Refuse>(verdict).kind, RefusalKind::kCancelled);
  EXPECT_EQ(std::get<Refuse>(verdict).message,
            "Sluice: canceling statement due to user request (it was waiting for approval)");
}

TEST(ApprovalHold, NoDecisionInTimeIsATimeout) {
  HoldRun run;
  run.broker.SetConnected(true);
  ApprovalHold hold(&run.broker, "sess");
  // Registered, never decided: the wait ends at its deadline, the timeout and 3 s of grace for the
  // control plane's own expiry (a timeout of -3 s: now).
  run.Wait(hold, Registered(9), nullptr, absl::Seconds(-3));
  ASSERT_TRUE(run.result.has_value() && run.result->ok());
  EXPECT_EQ((*run.result)->outcome.kind, ApprovalOutcome::kTimedOut);
  EXPECT_EQ((*run.result)->approval_id, 9u);
  ASSERT_EQ(run.withdrawn.size(), 0u);  // withdrawn without a reason: nothing is sent
}

TEST(ApprovalHold, OutcomeOfAWaitThatGotNoDecision) {
  ApprovalWaiter::State s;
  EXPECT_EQ(ApprovalHold::OutcomeOf(s, absl::Seconds(60)).reason,
            "the control plane did not answer");
  EXPECT_EQ(ApprovalHold::OutcomeOf(s, absl::Seconds(60)).kind, ApprovalOutcome::kUnavailable);
  s.registered = true;
  s.error = "no such approval policy";
  EXPECT_EQ(ApprovalHold::OutcomeOf(s, absl::Seconds(60)).reason,
            "the control plane refused the request: no such approval policy");
  s.error.clear();
  ApprovalOutcome late = ApprovalHold::OutcomeOf(s, absl::Seconds(60));
  EXPECT_EQ(late.kind, ApprovalOutcome::kTimedOut);
  EXPECT_EQ(late.reason, "no decision within 60 s");
  s.decided = true;
  s.outcome = ApprovalOutcome{ApprovalOutcome::kDenied, "no", {"carol"}};
  EXPECT_EQ(ApprovalHold::OutcomeOf(s, absl::Seconds(60)).approvers,
            std::vector<std::string>{"carol"});
}

TEST(ApprovalHold, VerdictsOfOutcomes) {
  auto refused = [](ApprovalOutcome::Kind kind, std::string reason) {
    Decision d = ApprovalHold::Verdict(ApprovalOutcome{kind, std::move(reason), {}}, Rule());
    EXPECT_TRUE(std::holds_alternative<Refuse>(d));
    return std::holds_alternative<Refuse>(d) ? std::get<Refuse>(d) : Refuse{};
  };
  Refuse denied = refused(ApprovalOutcome::kDenied, "");
  EXPECT_EQ(denied.kind, RefusalKind::kApprovalDenied);
  EXPECT_EQ(denied.message,
            "Sluice: statement denied (guardrail \"prod-safety\", drop_table): denied");
  Refuse late = refused(ApprovalOutcome::kTimedOut, "no decision within 60 s");
  EXPECT_EQ(late.kind, RefusalKind::kApprovalTimedOut);
  EXPECT_EQ(
      late.message,
      "Sluice: statement denied (guardrail \"prod-safety\", drop_table): no decision within 60 s");
  Refuse unavailable = refused(ApprovalOutcome::kUnavailable, "the control plane is unreachable");
  EXPECT_EQ(unavailable.kind, RefusalKind::kApprovalUnavailable);
  EXPECT_EQ(unavailable.message,
            "Sluice: statement needs approval under guardrail \"prod-safety\" (drop_table), but "
            "the control plane "
            "is unreachable; it was not run");
}

TEST(ApprovalHold, TheApprovalPolicysTimeout) {
  v1::PolicySnapshot snapshot;
  auto* dba = snapshot.add_approval_policies();
  dba->set_name("dba");
  dba->mutable_timeout()->set_seconds(90);
  snapshot.add_approval_policies()->set_name("quick");
  EXPECT_EQ(ApprovalHold::Timeout(snapshot, "dba"), absl::Seconds(90));
  EXPECT_EQ(ApprovalHold::Timeout(snapshot, "quick"), absl::Seconds(300));  // none set: the default
  EXPECT_EQ(ApprovalHold::Timeout(snapshot, "missing"), absl::Seconds(300));
}

}  // namespace
}  // namespace sluice::agent::session
