#include "agent/session/metrics.h"

#include <gtest/gtest.h>

#include <string>

#include "agent/session/session_audit.h"

namespace sluice::agent::session {
namespace {

using audit::RefusalKind;

audit::StatementText Text(absl::string_view sql) {
  audit::StatementText t;
  t.SetStatement(sql);
  t.classification = "write";
  return t;
}

GuardrailDecision Rule(GuardrailDecision::Action action) {
  GuardrailDecision d;
  d.action = action;
  d.guardrail = "prod-safety";
  d.match = "delete_without_where";
  return d;
}

class SessionMetricsTest : public ::testing::Test {
 protected:
  bool Has(const std::string& line) {
    const std::string text = registry_.Render();
    const bool found = text.find(line + "\n") != std::string::npos;
    EXPECT_TRUE(found) << "no line '" << line << "' in:\n" << text;
    return found;
  }

  metrics::Registry registry_;
  SessionMetrics metrics_{&registry_};
  EventSink sink_;
};

TEST_F(SessionMetricsTest, ASessionsStatementsAreCountedByDecision) {
  SessionAudit audit(&sink_, nullptr, "s1", audit::kProtocolPostgres, nullptr, &metrics_);
  audit::SessionStartEvent start;
  start.who.connection = "demo";
  audit.Started(start);
  Has(R"(sluice_agent_sessions_started_total{protocol="postgres",connection="demo"} 1)");
  Has(R"(sluice_agent_sessions_active{protocol="postgres",connection="demo"} 1)");

  audit::StatementEvent& answered = audit.Answer();
  answered.text = Text("SELECT 1");
  answered.duration_us = 3000;  // 3 ms
  audit.Answered();
  audit::StatementEvent& failed = audit.Answer();
  failed.text = Text("SELECT 1/0");
  failed.sqlstate = "22012";
  failed.duration_us = 200;
  audit.Answered();

  Refuse blocked;
  blocked.kind = RefusalKind::kGuardrailBlocked;
  blocked.decision = audit::StatementEvent::kBlocked;
  audit.StatementRefused(Text("DELETE FROM t"), blocked, "42501");
  Refuse read_only;
  read_only.kind = RefusalKind::kReadOnly;
  audit.StatementRefused(Text("DELETE FROM t"), read_only, "25006");
  audit.Alerted(Text("GRANT ..."), Rule(GuardrailDecision::kAlert));
  audit.Approval(Text("DELETE FROM t"), Rule(GuardrailDecision::kRequireApproval), 7,
                 ApprovalOutcome{ApprovalOutcome::kTimedOut, "", {}});
  audit.Approval(Text("DELETE FROM t"), Rule(GuardrailDecision::kRequireApproval), 8,
                 ApprovalOutcome{ApprovalOutcome::kApproved, "", {"bob"}});
  audit.Ended("closed", absl::Seconds(1), 1, 2);

  Has(R"(sluice_agent_statements_total{protocol="postgres",connection="demo",decision="allowed"} 2)");
  Has(R"(sluice_agent_statements_total{protocol="postgres",connection="demo",decision="blocked"} 1)");
  Has(R"(sluice_agent_statements_total{protocol="postgres",connection="demo",decision="refused"} 1)");
  Has(R"(sluice_agent_statements_total{protocol="postgres",connection="demo",decision="denied"} 1)");
  Has(R"(sluice_agent_statements_total{protocol="postgres",connection="demo",decision="cancelled"} 0)");
  Has(R"(sluice_agent_statement_errors_total{protocol="postgres",connection="demo"} 1)");
  Has(R"(sluice_agent_guardrail_alerts_total{protocol="postgres",connection="demo"} 1)");
  Has(R"(sluice_agent_approvals_total{protocol="postgres",connection="demo",outcome="approved"} 1)");
  Has(R"(sluice_agent_approvals_total{protocol="postgres",connection="demo",outcome="denied"} 1)");
  Has(R"(sluice_agent_sessions_active{protocol="postgres",connection="demo"} 0)");
  Has(R"(sluice_agent_sessions_total{protocol="postgres",connection="demo",outcome="closed"} 1)");
  Has(R"(sluice_agent_sessions_total{protocol="postgres",connection="demo",outcome="error"} 0)");
  Has(R"(sluice_agent_statement_duration_seconds_bucket{protocol="postgres",connection="demo",le="0.0005"} 1)");
  Has(R"(sluice_agent_statement_duration_seconds_bucket{protocol="postgres",connection="demo",le="0.0025"} 1)");
  Has(R"(sluice_agent_statement_duration_seconds_bucket{protocol="postgres",connection="demo",le="0.005"} 2)");
  Has(R"(sluice_agent_statement_duration_seconds_count{protocol="postgres",connection="demo"} 2)");
  Has(R"(sluice_agent_statement_duration_seconds_sum{protocol="postgres",connection="demo"} )" +
      metrics::FormatValue(3000 * 1e-6 + 200 * 1e-6));
}

TEST_F(SessionMetricsTest, ASessionEndedByAnErrorIsCountedSo) {
  SessionAudit audit(&sink_, nullptr, "s1", audit::kProtocolMysql, nullptr, &metrics_);
  audit::SessionStartEvent start;
  start.who.connection = "maria";
  audit.Started(start);
  audit.Ended("the server closed the connection", absl::Seconds(1), 1, 2);
  Has(R"(sluice_agent_sessions_total{protocol="mysql",connection="maria",outcome="error"} 1)");
}

TEST_F(SessionMetricsTest, RefusedLoginsNameOnlyConnectionsThatWereFound) {
  Refuse refused;
  audit::Who who;
  // After the connection was found: its name is the policy's.
  who.connection = "demo";
  refused.kind = RefusalKind::kTokenRejected;
  SessionAudit(&sink_, nullptr, "s1", audit::kProtocolPostgres, nullptr, &metrics_)
      .Refused(who, refused, "28P01");
  refused.kind = RefusalKind::kUpstreamUnavailable;
  SessionAudit(&sink_, nullptr, "s2", audit::kProtocolPostgres, nullptr, &metrics_)
      .Refused(who, refused, "08006");
  // Before: whatever the caller asked for is not a label.
  who.connection = "made-up-by-the-caller";
  refused.kind = RefusalKind::kUnknownConnection;
  SessionAudit(&sink_, nullptr, "s3", audit::kProtocolPostgres, nullptr, &metrics_)
      .Refused(who, refused, "3D000");

  Has(R"(sluice_agent_sessions_total{protocol="postgres",connection="demo",outcome="refused"} 2)");
  Has(R"(sluice_agent_sessions_total{protocol="postgres",connection="",outcome="refused"} 1)");
  Has(R"(sluice_agent_session_refusals_total{protocol="postgres",kind="token_rejected"} 1)");
  Has(R"(sluice_agent_session_refusals_total{protocol="postgres",kind="unknown_connection"} 1)");
  Has(R"(sluice_agent_upstream_errors_total{protocol="postgres",connection="demo"} 1)");
  EXPECT_EQ(registry_.Render().find("made-up"), std::string::npos);
}

TEST_F(SessionMetricsTest, ConnectionsPastTheCapShareOneSeries) {
  for (size_t i = 0; i < SessionMetrics::kMaxConnections + 10; ++i) {
    metrics_.For(audit::kProtocolPostgres, "c" + std::to_string(i))->started->Inc();
  }
  Has(R"(sluice_agent_sessions_started_total{protocol="postgres",connection="_other"} 10)");
  EXPECT_EQ(metrics_.For(audit::kProtocolPostgres, "c0"),
            metrics_.For(audit::kProtocolPostgres, "c0"));
}

}  // namespace
}  // namespace sluice::agent::session
