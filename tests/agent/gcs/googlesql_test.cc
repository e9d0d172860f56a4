#include "agent/gcs/googlesql.h"

#include <gtest/gtest.h>

namespace sluice::agent::gcs {
namespace {

using session::Relation;
using session::StatementClass;

GoogleSqlAnalysis A(absl::string_view sql) { return AnalyzeGoogleSql(sql, "ds"); }

bool Guarded(const GoogleSqlAnalysis& a, absl::string_view what) {
  for (const auto& s : a.statements) {
    for (const auto& g : s.guarded) {
      if (g == what) return true;
    }
  }
  return false;
}

TEST(GoogleSql, QueriesAreReadsWithTheirTables) {
  auto a =
      A("SELECT name, ssn FROM `demo-project.crm.customers` c JOIN crm.orders o ON c.id = o.id");
  EXPECT_EQ(a.overall, StatementClass::kRead);
  ASSERT_EQ(a.statements.size(), 1u);
  EXPECT_EQ(a.statements[0].relations,
            (std::vector<Relation>{{"crm", "customers"}, {"crm", "orders"}}));
  EXPECT_EQ(a.projects, std::vector<std::string>{"demo-project"});

  a = A("WITH t AS (SELECT * FROM events) SELECT COUNT(*) FROM t, other_ds.x");
  EXPECT_EQ(a.overall, StatementClass::kRead);
  EXPECT_EQ(a.statements[0].relations,
            (std::vector<Relation>{{"ds", "events"}, {"ds", "t"}, {"other_ds", "x"}}));

  // Unquoted project with dashes, a wildcard table, quoted parts.
  a = A("select * from my-proj.logs.events_* where _table_suffix > '2026'");
  EXPECT_EQ(a.statements[0].relations, (std::vector<Relation>{{"logs", "events_*"}}));
  EXPECT_EQ(a.projects, std::vector<std::string>{"my-proj"});
  a = A("SELECT 1 FROM `p`.`d`.`T`");
  EXPECT_EQ(a.statements[0].relations, (std::vector<Relation>{{"d", "t"}}));
  EXPECT_EQ(A("(SELECT 1) UNION ALL (SELECT 2)").overall, StatementClass::kRead);
}

TEST(GoogleSql, StringsAndCommentsHideNothing) {
  // Keywords inside strings, raw strings, triple-quoted strings and comments are not statements.
  auto a =
      A("SELECT 'DROP TABLE x; DELETE FROM y', r'\\'; DROP', \"\"\"multi\nline; DROP\"\"\" "
        "# DROP TABLE z;\n -- ; DELETE FROM q\n /* ; DROP SCHEMA s; */ FROM t");
  EXPECT_EQ(a.overall, StatementClass::kRead) << a.parse_error;
  ASSERT_EQ(a.statements.size(), 1u);
  // A second statement after the string is seen.
  a = A("SELECT 'a;b'; DROP TABLE ds.t");
  EXPECT_EQ(a.overall, StatementClass::kDdl);
  EXPECT_TRUE(Guarded(a, "drop_table"));
  // What cannot be read fails closed.
  for (absl::string_view bad :
       {"SELECT 'open", "SELECT 1 /* open", "SELECT `open", "SELECT 'a\nb'", "SELECT \"\"\"open"}) {
    auto b = A(bad);
    EXPECT_EQ(b.overall, StatementClass::kUnknown) << bad;
    EXPECT_FALSE(b.parse_error.empty()) << bad;
  }
}

TEST(GoogleSql, WritesDdlDclAndTheirGuardrails) {
  EXPECT_EQ(A("INSERT INTO ds.t (a) VALUES (1)").overall, StatementClass::kWrite);
  EXPECT_EQ(A("INSERT ds.t (a) SELECT a FROM ds.u").statements[0].relations,
            (std::vector<Relation>{{"ds", "t"}, {"ds", "u"}}));
  auto a = A("DELETE FROM ds.t WHERE true");
  EXPECT_EQ(a.overall, StatementClass::kWrite);
  EXPECT_TRUE(Guarded(a, "delete_without_where"));
  EXPECT_TRUE(Guarded(A("delete ds.t where 1 = 1"), "delete_without_where"));
  EXPECT_FALSE(Guarded(A("DELETE FROM ds.t WHERE id = 3"), "delete_without_where"));
  EXPECT_TRUE(Guarded(A("UPDATE ds.t SET a = 1 WHERE TRUE"), "update_without_where"));
  EXPECT_FALSE(
      Guarded(A("UPDATE ds.t SET a = 1 WHERE a IN (SELECT 1 WHERE TRUE)"), "update_without_where"));
  EXPECT_EQ(A("MERGE ds.t USING ds.s ON t.id = s.id WHEN MATCHED THEN DELETE").overall,
            StatementClass::kWrite);

  a = A("DROP SCHEMA IF EXISTS `proj.crm` CASCADE");
  EXPECT_EQ(a.overall, StatementClass::kDdl);
  EXPECT_TRUE(Guarded(a, "drop_database"));
  EXPECT_EQ(a.statements[0].relations.front(), (Relation{"crm", ""}));
  a = A("DROP TABLE crm.customers");
  EXPECT_TRUE(Guarded(a, "drop_table"));
  EXPECT_EQ(a.statements[0].kind, "DROP TABLE");
  EXPECT_TRUE(Guarded(A("TRUNCATE TABLE crm.customers"), "truncate"));
  EXPECT_EQ(A("CREATE OR REPLACE TABLE ds.x AS SELECT * FROM ds.y").overall, StatementClass::kDdl);
  EXPECT_EQ(A("ALTER TABLE ds.x ADD COLUMN c STRING").overall, StatementClass::kDdl);

  EXPECT_EQ(A("GRANT `roles/bigquery.dataViewer` ON SCHEMA ds TO 'user:a@b.c'").overall,
            StatementClass::kDcl);
  EXPECT_EQ(
      A("CREATE ROW ACCESS POLICY p ON ds.t GRANT TO ('user:a@b.c') FILTER USING (true)").overall,
      StatementClass::kDcl);

  a = A(
      "EXPORT DATA OPTIONS (uri = 'gs://b/*.csv', format = 'CSV') AS SELECT * FROM crm.customers");
  EXPECT_EQ(a.overall, StatementClass::kWrite);
  EXPECT_TRUE(Guarded(a, "export_data"));
  EXPECT_EQ(a.statements[0].relations, (std::vector<Relation>{{"crm", "customers"}}));
  EXPECT_TRUE(Guarded(A("LOAD DATA INTO ds.t FROM FILES (uris = ['gs://b/x.csv'])"), "load_data"));

  // The most privileged statement of a text decides.
  EXPECT_EQ(A("SELECT 1; GRANT x ON TABLE ds.t TO 'user:a'; INSERT ds.t VALUES (1)").overall,
            StatementClass::kDcl);
}

TEST(GoogleSql, WhatTheAgentCannotSeeIntoFailsClosed) {
  for (absl::string_view sql :
       {"DECLARE x INT64 DEFAULT 1", "SET x = 2", "BEGIN SELECT 1; END",
        "EXECUTE IMMEDIATE 'DROP TABLE ds.t'", "IF true THEN DELETE FROM ds.t WHERE true; END IF",
        "LOOP LEAVE; END LOOP", "ASSERT (SELECT COUNT(*) FROM ds.t) > 0",
        "SELECT * FROM EXTERNAL_QUERY('conn', 'DELETE FROM t')",
        "WITH x AS (SELECT 1) INSERT INTO ds.t SELECT * FROM x", "FROBNICATE ds.t", "1 + 1"}) {
    auto a = A(sql);
    EXPECT_EQ(a.overall, StatementClass::kUnknown) << sql;
    EXPECT_FALSE(a.parse_error.empty()) << sql;
  }
  EXPECT_NE(A("DECLARE x INT64").parse_error.find("procedural language (DECLARE)"),
            std::string::npos);
  // Transaction control is let through as such.
  EXPECT_EQ(A("BEGIN TRANSACTION; SELECT 1; COMMIT TRANSACTION").overall, StatementClass::kOther);
  EXPECT_EQ(A("").overall, StatementClass::kEmpty);
  EXPECT_EQ(A(" ; -- nothing\n").overall, StatementClass::kEmpty);
  EXPECT_EQ(AnalyzeGoogleSql(std::string(kMaxGoogleSqlBytes + 1, ' '), "").overall,
            StatementClass::kUnknown);
}

TEST(GoogleSql, CallsAreListed) {
  auto a = A("SELECT ML.PREDICT(MODEL ds.m, TABLE ds.t), SAFE_CAST(x AS INT64), ds.f(1) FROM ds.t");
  const auto& f = a.statements[0].functions;
  EXPECT_NE(std::find(f.begin(), f.end(), "ml.predict"), f.end());
  EXPECT_NE(std::find(f.begin(), f.end(), "safe_cast"), f.end());
  EXPECT_NE(std::find(f.begin(), f.end(), "ds.f"), f.end());
}

}  // namespace
}  // namespace sluice::agent::gcs
