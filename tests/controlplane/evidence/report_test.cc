#include "controlplane/evidence/report.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "controlplane/store/sqlite_store.h"
#include "tests/controlplane/store/event_chain.h"

namespace sluice::controlplane::evidence {
namespace {

using Json = nlohmann::ordered_json;

std::unique_ptr<SqliteStore> FreshStore(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/report_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto store = *SqliteStore::Open(dir + "/sluice.db");
  EXPECT_TRUE(store->CreateEnrollment({"h", "a", {{"vpc", "a"}}, 0, 1000, {}}).ok());
  EXPECT_TRUE(store->ConsumeEnrollment("h", "s", 1, {}).ok());
  return store;
}

const Json& Control(const Json& report, const std::string& id) {
  for (const Json& c : report["controls"]) {
    if (c["id"] == id) return c;
  }
  ADD_FAILURE() << "no control " << id;
  static const Json none;
  return none;
}

// A window [100, 1000) ms with one of each thing the report counts, and events before and after.
class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = FreshStore(::testing::UnitTest::GetInstance()->current_test_info()->name());
    Chain chain;
    const std::string bob_start =
        R"({"connection":"demo","client_addr":"10.0.0.7:5000","tls":true,"subject":"bob","issuer":"idp",)"
        R"("groups":["ci"],"access":"read","rule":"readers","tls_version":"TLSv1.3",)"
        R"("tls_cipher":"TLS_AES_256_GCM_SHA384","upstream_tls":false,"token_alg":"ES256",)"
        R"("token_expires_unix":1300,"token_issued_unix":1000})";
    std::vector<v1::AuditEvent> events = {
        Event(
            9, "session_start", "s0",
            R"({"connection":"demo","client_addr":"10.0.0.9:1","tls":true,"subject":"alice","issuer":"idp","access":"admin","rule":"admins"})"),
        // The window starts: a statement of a session that started before it.
        Event(
            10, "statement", "s0",
            R"({"statement":"DELETE FROM t","classification":"write","decision":"blocked","guardrail":"prod-safety","match":"delete_without_where","sqlstate":"42501"})",
            true),
        Event(11, "session_start", "s1", bob_start),
        Event(
            12, "statement", "s1",
            R"({"statement":"UPDATE t SET a = 1","classification":"write","decision":"refused","reason":"read-only","sqlstate":"25006"})",
            true),
        Event(
            13, "session_refused", "s2",
            R"({"connection":"demo","client_addr":"10.0.0.8:1","tls":true,"subject":"carol","issuer":"idp","reason":"Sluice: no access rule lets \"carol\" use connection \"demo\"","sqlstate":"28000"})"),
        Event(
            14, "session_refused", "s3",
            R"({"connection":"demo","client_addr":"10.0.0.8:2","tls":true,"subject":"","reason":"Sluice: token rejected: signature does not verify","sqlstate":"28P01"})"),
        Event(
            15, "approval", "s1",
            R"j({"statement":"CREATE TABLE t2 (a int)","classification":"ddl","decision":"approved","approval_id":7,"guardrail":"prod-safety","approval_policy":"dba"})j"),
        Event(16, "statement", "s1",
              R"j({"statement":"CREATE TABLE t2 (a int)","classification":"ddl","rows":0})j"),
        Event(
            17, "statement", "s1",
            R"({"statement":"SELECT * FROM c","classification":"read","masked_by":"pii,cards","masked_rows":3})"),
        Event(18, "alert", "s1",
              R"({"statement":"SELECT 1","decision":"alerted","guardrail":"watch","match":"x"})"),
    };
    ASSERT_TRUE(store_->AppendAgentEvents("a", chain.BatchOf(events)).ok());
    chain.Restart(18, 50);  // the agent restarted: its sequence jumps, its chain goes on
    ASSERT_TRUE(
        store_
            ->AppendAgentEvents(
                "a", chain.BatchOf({Event(50, "session_end", "s1", R"({"reason":"closed"})"),
                                    Event(51, "statement", "s0", R"({"statement":"oops"})", true)}))
            .ok());
    chain.Restart(51, 120);  // after the window
    ASSERT_TRUE(
        store_
            ->AppendAgentEvents(
                "a", chain.BatchOf({Event(120, "session_start", "s4",
                                          R"({"subject":"dave","issuer":"idp","access":"read"})")}))
            .ok());

