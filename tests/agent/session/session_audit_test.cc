#include "agent/session/session_audit.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/audit/records.h"

namespace sluice::agent::session {
namespace {

using audit::RefusalKind;

// A toy protocol for the recording: a message is its type byte, its payload and '\n'.
struct LineFraming {
  static bool IsData(char type) { return type == 'r'; }
  static bool Next(absl::string_view* wire, char* type, absl::string_view* payload) {
    size_t end = wire->find('\n');
    if (wire->empty() || end == absl::string_view::npos) return false;
    *type = (*wire)[0];
    *payload = wire->substr(1, end - 1);
    wire->remove_prefix(end + 1);
    return true;
  }
};

std::vector<v1::AuditEvent> Drain(EventSink& sink) {
  std::vector<v1::AuditEvent> out;
  while (auto chunk = sink.TakeChunk()) {
    auto events = audit::DecodeEvents(chunk->records, 1000);
    EXPECT_TRUE(events.ok()) << events.status();
    if (events.ok()) out.insert(out.end(), events->begin(), events->end());
  }
  return out;
}

audit::StatementText Text(absl::string_view sql) {
  audit::StatementText t;
  t.SetStatement(sql);
  t.classification = "write";
  t.query_protocol = "simple";
  return t;
}

GuardrailDecision Rule(GuardrailDecision::Action action) {
  GuardrailDecision d;
  d.action = action;
  d.guardrail = "prod-safety";
  d.match = "delete_without_where";
  d.approval = "dba";
  return d;
}

TEST(SessionAudit, ARefusedLoginIsOneEventWithItsKindAndCode) {
  EventSink sink;
  SessionAudit audit(&sink, nullptr, "s1", audit::kProtocolPostgres, nullptr);
  audit::Who who;
  who.connection = "demo";
  who.client_addr = "127.0.0.1:5000";
  who.user = "alice";
  Refuse refused;
  refused.kind = RefusalKind::kTokenRejected;
  refused.message = "Sluice: token rejected: token expired";
  refused.detail = "token expired";
  audit.Refused(who, refused, "28P01");
  EXPECT_FALSE(audit.started());

  auto events = Drain(sink);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type(), audit::SessionRefusedEvent::kType);
  EXPECT_EQ(events[0].session_id(), "s1");
  auto e = audit::SessionRefusedEvent::Read(events[0].json());
  EXPECT_EQ(e.refusal_kind, RefusalKind::kTokenRejected);
  EXPECT_EQ(e.protocol, "postgres");
  EXPECT_EQ(e.reason, "Sluice: token rejected: token expired");
  EXPECT_EQ(e.sqlstate, "28P01");
  EXPECT_EQ(e.detail, "token expired");
  EXPECT_EQ(e.who, who);
}

TEST(SessionAudit, ASessionsEventsCarryItsStatementsAndItsRecording) {
  EventSink sink;
  FramedRecorder<LineFraming> recorder(RecordingLimits{}, absl::Now());
  SessionAudit audit(&sink, nullptr, "s2", audit::kProtocolPostgres, &recorder);
  audit::SessionStartEvent start;
  start.who.connection = "demo";
  start.access = "write";
  audit.Started(start);
  EXPECT_TRUE(audit.started());

  // Answered: the session's reused event, with the recording since the last event.
  recorder.FromClient('q', "UPDATE t SET n = 1", absl::Now());
  recorder.ToClient("cUPDATE 3\n");
  audit.Forwarding("UPDATE t SET n = 1");
  audit::StatementEvent& answered = audit.Answer();
  answered.text = Text("UPDATE t SET n = 1");
  answered.rows = 3;
  answered.command_tags = "UPDATE 3";
  audit.Answered();
  EXPECT_EQ(recorder.size(), 0u);  // the slice went with the event

  Refuse read_only;
  read_only.kind = RefusalKind::kReadOnly;
  read_only.message = "Sluice: your access ... is read-only";
  audit.StatementRefused(Text("DELETE FROM t"), read_only, "25006");

  audit.Alerted(Text("DELETE FROM t"), Rule(GuardrailDecision::kAlert));

  Refuse blocked;
  blocked.kind = RefusalKind::kGuardrailBlocked;
  blocked.decision = audit::StatementEvent::kBlocked;
  blocked.guardrail = Rule(GuardrailDecision::kBlock);
  blocked.message = "Sluice: statement blocked by guardrail ...";
  audit.StatementRefused(Text("DELETE FROM t"), blocked, "42501");

  ApprovalOutcome denied{ApprovalOutcome::kDenied, "not now", {"bob"}};
  EXPECT_STREQ(
      audit.Approval(Text("DELETE FROM t"), Rule(GuardrailDecision::kRequireApproval), 7, denied),
      audit::ApprovalEvent::kDenied);
  EXPECT_EQ(audit.statements(), 4);  // answered, two refused, one denied after its hold
  audit.Ended("closed", absl::Milliseconds(2), 100, 200);
  EXPECT_FALSE(audit.failed());

  auto events = Drain(sink);
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[0].type(), audit::SessionStartEvent::kType);
  EXPECT_EQ(audit::SessionStartEvent::Read(events[0].json()).protocol, "postgres");

