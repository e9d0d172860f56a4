#include "common/audit/events.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sluice::audit {
namespace {

using Json = nlohmann::json;

Who Alice() {
  return Who{"demo",  "127.0.0.1:40000",  true,          "alice",
             "alice", "https://idp.test", {"ci", "dev"}, {{"run_id", "42"}}};
}

StatementText Text(const std::string& sql, const std::string& classification = "write") {
  StatementText t;
  t.SetStatement(sql);
  t.fingerprint = "5c1e0d6a2f0b9e31";
  t.classification = classification;
  t.query_protocol = "extended";
  return t;
}

// Every field of every kind set (what the agent writes) survives writing and reading.
TEST(AuditEvents, EveryKindRoundTrips) {
  SessionStartEvent start;
  start.protocol = kProtocolPostgres;
  start.who = Alice();
  start.access = "read";
  start.rule = "readers";
  start.protocol_version = "3.2";
  start.application_name = "psql \"quoted\"\n";
  start.tls_version = "TLSv1.3";
  start.tls_cipher = "TLS_AES_256_GCM_SHA384";
  start.upstream_tls = true;
  start.upstream_tls_version = "TLSv1.2";
  start.upstream_tls_cipher = "ECDHE-RSA-AES128-GCM-SHA256";
  start.token_alg = "ES256";
  start.token_expires_unix = 1800003600;
  start.token_issued_unix = 1800000000;
  EXPECT_EQ(SessionStartEvent::Read(ToJson(start)), start);

  for (RefusalKind kind : AllRefusalKinds()) {
    SessionRefusedEvent refused;
    refused.protocol = "mysql";
    refused.who = Alice();
    refused.refusal_kind = kind;
    refused.reason = "Access denied";
    refused.sqlstate = "28000";
    refused.detail = "why";
    EXPECT_EQ(SessionRefusedEvent::Read(ToJson(refused)), refused) << RefusalKindName(kind);
  }

  SessionEndEvent end{"closed", SessionTotals{1234567, 3, 120, 4096}};
  EXPECT_EQ(SessionEndEvent::Read(ToJson(end)), end);
  SessionEndEvent killed{"the agent stopped (killed or crashed) during the session", std::nullopt};
  EXPECT_EQ(SessionEndEvent::Read(ToJson(killed)), killed);

  StatementEvent answered;
  answered.text = Text("SELECT 1", "read");
  answered.rows = 1;
  answered.bytes = 11;
  answered.duration_us = 87;
  answered.command_tags = "SELECT 1";
  answered.sqlstate = "42P01";
  answered.error = "relation \"x\" does not exist";
  answered.suspended = true;
  answered.masked_by = "pii,cards";
  answered.masked_rows = 3;
  EXPECT_EQ(StatementEvent::Read(ToJson(answered)), answered);

  for (RefusalKind kind : AllRefusalKinds()) {
    StatementEvent refused;
    refused.text = Text("DELETE FROM t");
    refused.decision = "blocked";
    refused.refusal_kind = kind;
    refused.guardrail = GuardrailHit{"prod-safety", "delete_without_where", "block", "t", "dba"};
    refused.reason = "Sluice: statement blocked";
    refused.sqlstate = "42501";
    EXPECT_EQ(StatementEvent::Read(ToJson(refused)), refused) << RefusalKindName(kind);
  }

  StatementEvent unknown;
  unknown.text.statement = "UPDATE t SET a = 1";
  unknown.outcome = "unknown";
  unknown.error = "the agent stopped before the server answered";
  unknown.text_not_kept = true;
  EXPECT_EQ(StatementEvent::Read(ToJson(unknown)), unknown);

  AlertEvent alert{Text("SELECT * FROM accounts", "read"),
                   GuardrailHit{"watch", "table", "alert", "accounts", ""}};
  EXPECT_EQ(AlertEvent::Read(ToJson(alert)), alert);

  ApprovalEvent approval;
  approval.text = Text("UPDATE items SET n = 7");
  approval.decision = "denied";
  approval.refusal_kind = RefusalKind::kApprovalTimedOut;
  approval.approval_id = 7;
  approval.guardrail = "prod-safety";
  approval.match = "update_without_where";
  approval.approval_policy = "dba-on-call";
  approval.approvers = {"dora (test-idp)", "erin (test-idp)"};
  approval.reason = "no decision within 60 s";
  EXPECT_EQ(ApprovalEvent::Read(ToJson(approval)), approval);

  EXPECT_EQ(ToJson(RecordingEvent{}), "{}");

  CheckpointEvent checkpoint{1795677548731029, std::string(32, '\x11'), std::string(64, '\x22')};
  auto read_checkpoint = CheckpointEvent::Read(ToJson(checkpoint));
  ASSERT_TRUE(read_checkpoint.ok()) << read_checkpoint.status();
  EXPECT_EQ(*read_checkpoint, checkpoint);

  SpoolFailedEvent failed{"write segment: No space left on device", true};
  EXPECT_EQ(SpoolFailedEvent::Read(ToJson(failed)), failed);
  SpoolRecoveredEvent recovered{"write segment: No space left on device", 4200};
  EXPECT_EQ(SpoolRecoveredEvent::Read(ToJson(recovered)), recovered);
  ChainResumedEvent resumed{1795677548731000, std::string(32, '\x33'),         1795677548731040, 40,
                            1795677549000,    "the agent's spool lost records"};
  EXPECT_EQ(ChainResumedEvent::Read(ToJson(resumed)), resumed);
  PurgedEvent purged{12};
  EXPECT_EQ(PurgedEvent::Read(ToJson(purged)), purged);
  EXPECT_EQ(ToJson(purged), R"({"purged_by_audit_record":12})");
}

TEST(AuditEvents, RefusalKindNamesAreStable) {
  const std::vector<std::string> expected = {"token_rejected",
                                             "no_access_rule",
                                             "tls_required",
                                             "unknown_connection",
                                             "session_limit",
                                             "audit_unavailable",
                                             "upstream_unavailable",
                                             "not_supported",
                                             "protocol_error",
                                             "unsafe_setting",
                                             "read_only",
                                             "unmaskable",
                                             "unknown_function",
                                             "guardrail_blocked",
                                             "approval_denied",
                                             "approval_timed_out",
                                             "approval_unavailable",
                                             "cancelled",
                                             "not_owner",
                                             "other"};
  std::vector<std::string> names;
  for (RefusalKind kind : AllRefusalKinds()) {
    names.emplace_back(RefusalKindName(kind));
    EXPECT_EQ(RefusalKindFromName(RefusalKindName(kind)), kind);
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ(RefusalKindFromName(""), RefusalKind::kNone);
  EXPECT_EQ(RefusalKindFromName("a_kind_from_a_newer_agent"), RefusalKind::kOther);
}

// What the agent writes keeps every field name and value older readers know: the bodies below are
// what the agent wrote before typed events (session-level events by nlohmann::json, so their keys
// sorted), and the typed writer's output is the same object plus the new fields.
TEST(AuditEvents, WrittenBodiesKeepTheirOldShape) {
  auto same_plus = [](const std::string& written, const std::string& old, const Json& added) {
    Json expected = Json::parse(old);
    for (auto it = added.begin(); it != added.end(); ++it) expected[it.key()] = it.value();
    EXPECT_EQ(Json::parse(written), expected) << written;
  };
  SessionStartEvent start;
  start.protocol = kProtocolPostgres;
  start.who = Alice();
  start.access = "read";
  start.rule = "readers";
  start.protocol_version = "3.0";
  start.application_name = "psql";
  start.tls_version = "TLSv1.3";
  start.tls_cipher = "TLS_AES_256_GCM_SHA384";
  start.upstream_tls = false;
  start.token_alg = "ES256";
  start.token_expires_unix = 1800003600;
  start.token_issued_unix = 1800000000;
  same_plus(
      ToJson(start),
      R"({"access":"read","application_name":"psql","attribution":{"run_id":"42"},)"
      R"("client_addr":"127.0.0.1:40000","connection":"demo","groups":["ci","dev"],)"
      R"("issuer":"https://idp.test","protocol":"3.0","rule":"readers","subject":"alice","tls":true,)"
      R"("tls_cipher":"TLS_AES_256_GCM_SHA384","tls_version":"TLSv1.3","token_alg":"ES256",)"
      R"("token_expires_unix":1800003600,"token_issued_unix":1800000000,"upstream_tls":false,"user":"alice"})",
      {{"connection_protocol", "postgres"}});

  SessionRefusedEvent limit;
  limit.protocol = kProtocolPostgres;
  limit.who = Alice();
  limit.refusal_kind = RefusalKind::kSessionLimit;
  limit.reason = "Sluice: too many sessions";
  limit.sqlstate = "53300";
  same_plus(
      ToJson(limit),
      R"({"attribution":{"run_id":"42"},"client_addr":"127.0.0.1:40000","connection":"demo",)"
      R"("groups":["ci","dev"],"issuer":"https://idp.test","reason":"Sluice: too many sessions",)"
      R"("refusal":"session_limit","sqlstate":"53300","subject":"alice","tls":true,"user":"alice"})",
      {{"connection_protocol", "postgres"}, {"refusal_kind", "session_limit"}});

  SessionEndEvent end{"closed", SessionTotals{1234567, 3, 120, 4096}};
  same_plus(
      ToJson(end),
      R"({"bytes_from_client":120,"bytes_from_server":4096,"duration_ms":1234.567,"reason":"closed",)"
      R"("statements":3})",
      Json::object());
  EXPECT_EQ(ToJson(SessionEndEvent{"the agent stopped (killed or crashed) during the session",
                                   std::nullopt}),
            R"({"reason":"the agent stopped (killed or crashed) during the session"})");

  // Statement-level events were written field by field, as now: the bytes are the same.
  StatementEvent answered;
  answered.text = Text("SELECT 1", "read");
  answered.text.query_protocol = "simple";
  answered.rows = 1;
  answered.bytes = 11;
  answered.duration_us = 87;
  answered.command_tags = "SELECT 1";
  EXPECT_EQ(
      ToJson(answered),
      R"({"statement":"SELECT 1","fingerprint":"5c1e0d6a2f0b9e31","classification":"read","protocol":"simple",)"
      R"("rows":1,"bytes":11,"duration_ms":0.087,"command_tags":"SELECT 1"})");

  StatementEvent blocked;
  blocked.text = Text("DELETE FROM t");
  blocked.decision = "blocked";
  blocked.refusal_kind = RefusalKind::kGuardrailBlocked;
  blocked.guardrail = GuardrailHit{"prod-safety", "delete_without_where", "block", "t", ""};
  blocked.reason =
      "Sluice: statement blocked by guardrail \"prod-safety\": delete_without_where on t "
      "(DeleteStmt)";
  blocked.sqlstate = "42501";
  EXPECT_EQ(
      ToJson(blocked),
      R"({"statement":"DELETE FROM t","fingerprint":"5c1e0d6a2f0b9e31","classification":"write",)"
      R"("protocol":"extended","decision":"blocked","guardrail":"prod-safety","match":"delete_without_where",)"
      R"("action":"block","target":"t","reason":"Sluice: statement blocked by guardrail \"prod-safety\": )"
      R"j(delete_without_where on t (DeleteStmt)","sqlstate":"42501","refusal_kind":"guardrail_blocked"})j");

  AlertEvent alert{Text("SELECT 1", "read"), GuardrailHit{"watch", "table", "alert", "", ""}};
  EXPECT_EQ(
      ToJson(alert),
      R"({"statement":"SELECT 1","fingerprint":"5c1e0d6a2f0b9e31","classification":"read",)"
      R"("protocol":"extended","decision":"alerted","guardrail":"watch","match":"table","action":"alert"})");

  ApprovalEvent approved;
  approved.text = Text("UPDATE items SET n = 7");
  approved.decision = ApprovalEvent::kApproved;
  approved.approval_id = 1;
  approved.guardrail = "prod-safety";
  approved.match = "update_without_where";
  approved.approval_policy = "dba-on-call";
  approved.approvers = {"dora (test-idp)"};
  EXPECT_EQ(
      ToJson(approved),
      R"({"statement":"UPDATE items SET n = 7","fingerprint":"5c1e0d6a2f0b9e31","classification":"write",)"
      R"("protocol":"extended","decision":"approved","approval_id":1,"guardrail":"prod-safety",)"
      R"j("match":"update_without_where","approval_policy":"dba-on-call","approvers":"dora (test-idp)",)j"
      R"("reason":""})");

  StatementEvent unknown;
  unknown.text.statement = "";
  unknown.outcome = "unknown";
  unknown.error =
      "the agent stopped before the server answered: the statement may or may not have run";
  unknown.text_not_kept = true;
  EXPECT_EQ(
      ToJson(unknown),
      R"({"statement":"","outcome":"unknown","error":"the agent stopped before the server answered: the )"
      R"(statement may or may not have run","text_not_kept":true})");

  EXPECT_EQ(ToJson(CheckpointEvent{7, "\x01\xab", "\xff"}),
            R"({"sequence":7,"hash":"01ab","signature":"ff"})");
  EXPECT_EQ(ToJson(SpoolFailedEvent{"disk full", true}),
            R"({"error":"disk full","refusing_new_sessions":true})");
  EXPECT_EQ(ToJson(SpoolRecoveredEvent{"disk full", 5}), R"({"error":"disk full","failed_ms":5})");
}