    StoredResource issuer, connection;
    issuer.resource.mutable_issuer()->set_name("idp");
    issuer.resource.mutable_issuer()->set_issuer("https://idp.test");
    connection.resource.mutable_connection()->set_name("demo");
    (*connection.resource.mutable_connection()->mutable_agents())["vpc"] = "a";
    connection.sealed_secret = "sealed";
    StoredResource retention;
    retention.resource.mutable_retention_policy()->set_name("prod-90d");
    retention.resource.mutable_retention_policy()->mutable_connections()->add_names("demo");
    retention.resource.mutable_retention_policy()->mutable_keep()->set_seconds(90 * 86400);
    ASSERT_TRUE(store_->UpsertResources({issuer, connection, retention}, "tester", 50).ok());
    ASSERT_TRUE(store_->SetLegalHold("s1", "case 7", "tester", 700, false).ok());

    ApprovalRecord approval;
    approval.approval.set_status("approved");
    approval.approval.set_subject("bob");
    approval.approval.set_issuer("idp");
    approval.approval.set_created_unix_ms(300);
    v1::ApprovalVote* vote = approval.approval.add_votes();
    vote->set_approver("dora (idp)");
    vote->set_approved(true);
    ASSERT_TRUE(store_->CreateApproval(approval).ok());
    approval.approval.set_created_unix_ms(5000);  // after the window
    ASSERT_TRUE(store_->CreateApproval(approval).ok());

    for (const AuditRecord& r : std::vector<AuditRecord>{
             {0, 200, "tester", "Policy.update", "Issuer/idp", "ok", "policy version 2"},
             {0, 400, "bob (idp)", "Approval.refuse_self", "Approval/1", "PERMISSION_DENIED", ""},
             {0, 600, "anonymous", "AdminService.Apply", "", "UNAUTHENTICATED", ""},
             {0, 700, "tester", "AdminService.HoldSession", "Session/s1", "ok", ""},
             {0, 800, "controlplane", "Retention.purge", "0 sessions", "ok", ""},
             {0, 3000, "tester", "Policy.update", "Issuer/idp", "ok", "after the window"}}) {
      ASSERT_TRUE(store_->AppendAudit(r).ok());
    }
  }

  Json Report(size_t max_listed = 500, size_t max_event_ids = 1000) {
    ReportOptions o;
    o.from_ms = 100;
    o.until_ms = 1000;
    o.now_ms = 2000;
    o.max_listed = max_listed;
    o.max_event_ids = max_event_ids;
    auto report = BuildReport(*store_, o);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : Json();
  }

  std::unique_ptr<SqliteStore> store_;
};