  EXPECT_EQ(events[1].type(), audit::StatementEvent::kType);
  EXPECT_FALSE(events[1].failed());
  EXPECT_FALSE(events[1].recording().empty());
  auto statement = audit::StatementEvent::Read(events[1].json());
  EXPECT_EQ(statement.rows, 3);
  EXPECT_EQ(statement.command_tags, "UPDATE 3");
  EXPECT_TRUE(statement.decision.empty());

  auto refused = audit::StatementEvent::Read(events[2].json());
  EXPECT_TRUE(events[2].failed());
  EXPECT_EQ(refused.decision, "refused");
  EXPECT_EQ(refused.refusal_kind, RefusalKind::kReadOnly);
  EXPECT_EQ(refused.sqlstate, "25006");
  EXPECT_TRUE(refused.guardrail.guardrail.empty());

  EXPECT_EQ(events[3].type(), audit::AlertEvent::kType);
  auto alert = audit::AlertEvent::Read(events[3].json());
  EXPECT_EQ(alert.guardrail.guardrail, "prod-safety");
  EXPECT_EQ(alert.guardrail.action, "alert");

  auto block = audit::StatementEvent::Read(events[4].json());
  EXPECT_EQ(block.decision, "blocked");
  EXPECT_EQ(block.refusal_kind, RefusalKind::kGuardrailBlocked);
  EXPECT_EQ(block.guardrail.action, "block");
  EXPECT_EQ(block.guardrail.match, "delete_without_where");

  EXPECT_EQ(events[5].type(), audit::ApprovalEvent::kType);
  auto approval = audit::ApprovalEvent::Read(events[5].json());
  EXPECT_EQ(approval.approval_id, 7);
  EXPECT_EQ(approval.refusal_kind, RefusalKind::kApprovalDenied);
  EXPECT_EQ(approval.approvers, std::vector<std::string>{"bob"});

  EXPECT_EQ(events[6].type(), audit::SessionEndEvent::kType);
  auto end = audit::SessionEndEvent::Read(events[6].json());
  ASSERT_TRUE(end.totals.has_value());
  EXPECT_EQ(end.totals->statements, 4);
  EXPECT_EQ(end.totals->bytes_from_client, 100);
  EXPECT_EQ(end.totals->bytes_from_server, 200);
  for (const auto& e : events) EXPECT_EQ(e.session_id(), "s2");
}

TEST(SessionAudit, ApprovalOutcomesAreRecordedByKind) {
  struct Case {
    ApprovalOutcome::Kind kind;
    const char* decision;
    RefusalKind refusal;
  };
  for (const Case& c :
       {Case{ApprovalOutcome::kApproved, "approved", RefusalKind::kNone},
        Case{ApprovalOutcome::kDenied, "denied", RefusalKind::kApprovalDenied},
        Case{ApprovalOutcome::kTimedOut, "denied", RefusalKind::kApprovalTimedOut},
        Case{ApprovalOutcome::kUnavailable, "unavailable", RefusalKind::kApprovalUnavailable},
        Case{ApprovalOutcome::kCancelled, "cancelled", RefusalKind::kCancelled}}) {
    ApprovalOutcome outcome{c.kind, "why", {}};
    audit::ApprovalEvent e = SessionAudit::ApprovalEventOf(
        Text("DROP TABLE t"), Rule(GuardrailDecision::kRequireApproval), 3, outcome);
    EXPECT_EQ(e.decision, c.decision) << c.decision;
    EXPECT_EQ(e.refusal_kind, c.refusal) << c.decision;
    EXPECT_EQ(e.failed(), c.kind != ApprovalOutcome::kApproved);
    EXPECT_EQ(e.guardrail, "prod-safety");
    EXPECT_EQ(e.approval_policy, "dba");
    EXPECT_EQ(e.reason, "why");
  }
}

TEST(SessionAudit, AnEventThatCannotBeQueuedFailsTheSession) {
  EventSink sink(/*capacity_bytes=*/1);  // the first event fills it
  SessionAudit audit(&sink, nullptr, "s3", audit::kProtocolPostgres, nullptr);
  audit.Started(audit::SessionStartEvent{});
  EXPECT_FALSE(audit.failed());
  audit.StatementRefused(Text("DELETE FROM t"), Refuse{}, "42501");
  EXPECT_TRUE(audit.failed());
}

TEST(SessionAudit, RequestsInFlightAreSettledByTheirAnswersAndTheSlotFreedAtTheEnd) {
  std::string dir = ::testing::TempDir() + "/session_audit_test_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto table = InflightTable::Open(dir + "/inflight", 4);
  ASSERT_TRUE(table.ok()) << table.status();
  EventSink sink;
  SessionAudit audit(&sink, table->get(), "s4", audit::kProtocolPostgres, nullptr);
  audit.Forwarding("SELECT 0");  // before the start: no slot, nothing noted
  EXPECT_TRUE((*table)->Recover().empty());
  audit.Started(audit::SessionStartEvent{});
  audit.Forwarding("SELECT 1");
  audit.Forwarding("SELECT 2");
  auto open = (*table)->Recover();
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].session_id, "s4");
  EXPECT_EQ(open[0].pending, 2u);
  audit.Answer().text = Text("SELECT 1");
  audit.Answered();
  EXPECT_EQ((*table)->Recover()[0].pending, 1u);
  audit.Ended("closed", absl::ZeroDuration(), 0, 0);
  EXPECT_TRUE((*table)->Recover().empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sluice::agent::session