// Events stored by agents older than `refusal_kind` (their bodies exactly as those agents wrote
// them) read with the kind their SQLSTATE and message meant.
TEST(AuditEvents, OldRefusalsReadWithTheirKind) {
  const std::string who =
      R"("attribution":{},"client_addr":"127.0.0.1:41000","connection":"demo","groups":[],"issuer":"",)"
      R"("subject":"","tls":true,"user":"alice")";
  struct Old {
    const char* reason;
    const char* sqlstate;
    const char* refusal;
    RefusalKind kind;
  };
  const std::vector<Old> sessions = {
      {"startup packet length 3 is too short", "08P01", "", RefusalKind::kProtocolError},
      {"Sluice: this listener requires TLS (use sslmode=require)", "28000", "",
       RefusalKind::kTlsRequired},
      {"Sluice: replication connections are not supported", "0A000", "",
       RefusalKind::kNotSupported},
      {"Sluice: the agent cannot record audit events now (its buffer or spool is full, or the "
       "spool cannot be "
       "written); try again later",
       "53300", "", RefusalKind::kAuditUnavailable},
      {"Sluice: no user name given", "28000", "", RefusalKind::kProtocolError},
      {"Sluice: connection \"nope\" does not exist on this agent", "3D000", "",
       RefusalKind::kUnknownConnection},
      {"Sluice: expected a password message", "08P01", "", RefusalKind::kProtocolError},
      {"Sluice: token rejected: signature does not verify", "28P01", "",
       RefusalKind::kTokenRejected},
      {"Sluice: no access rule lets \"carol\" use connection \"demo\"", "28000", "",
       RefusalKind::kNoAccessRule},
      {"Sluice: too many sessions for \"alice\" on connection \"demo\" (limit 3 per caller on this "
       "agent); close "
       "one and try again",
       "53300", "session_limit", RefusalKind::kSessionLimit},
      {"Sluice: the connection's password is not available on this agent", "08006", "",
       RefusalKind::kUpstreamUnavailable},
      {"Sluice: startup option search_path=x refused: ...", "22023", "",
       RefusalKind::kUnsafeSetting},
      {"Sluice: cannot open connection \"demo\": connection refused", "08006", "",
       RefusalKind::kUpstreamUnavailable},
      {"Sluice: something new", "XX000", "", RefusalKind::kOther},
  };
  for (const Old& o : sessions) {
    std::string body = absl::StrCat(
        "{", who, R"(,"reason":)", Json(o.reason).dump(), R"(,"sqlstate":")", o.sqlstate, "\"",
        *o.refusal ? absl::StrCat(R"(,"refusal":")", o.refusal, "\"") : "", "}");
    SessionRefusedEvent e = SessionRefusedEvent::Read(body);
    EXPECT_EQ(e.refusal_kind, o.kind) << body;
    EXPECT_EQ(e.reason, o.reason);
    EXPECT_EQ(e.who.user, "alice");
    EXPECT_EQ(e.protocol, "");  // not recorded
  }
  EXPECT_EQ(
      SessionRefusedEvent::Read(
          R"({"reason":"Sluice: token rejected: token expired","sqlstate":"28P01","subject":""})")
          .detail,
      "token expired");

  struct OldStatement {
    const char* decision;
    const char* reason;
    const char* sqlstate;
    RefusalKind kind;
  };
  const std::vector<OldStatement> statements = {
      {"refused",
       "Sluice: your access to connection \"demo\" is read-only (rule readers); this statement "
       "writes data "
       "(InsertStmt)",
       "25006", RefusalKind::kReadOnly},
      {"refused",
       "Sluice: statement refused on connection \"demo\": it sets default_transaction_read_only",
       "25006", RefusalKind::kReadOnly},
      {"refused",
       "Sluice: statement refused on connection \"demo\", where results are masked: binary COPY "
       "output cannot be "
       "masked; use the text or csv format",
       "42501", RefusalKind::kUnmaskable},
      {"refused",
       "Sluice: statement refused on connection \"demo\": results are masked here, and it reads "
       "ssn",
       "42501", RefusalKind::kUnmaskable},
      {"refused",
       "Sluice: statement refused on connection \"demo\": it has a '...' string constant with a "
       "backslash, ...",
       "42501", RefusalKind::kUnsafeSetting},
      {"refused",
       "Sluice: statement refused on connection \"demo\": a FunctionCall of pg_catalog.set_config "
       "is not accepted "
       "(the agent cannot see what it changes or runs); call it with SELECT",
       "42501", RefusalKind::kNotSupported},
      {"refused", "Sluice: statement refused on connection \"demo\": no function has OID 1",
       "42883", RefusalKind::kUnknownFunction},
      {"refused",
       "Sluice: statement refused on connection \"demo\": the agent could not look up the function "
       "it calls: x",
       "58000", RefusalKind::kUpstreamUnavailable},
      {"blocked",
       "Sluice: statement blocked by guardrail \"prod-safety\": delete_without_where on t "
       "(DeleteStmt)",
       "42501", RefusalKind::kGuardrailBlocked},
      {"denied",
       "Sluice: statement needs approval under guardrail \"g\" (ddl, ApprovalPolicy \"p\"), and "
       "this agent cannot "
       "hold statements, so it is refused",
       "42501", RefusalKind::kApprovalUnavailable},
      {"", "", "42P01", RefusalKind::kNone},  // answered by the server with an error
  };
  for (const OldStatement& o : statements) {
    std::string body = absl::StrCat(
        R"({"statement":"X","fingerprint":"f","classification":"write","protocol":"simple")",
        *o.decision
            ? absl::StrCat(R"(,"decision":")", o.decision, R"(","reason":)", Json(o.reason).dump())
            : std::string(R"(,"rows":0,"bytes":0,"duration_ms":0.100)"),
        R"(,"sqlstate":")", o.sqlstate, "\"}");
    EXPECT_EQ(StatementEvent::Read(body).refusal_kind, o.kind) << body;
  }

  struct OldApproval {
    const char* decision;
    const char* reason;
    RefusalKind kind;
  };
  const std::vector<OldApproval> approvals = {
      {"approved", "", RefusalKind::kNone},
      {"denied", "denied by dora (test-idp)", RefusalKind::kApprovalDenied},
      {"denied", "no decision within 60 s", RefusalKind::kApprovalTimedOut},
      {"unavailable", "the control plane is unreachable", RefusalKind::kApprovalUnavailable},
      {"cancelled", "cancelled by the client", RefusalKind::kCancelled},
  };
  for (const OldApproval& o : approvals) {
    std::string body = absl::StrCat(
        R"({"statement":"UPDATE items SET n = 7","fingerprint":"f","classification":"write","protocol":"simple",)",
        R"("decision":")", o.decision,
        R"(","approval_id":3,"guardrail":"g","match":"m","approval_policy":"p",)",
        R"("approvers":"","reason":")", o.reason, "\"}");
    ApprovalEvent e = ApprovalEvent::Read(body);
    EXPECT_EQ(e.refusal_kind, o.kind) << body;
    EXPECT_EQ(e.failed(), o.kind != RefusalKind::kNone);
  }
}