TEST_F(ReportTest, CountsEachControlFromTheWindowOnly) {
  Json r = Report();
  EXPECT_TRUE(r["verify"]["ok"].get<bool>()) << r["verify"].dump();
  ASSERT_EQ(r["controls"].size(), 17u);

  const Json& ac2 = Control(r, "AC-2")["counts"];
  EXPECT_EQ(ac2["identities"], 3);  // alice (from the session index), bob, carol
  EXPECT_EQ(ac2["issuers_configured"], 1);
  EXPECT_EQ(ac2["issuer_changes"], 1);

  const Json& ac3 = Control(r, "AC-3")["counts"];
  EXPECT_EQ(ac3["sessions"], 3);
  EXPECT_EQ(ac3["sessions_granted"], 1);
  EXPECT_EQ(ac3["refused_by_reason"], Json::parse(R"({"no_access_rule":1,"token_rejected":1})"));
  EXPECT_EQ(ac3["statements_refused"], 2);

  const Json& ac5 = Control(r, "AC-5")["counts"];
  EXPECT_EQ(ac5["approval_requests"], 1);
  EXPECT_EQ(ac5["decided_by_others_than_requester"], 1);
  EXPECT_EQ(ac5["approved_by_requester"], 0);
  EXPECT_EQ(ac5["self_approvals_refused"], 1);

  const Json& ac6 = Control(r, "AC-6");
  EXPECT_EQ(ac6["counts"]["sessions_by_access"], Json::parse(R"({"read":1})"));
  EXPECT_EQ(ac6["counts"]["writes_on_read_grants"], 1);
  EXPECT_EQ(ac6["evidence"]["credentials_per_agent_now"][0]["connections"],
            Json::parse(R"(["demo"])"));

  EXPECT_EQ(Control(r, "AC-17")["counts"]["tls"], 1);
  EXPECT_EQ(Control(r, "AU-2/AU-3")["counts"]["events"], 11);
  EXPECT_EQ(Control(r, "AU-2/AU-3")["counts"]["by_type"]["statement"], 5);

  const Json& au6 = Control(r, "AU-6")["counts"]["rule_hits"];
  EXPECT_EQ(au6["guardrails"]["prod-safety"], Json::parse(R"({"approved":1,"blocked":1})"));
  EXPECT_EQ(au6["masking_rules"]["pii"]["masked_rows"], 3);

  const Json& au12 = Control(r, "AU-12")["counts"];
  EXPECT_EQ(au12["agents_reporting"], 1);
  EXPECT_EQ(au12["sequence_gaps"], 0);
  EXPECT_EQ(au12["agent_restarts"], 1);

  const Json& cm5 = Control(r, "CM-5");
  EXPECT_EQ(cm5["counts"]["ddl_ran"], 1);
  EXPECT_EQ(cm5["counts"]["ddl_ran_with_approval"], 1);
  EXPECT_EQ(cm5["evidence"]["ddl"][0]["approval_id"], 7);

  const Json& ia2 = Control(r, "IA-2/IA-5")["counts"];
  EXPECT_EQ(ia2["authentication_failures"], 1);
  EXPECT_EQ(ia2["failures_by_reason"]["signature does not verify"], 1);
  EXPECT_EQ(ia2["admin_api_authentication_failures"], 1);
  EXPECT_EQ(ia2["token_lifetimes"]["max_s"], 300);

  const Json& ir4 = Control(r, "IR-4/IR-5");
  EXPECT_EQ(ir4["counts"]["blocked"], 1);
  EXPECT_EQ(ir4["counts"]["alerts"], 1);
  EXPECT_EQ(ir4["evidence"]["blocked"][0]["subject"],
            "alice");  // who ran it, from the session index
  EXPECT_EQ(ir4["evidence"]["blocked"][0]["event_id"], "a/10");

  EXPECT_EQ(Control(r, "SC-8/SC-13")["counts"]["client_tls_versions"],
            Json::parse(R"({"TLSv1.3":1})"));
  EXPECT_EQ(Control(r, "SC-8/SC-13")["counts"]["upstream_plaintext"], 1);
  EXPECT_EQ(Control(r, "SC-28")["counts"]["connection_secrets_encrypted"], 1);
  EXPECT_EQ(Control(r, "SC-28")["counts"]["masked_statements"], 1);

  const Json& si4 = Control(r, "SI-4")["counts"];
  EXPECT_EQ(si4["statements"], 5);
  EXPECT_EQ(si4["statement_errors"], 1);
  EXPECT_EQ(si4["admin_calls_refused"], 1);
  const Json& au11 = Control(r, "AU-11");
  EXPECT_EQ(au11["counts"]["retention_policies"], 1);
  EXPECT_EQ(au11["counts"]["sessions_on_legal_hold"], 1);
  EXPECT_EQ(au11["counts"]["legal_hold_changes"], 1);
  EXPECT_EQ(au11["counts"]["purges"], 1);
  EXPECT_EQ(au11["evidence"]["retention_per_connection_now"],
            Json::parse(R"([{"connection":"demo","keep_s":7776000}])"));
}

TEST_F(ReportTest, ListsAndEventIdsAreCappedAndSaySo) {
  Json r = Report(1, 2);
  const Json& au2 = Control(r, "AU-2/AU-3");
  EXPECT_EQ(au2["event_ids"], Json::parse(R"(["a/10","a/11"])"));
  EXPECT_EQ(au2["event_ids_truncated"], 9);
  const Json& ac3 = Control(r, "AC-3");
  EXPECT_EQ(ac3["evidence"]["session_decisions"].size(), 1u);
  EXPECT_EQ(ac3["evidence"]["session_decisions_left_out"], 2);
  EXPECT_EQ(ac3["counts"]["sessions"], 3);  // counts are never capped
}

TEST_F(ReportTest, PurgedSessionsCountAsPurgedRecordsOnly) {
  PurgeRequest purge;
  purge.cutoff_ms_by_connection["demo"] = 1000;  // s1 ended before, but is on legal hold
  purge.actor = "tester";
  purge.now_ms = 900;
  auto purged = store_->PurgeSessions(purge);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(purged->sessions(), 2u);  // the refused s2 and s3
  EXPECT_EQ(purged->held(), 1u);
  Json r = Report();
  EXPECT_TRUE(r["verify"]["ok"].get<bool>()) << r["verify"].dump();
  const Json& au11 = Control(r, "AU-11");
  EXPECT_EQ(au11["counts"]["purged_records_in_window"], 2);
  EXPECT_EQ(au11["counts"]["purges"], 2);  // the one recorded in SetUp and this one
  EXPECT_EQ(au11["not_recorded"].size(), 1u);
  EXPECT_EQ(Control(r, "AU-2/AU-3")["counts"]["by_type"]["purged"], 2);
  EXPECT_EQ(Control(r, "AC-3")["counts"]["sessions_refused"], 0);
}

