#include "agent/gcs/bigquery_masking.h"

#include <gtest/gtest.h>

#include "agent/gcs/bigquery_jobs.h"

namespace sluice::agent::gcs {
namespace {

// customers.ssn redacted; no detectors unless asked.
masking::MaskingPolicy Policy(bool detectors = false) {
  static v1::PolicySnapshot s;
  s.Clear();
  s.set_masking_hash_key("0123456789abcdef0123456789abcdef");
  s.add_connections()->set_name("demo");
  auto* r = s.add_masking_rules();
  r->set_name("pii");
  r->mutable_connections()->add_names("demo");
  r->add_columns("customers.ssn");
  if (detectors) r->add_detectors("email");
  r->set_strategy(v1::MASKING_STRATEGY_REDACT);
  return masking::MaskingPolicy(s, s.connections(0), "idp", "alice", {});
}

std::vector<bool> Masked(absl::string_view sql, std::vector<std::string> outputs) {
  masking::MaskingPolicy p = Policy();
  ColumnPlan plan = PlanQueryMasking(p, AnalyzeGoogleSql(sql, "crm"), outputs);
  std::vector<bool> out;
  for (const auto& c : plan) out.push_back(c.has_value());
  return out;
}

TEST(BigQueryMasking, EachOutputColumnIsFollowedToWhatItIsMadeOf) {
  using V = std::vector<bool>;
  EXPECT_EQ(Masked("SELECT id, name, ssn FROM crm.customers", {"id", "name", "ssn"}),
            (V{false, false, true}));
  // Renamed, qualified, through an alias of the table.
  EXPECT_EQ(Masked("SELECT c.ssn AS x, c.name FROM crm.customers c", {"x", "name"}),
            (V{true, false}));
  EXPECT_EQ(Masked("SELECT ssn x FROM customers", {"x"}), (V{true}));
  // Expressions over it, and whole rows of the table.
  EXPECT_EQ(
      Masked("SELECT STRING_AGG(ssn, ',') AS s, COUNT(*) AS n FROM crm.customers", {"s", "n"}),
      (V{true, false}));
  EXPECT_EQ(Masked("SELECT TO_JSON_STRING(c) AS j FROM crm.customers AS c", {"j"}), (V{true}));
  EXPECT_EQ(Masked("SELECT TO_JSON_STRING(customers) AS j FROM crm.customers", {"j"}), (V{true}));
  EXPECT_EQ(Masked("SELECT UPPER(name) AS u FROM crm.customers", {"u"}), (V{false}));
  // A star: by name.
  EXPECT_EQ(Masked("SELECT * FROM crm.customers", {"id", "ssn"}), (V{false, true}));
  // EXCEPT leaves columns out, under their names; REPLACE may put anything under one.
  EXPECT_EQ(Masked("SELECT * EXCEPT (id, name) FROM crm.customers", {"ssn"}), (V{true}));
  EXPECT_EQ(Masked("SELECT c.* EXCEPT (ssn) FROM crm.customers c", {"id", "name"}),
            (V{false, false}));
  EXPECT_EQ(Masked("SELECT * REPLACE (ssn AS name) FROM crm.customers", {"id", "name"}),
            (V{true, true}));
  // Not one output per item (the agent misread the list): every column of a masked table.
  EXPECT_EQ(Masked("SELECT id FROM crm.customers", {"id", "extra"}), (V{true, true}));
  // A star beside a renamed column cannot be told apart: every column of a masked table.
  EXPECT_EQ(Masked("SELECT *, ssn AS x FROM crm.customers", {"id", "ssn", "x"}),
            (V{true, true, true}));
  // What the agent does not read as a select list fails closed.
  EXPECT_EQ(Masked("SELECT AS STRUCT id, ssn FROM crm.customers", {"f0_"}), (V{true}));
  EXPECT_EQ(Masked("WITH t AS (SELECT ssn AS id FROM crm.customers) SELECT id FROM t", {"id"}),
            (V{true}));
  EXPECT_EQ(Masked("SELECT id FROM crm.customers UNION ALL SELECT ssn FROM crm.customers", {"id"}),
            (V{true}));
  // Tables without masked columns are left alone.
  EXPECT_EQ(Masked("SELECT TO_JSON_STRING(o) AS j FROM crm.orders o", {"j"}), (V{false}));
}

TEST(BigQueryMasking, AnswersAreMaskedCellByCellNestedValuesIncluded) {
  masking::MaskingPolicy p = Policy(/*detectors=*/true);
  auto answer = nlohmann::json::parse(R"({
    "schema": {"fields": [{"name": "name"}, {"name": "ssn"}, {"name": "tags"}]},
    "rows": [
      {"f": [{"v": "Ann"}, {"v": "123-45-6789"}, {"v": [{"v": "ann@example.com"}, {"v": "x"}]}]},
      {"f": [{"v": "Bo"}, {"v": null}, {"v": {"f": [{"v": "bo@example.com"}]}}]}
    ]})");
  auto masked = MaskQueryAnswer(
      p, AnalyzeGoogleSql("SELECT name, ssn, tags FROM crm.customers", ""), &answer);
  ASSERT_TRUE(masked.ok()) << masked.status();
  EXPECT_EQ(masked->rows, 2);
  EXPECT_EQ(masked->rules, std::vector<std::string>{"pii"});
  const auto& rows = answer["rows"];
  EXPECT_EQ(rows[0]["f"][0]["v"], "Ann");
  EXPECT_EQ(rows[0]["f"][1]["v"], "[REDACTED]");
  EXPECT_EQ(rows[1]["f"][1]["v"], nullptr);
  const std::string dump = answer.dump();
  EXPECT_EQ(dump.find("ann@example.com"), std::string::npos) << dump;
  EXPECT_EQ(dump.find("bo@example.com"), std::string::npos) << dump;
  EXPECT_NE(dump.find("\"x\""), std::string::npos);