// A kind the agent names wins over anything its SQLSTATE or message would say.
TEST(AuditEvents, AGivenKindIsNeverDecodedAgain) {
  EXPECT_EQ(
      SessionRefusedEvent::Read(
          R"({"reason":"Sluice: token rejected: x","sqlstate":"28P01","refusal_kind":"no_access_rule"})")
          .refusal_kind,
      RefusalKind::kNoAccessRule);
  EXPECT_EQ(StatementEvent::Read(
                R"({"decision":"refused","sqlstate":"25006","refusal_kind":"unmaskable"})")
                .refusal_kind,
            RefusalKind::kUnmaskable);
  EXPECT_EQ(SessionRefusedEvent::Read(R"({"refusal_kind":"from_the_future"})").refusal_kind,
            RefusalKind::kOther);
}

TEST(AuditEvents, BadBodiesReadAsEmpty) {
  for (const char* body : {"", "[1,2]", "not json", "{\"statement\": 5, \"rows\": \"x\"}"}) {
    EXPECT_EQ(StatementEvent::Read(body), StatementEvent{}) << body;
    EXPECT_EQ(SessionStartEvent::Read(body), SessionStartEvent{}) << body;
  }
  EXPECT_FALSE(CheckpointEvent::Read(R"({"sequence":1,"hash":"aa"})").ok());
  EXPECT_FALSE(CheckpointEvent::Read(R"({"sequence":-1,"hash":"aa","signature":"bb"})").ok());
}

