#include "agent/session/gate.h"

#include <gtest/gtest.h>

#include <variant>

namespace sluice::agent::session {
namespace {

using audit::RefusalKind;

Grant ReadGrant() { return Grant{v1::ACCESS_READ, "readers"}; }
Grant WriteGrant() { return Grant{v1::ACCESS_WRITE, "writers"}; }

StatementSummary Of(StatementClass cls, absl::string_view kind) {
  StatementSummary s;
  s.cls = cls;
  s.kind = kind;
  return s;
}

GuardrailDecision Rule(GuardrailDecision::Action action) {
  GuardrailDecision d;
  d.action = action;
  d.guardrail = "prod-safety";
  d.match = "delete_without_where";
  d.target = "public.orders";
  d.approval = "dba";
  d.statement_kind = "DeleteStmt";
  return d;
}

// The refusal `d` is (a copy: the decision is often a temporary).
Refuse Refused(const Decision& d) {
  EXPECT_TRUE(std::holds_alternative<Refuse>(d)) << "decision index " << d.index();
  return std::holds_alternative<Refuse>(d) ? std::get<Refuse>(d) : Refuse{};
}

TEST(StatementGate, AReadGrantRefusesAnythingButReads) {
  StatementGate gate("demo", "alice", ReadGrant(), true);
  EXPECT_TRUE(gate.read_only());
  EXPECT_TRUE(std::holds_alternative<Allow>(gate.Decide(Of(StatementClass::kRead, "SelectStmt"))));
  EXPECT_TRUE(
      std::holds_alternative<Allow>(gate.Decide(Of(StatementClass::kOther, "TransactionStmt"))));

  const Refuse& write = Refused(gate.Decide(Of(StatementClass::kWrite, "InsertStmt")));
  EXPECT_EQ(write.kind, RefusalKind::kReadOnly);
  EXPECT_STREQ(write.decision, audit::StatementEvent::kRefused);
  EXPECT_FALSE(write.guardrail.has_value());
  EXPECT_EQ(write.message,
            "Sluice: your access to connection \"demo\" is read-only (rule readers); this "
            "statement writes data "
            "(InsertStmt)");

  StatementSummary unparsed = Of(StatementClass::kUnknown, "unparsed text");
  unparsed.parse_error = "syntax error at or near \"SELEC\"";
  EXPECT_EQ(Refused(gate.Decide(unparsed)).message,
            "Sluice: your access to connection \"demo\" is read-only (rule readers); this "
            "statement cannot be "
            "classified (unparsed text: syntax error at or near \"SELEC\")");
  EXPECT_NE(
      Refused(gate.Decide(Of(StatementClass::kDdl, "DropStmt"))).message.find("changes the schema"),
      std::string::npos);
  EXPECT_NE(Refused(gate.Decide(Of(StatementClass::kDcl, "GrantStmt")))
                .message.find("changes privileges"),
            std::string::npos);

  // A write grant lets the same write through.
  StatementGate writer("demo", "alice", WriteGrant(), true);
  EXPECT_TRUE(
      std::holds_alternative<Allow>(writer.Decide(Of(StatementClass::kWrite, "InsertStmt"))));
}

TEST(StatementGate, UnsafeStatementsAreRefusedFirstWhateverTheGrant) {
  StatementGate gate("demo", "alice", ReadGrant(), true);
  StatementSummary s = Of(StatementClass::kWrite, "VariableSetStmt");
  s.unsafe = "it changes standard_conforming_strings";
  GuardrailDecision block = Rule(GuardrailDecision::kBlock);
  s.guardrail = &block;
  const Refuse& setting = Refused(gate.Decide(s));
  EXPECT_EQ(setting.kind, RefusalKind::kUnsafeSetting);
  EXPECT_EQ(
      setting.message,
      "Sluice: statement refused on connection \"demo\": it changes standard_conforming_strings");

  // Lifting read-only is refused as a write on a read grant.
  s.unsafe_lifts_read_only = true;
  EXPECT_EQ(Refused(gate.Decide(s)).kind, RefusalKind::kReadOnly);
}

TEST(StatementGate, UnmaskableResultsAreRefusedAfterTheGrant) {
  StatementGate gate("demo", "alice", WriteGrant(), true);
  StatementSummary s = Of(StatementClass::kRead, "SelectStmt");
  s.unmaskable = "it reads the masked column ssn into a function the agent cannot trace";
  const Refuse& r = Refused(gate.Decide(s));
  EXPECT_EQ(r.kind, RefusalKind::kUnmaskable);
  EXPECT_EQ(r.message,
            "Sluice: statement refused on connection \"demo\": results are masked here, and it "
            "reads the masked "
            "column ssn into a function the agent cannot trace");

  // On a read grant, a write is refused as such before its masking is looked at.
  StatementGate reader("demo", "alice", ReadGrant(), true);
  s.cls = StatementClass::kWrite;
  EXPECT_EQ(Refused(reader.Decide(s)).kind, RefusalKind::kReadOnly);
}

TEST(StatementGate, GuardrailsBlockAlertAndHold) {
  StatementGate gate("demo", "alice", WriteGrant(), /*can_hold=*/true);
  StatementSummary s = Of(StatementClass::kWrite, "DeleteStmt");

  GuardrailDecision allow = Rule(GuardrailDecision::kAllow);
  s.guardrail = &allow;
  EXPECT_TRUE(std::holds_alternative<Allow>(gate.Decide(s)));

  GuardrailDecision alert = Rule(GuardrailDecision::kAlert);
  s.guardrail = &alert;
  Decision alerted = gate.Decide(s);
  ASSERT_TRUE(std::holds_alternative<Alert>(alerted));
  EXPECT_EQ(std::get<Alert>(alerted).guardrail.guardrail, "prod-safety");

  GuardrailDecision block = Rule(GuardrailDecision::kBlock);
  s.guardrail = &block;
  const Refuse& blocked = Refused(gate.Decide(s));
  EXPECT_EQ(blocked.kind, RefusalKind::kGuardrailBlocked);
  EXPECT_STREQ(blocked.decision, audit::StatementEvent::kBlocked);
  ASSERT_TRUE(blocked.guardrail.has_value());
  EXPECT_EQ(blocked.guardrail->match, "delete_without_where");
  EXPECT_EQ(blocked.message,
            "Sluice: statement blocked by guardrail \"prod-safety\": delete_without_where on "
            "public.orders "
            "(DeleteStmt)");

  GuardrailDecision approval = Rule(GuardrailDecision::kRequireApproval);
  s.guardrail = &approval;
  Decision held = gate.Decide(s);
  ASSERT_TRUE(std::holds_alternative<Hold>(held));
  EXPECT_EQ(std::get<Hold>(held).guardrail.approval, "dba");

  // A request that cannot wait, or an agent that cannot hold: refused for want of an approval.
  s.holdable = false;
  const Refuse& unholdable = Refused(gate.Decide(s));
  EXPECT_EQ(unholdable.kind, RefusalKind::kApprovalUnavailable);
  EXPECT_STREQ(unholdable.decision, audit::StatementEvent::kDenied);
  StatementGate no_broker("demo", "alice", WriteGrant(), /*can_hold=*/false);
  s.holdable = true;
  const Refuse& denied = Refused(no_broker.Decide(s));
  EXPECT_EQ(denied.kind, RefusalKind::kApprovalUnavailable);
  EXPECT_EQ(
      denied.message,
      "Sluice: statement needs approval under guardrail \"prod-safety\" (delete_without_where on "
      "public.orders, ApprovalPolicy \"dba\"), and this agent cannot hold statements, so it is "
      "refused");
}

TEST(StatementGate, NoGuardrailAllows) {
  StatementGate gate("demo", "alice", WriteGrant(), true);
  EXPECT_TRUE(std::holds_alternative<Allow>(gate.Decide(Of(StatementClass::kDdl, "DropStmt"))));
  const Refuse r = gate.Refusal(RefusalKind::kNotSupported,
                                "a FunctionCall of pg_catalog.set_config is not accepted");
  EXPECT_EQ(r.kind, RefusalKind::kNotSupported);
  EXPECT_EQ(r.message,
            "Sluice: statement refused on connection \"demo\": a FunctionCall of "
            "pg_catalog.set_config is not "
            "accepted");
}

}  // namespace
}  // namespace sluice::agent::session