  // Rows that do not match their schema, or no schema: refused, never passed on.
  for (const char* bad :
       {R"({"rows": [{"f": [{"v": "1"}]}]})",
        R"({"schema": {"fields": [{"name": "a"}, {"name": "b"}]}, "rows": [{"f": [{"v": "1"}]}]})",
        R"({"schema": {"fields": [{"name": "a"}]}, "rows": [{"g": 1}]})",
        R"({"schema": {"fields": [{"name": "a"}]}, "rows": "many"})"}) {
    auto j = nlohmann::json::parse(bad);
    EXPECT_FALSE(MaskQueryAnswer(p, AnalyzeGoogleSql("SELECT a FROM t", ""), &j).ok()) << bad;
  }
  // No rows (a job's first answer, a DML's): nothing to do.
  auto none = nlohmann::json::parse(R"({"jobComplete": false})");
  EXPECT_TRUE(MaskQueryAnswer(p, AnalyzeGoogleSql("SELECT 1", ""), &none).ok());
}

TEST(BigQueryJobs, AJobIsFoundByItsOwnerOnly) {
  BigQueryJobs jobs(/*max_jobs=*/2, absl::Hours(1));
  const absl::Time now = absl::Now();
  BigQueryJob job{"demo", "p", "j1", "idp", "alice", nullptr, {}};
  ASSERT_TRUE(jobs.Bind(job, now));
  EXPECT_TRUE(jobs.Find("demo", "p", "j1", "idp", "alice", now));
  EXPECT_FALSE(jobs.Find("demo", "p", "j1", "idp", "bob", now));
  EXPECT_FALSE(jobs.Find("other", "p", "j1", "idp", "alice", now));
  EXPECT_FALSE(jobs.Find("demo", "p", "j1", "other-idp", "alice", now));
  EXPECT_TRUE(jobs.OwnedByAnother("demo", "p", "j1", "idp", "bob", now));
  EXPECT_FALSE(jobs.OwnedByAnother("demo", "p", "j1", "idp", "alice", now));
  // Bob cannot take Alice's job id over.
  BigQueryJob taken = job;
  taken.subject = "bob";
  EXPECT_FALSE(jobs.Bind(taken, now));
  EXPECT_TRUE(jobs.Find("demo", "p", "j1", "idp", "alice", now));
  // Expiry, and the oldest forgotten first when full.
  EXPECT_FALSE(jobs.Find("demo", "p", "j1", "idp", "alice", now + absl::Hours(2)));
  ASSERT_TRUE(jobs.Bind({"demo", "p", "j2", "idp", "alice", nullptr, {}}, now));
  ASSERT_TRUE(jobs.Bind({"demo", "p", "j3", "idp", "alice", nullptr, {}}, now));
  EXPECT_FALSE(jobs.Find("demo", "p", "j1", "idp", "alice", now));
  EXPECT_TRUE(jobs.Find("demo", "p", "j3", "idp", "alice", now));
  EXPECT_LE(jobs.size(), 2u);
}

}  // namespace
}  // namespace sluice::agent::gcs