TEST(AuditEvents, ClearEmptiesEveryField) {
  StatementEvent e;
  e.text = Text(std::string(kMaxStatementBytes + 1, 'x'));
  EXPECT_TRUE(e.text.truncated);
  EXPECT_EQ(e.text.statement.size(), kMaxStatementBytes);
  e.rows = e.bytes = e.duration_us = e.masked_rows = 1;
  e.command_tags = e.sqlstate = e.error = e.masked_by = e.decision = e.reason = e.outcome = "x";
  e.guardrail = GuardrailHit{"a", "b", "c", "d", "e"};
  e.suspended = e.text_not_kept = true;
  e.refusal_kind = RefusalKind::kReadOnly;
  e.Clear();
  EXPECT_EQ(e, StatementEvent{});
}

TEST(AuditEvents, PlainStatementBodiesAreToldWithoutParsing) {
  EXPECT_TRUE(IsPlainStatementBody(R"({"statement":"SELECT 1","classification":"read","rows":1})"));
  EXPECT_FALSE(IsPlainStatementBody(R"({"statement":"DELETE","decision":"blocked"})"));
  EXPECT_FALSE(IsPlainStatementBody(R"({"statement":"SELECT","masked_by":"pii","masked_rows":1})"));
  EXPECT_FALSE(
      IsPlainStatementBody(R"j({"statement":"CREATE TABLE t ()","classification":"ddl"})j"));
  EXPECT_TRUE(StatementEvent::HasDecision(R"({"decision":"refused"})"));
  EXPECT_FALSE(StatementEvent::HasDecision(R"({"outcome":"unknown"})"));
}

}  // namespace
}  // namespace sluice::audit