TEST(Report, ARefusalTheAgentNamesIsCountedByItsName) {
  // A session limit and a full audit spool both answer 53300: the event's "refusal" tells them
  // apart.
  auto store = FreshStore("refusal_kind");
  Chain chain;
  ASSERT_TRUE(
      store
          ->AppendAgentEvents(
              "a",
              chain.BatchOf(
                  {Event(
                       20, "session_refused", "r1",
                       R"({"connection":"demo","subject":"alice","issuer":"idp","reason":"Sluice: too many sessions for \"alice\" on connection \"demo\" (limit 3 per caller on this agent); close one and try again","sqlstate":"53300","refusal":"session_limit"})"),
                   Event(
                       21, "session_refused", "r2",
                       R"({"connection":"demo","subject":"","reason":"Sluice: the agent cannot record audit events now","sqlstate":"53300"})")}))
          .ok());
  ReportOptions o;
  o.from_ms = 100;
  o.until_ms = 1000;
  o.now_ms = 2000;
  auto report = BuildReport(*store, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(Control(*report, "AC-3")["counts"]["refused_by_reason"],
            Json::parse(R"({"audit_unavailable":1,"session_limit":1})"));
}

TEST(Report, RefusalsAreCountedByTheKindTheAgentWrote) {
  // Refusals on other wires (MySQL, HTTP): messages and codes the report has never seen, a kind
  // named in refusal_kind. Each lands under its control, none as "other".
  auto store = FreshStore("typed_refusals");
  Chain chain;
  ASSERT_TRUE(
      store
          ->AppendAgentEvents(
              "a",
              chain.BatchOf(
                  {Event(
                       20, "session_refused", "m1",
                       R"({"connection":"shop","client_addr":"10.0.0.5:1","tls":true,"subject":"","issuer":"",)"
                       R"j("reason":"Access denied for user 'bot' (using password: YES)","sqlstate":"28000",)j"
                       R"("refusal_kind":"token_rejected","detail":"the token expired","connection_protocol":"mysql"})"),
                   Event(
                       21, "session_refused", "m2",
                       R"({"connection":"shop","client_addr":"10.0.0.5:2","tls":false,"subject":"","issuer":"",)"
                       R"("reason":"Connections using insecure transport are prohibited","sqlstate":"HY000",)"
                       R"("refusal_kind":"tls_required","connection_protocol":"mysql"})"),
                   Event(
                       22, "session_refused", "h1",
                       R"({"connection":"s3","client_addr":"10.0.0.6:1","tls":true,"subject":"bob","issuer":"idp",)"
                       R"("reason":"403 Forbidden","refusal_kind":"no_access_rule","connection_protocol":"http"})"),
                   Event(
                       23, "session_start", "m3",
                       R"({"connection":"shop","client_addr":"10.0.0.5:3","tls":true,"subject":"carol","issuer":"idp",)"
                       R"("access":"read","rule":"readers","connection_protocol":"mysql"})"),
                   Event(
                       24, "statement", "m3",
                       R"({"statement":"DELETE FROM orders","classification":"write","decision":"refused",)"
                       R"("reason":"read-only here","sqlstate":"HY000","refusal_kind":"read_only"})",
                       true)}))
          .ok());
  ReportOptions o;
  o.from_ms = 100;
  o.until_ms = 1000;
  o.now_ms = 2000;
  auto report = BuildReport(*store, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(Control(*report, "AC-3")["counts"]["refused_by_reason"],
            Json::parse(R"({"no_access_rule":1,"tls_required":1,"token_rejected":1})"));
  EXPECT_EQ(Control(*report, "IA-2/IA-5")["counts"]["authentication_failures"], 1);
  EXPECT_EQ(Control(*report, "IA-2/IA-5")["evidence"]["authentication_failures"][0]["reason"],
            "the token expired");
  EXPECT_EQ(Control(*report, "AC-17")["counts"]["refused_without_tls"], 1);
  EXPECT_EQ(Control(*report, "AC-6")["counts"]["writes_on_read_grants"], 1);
}

TEST_F(ReportTest, AnEmptyWindowIsRefused) {
  ReportOptions o;
  o.from_ms = 500;
  o.until_ms = 500;
  EXPECT_EQ(BuildReport(*store_, o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sluice::controlplane::evidence
