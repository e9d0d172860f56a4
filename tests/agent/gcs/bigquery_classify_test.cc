#include "agent/gcs/bigquery_classify.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace sluice::agent::gcs {
namespace {

using session::Relation;
using session::StatementClass;

const std::multimap<std::string, std::string> kNone;

BigQueryRequest C(absl::string_view method, absl::string_view path, absl::string_view body = "",
                  const std::multimap<std::string, std::string>& query = kNone) {
  return ClassifyBigQuery(method, path, query, body, "demo");
}

bool Has(const std::vector<std::string>& v, absl::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(BigQueryClassify, ResourcesByMethod) {
  struct Case {
    const char* method;
    const char* path;
    const char* kind;
    StatementClass cls;
  } cases[] = {
      {"GET", "/bigquery/v2/projects", "projects.list", StatementClass::kRead},
      {"GET", "/bigquery/v2/projects/demo/datasets", "datasets.list", StatementClass::kRead},
      {"GET", "/bigquery/v2/projects/demo/datasets/crm", "datasets.get", StatementClass::kRead},
      {"PATCH", "/bigquery/v2/projects/demo/datasets/crm", "datasets.patch", StatementClass::kDdl},
      {"DELETE", "/bigquery/v2/projects/demo/datasets/crm", "datasets.delete",
       StatementClass::kDdl},
      {"GET", "/bigquery/v2/projects/demo/datasets/crm/tables", "tables.list",
       StatementClass::kRead},
      {"GET", "/bigquery/v2/projects/demo/datasets/crm/tables/customers", "tables.get",
       StatementClass::kRead},
      {"DELETE", "/bigquery/v2/projects/demo/datasets/crm/tables/customers", "tables.delete",
       StatementClass::kDdl},
      {"GET", "/bigquery/v2/projects/demo/datasets/crm/tables/customers/data", "tabledata.list",
       StatementClass::kRead},
      {"POST", "/bigquery/v2/projects/demo/datasets/crm/tables/customers/insertAll",
       "tabledata.insertAll", StatementClass::kWrite},
      {"POST", "/bigquery/v2/projects/demo/datasets/crm/tables/customers:setIamPolicy",
       "tables.setIamPolicy", StatementClass::kDcl},
      {"POST", "/bigquery/v2/projects/demo/datasets/crm/tables/customers:getIamPolicy",
       "tables.getIamPolicy", StatementClass::kRead},
      {"GET", "/bigquery/v2/projects/demo/jobs/job_1", "jobs.get", StatementClass::kOther},
      {"GET", "/bigquery/v2/projects/demo/queries/job_1", "jobs.getQueryResults",
       StatementClass::kOther},
      {"POST", "/bigquery/v2/projects/demo/jobs/job_1/cancel", "jobs.cancel",
       StatementClass::kOther},
  };
  for (const Case& c : cases) {
    BigQueryRequest r = C(c.method, c.path);
    EXPECT_TRUE(r.refusal.empty()) << c.path << ": " << r.refusal;
    EXPECT_EQ(r.kind, c.kind) << c.path;
    EXPECT_EQ(r.cls, c.cls) << c.path;
  }
  BigQueryRequest r = C("DELETE", "/bigquery/v2/projects/demo/datasets/crm");
  EXPECT_TRUE(Has(r.guarded, "drop_database"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"crm", ""}}));
  r = C("DELETE", "/bigquery/v2/projects/demo/datasets/crm/tables/Customers");
  EXPECT_TRUE(Has(r.guarded, "drop_table"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"crm", "customers"}}));
  EXPECT_EQ(C("GET", "/bigquery/v2/projects/demo/jobs/job_1").job_id, "job_1");
  // Access entries make a dataset change DCL.
  EXPECT_EQ(C("PATCH", "/bigquery/v2/projects/demo/datasets/crm", R"({"access":[]})").cls,
            StatementClass::kDcl);
  EXPECT_EQ(C("POST", "/bigquery/v2/projects/demo/datasets",
              R"({"datasetReference":{"datasetId":"x"},"access":[{"role":"OWNER"}]})")
                .cls,
            StatementClass::kDcl);
}

TEST(BigQueryClassify, QueriesAreDecidedByTheirSql) {
  BigQueryRequest r = C("POST", "/bigquery/v2/projects/demo/queries",
                        R"({"query":"SELECT name FROM crm.customers","useLegacySql":false})");
  EXPECT_TRUE(r.refusal.empty()) << r.refusal;
  EXPECT_EQ(r.kind, "jobs.query");
  EXPECT_EQ(r.cls, StatementClass::kRead);
  EXPECT_TRUE(r.creates_job);
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"crm", "customers"}}));
  EXPECT_EQ(r.sql, "SELECT name FROM crm.customers");

  r = C("POST", "/bigquery/v2/projects/demo/queries",
        R"({"query":"DELETE FROM t WHERE true","useLegacySql":false,
            "defaultDataset":{"datasetId":"crm"}})");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_TRUE(Has(r.guarded, "delete_without_where"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"crm", "t"}}));

  // Options the agent does not know what they do are refused: external tables would read Cloud
  // Storage as the service account, sessions carry state between requests.
  for (const char* option : {R"("tableDefinitions":{"t":{"sourceUris":["gs://b/*"]}})",
                             R"("createSession":true)", R"("connectionProperties":[])",
                             R"("userDefinedFunctionResources":[])", R"("continuous":true)"}) {
    r = C("POST", "/bigquery/v2/projects/demo/queries",
          absl::StrCat(R"({"query":"SELECT 1","useLegacySql":false,)", option, "}"));
    EXPECT_FALSE(r.refusal.empty()) << option;
    EXPECT_EQ(r.cls, StatementClass::kUnknown) << option;
  }
  r = C("POST", "/bigquery/v2/projects/demo/jobs",
        R"({"configuration":{"query":{"query":"SELECT 1","useLegacySql":false},
            "reservation":"x"}})");
  EXPECT_NE(r.refusal.find("the job option reservation"), std::string::npos) << r.refusal;
  // What bq sends is known.
  EXPECT_TRUE(C("POST", "/bigquery/v2/projects/demo/jobs",
                R"({"configuration":{"query":{"query":"SELECT 1","useLegacySql":false,
                    "continuous":false}},"jobReference":{"jobId":"j","projectId":"demo"}})")
                  .refusal.empty());

  // The service account's job history shows every caller's SQL.
  for (const char* sql : {"SELECT query FROM `region-us`.INFORMATION_SCHEMA.JOBS",
                          "SELECT query FROM region-us.INFORMATION_SCHEMA.JOBS_BY_PROJECT",
                          "SELECT * FROM `demo.region-eu.INFORMATION_SCHEMA.SESSIONS_BY_USER`"}) {
    r = C("POST", "/bigquery/v2/projects/demo/queries",
          absl::StrCat(R"({"useLegacySql":false,"query":")", sql, R"("})"));
    EXPECT_NE(r.refusal.find("other callers' jobs"), std::string::npos) << sql << ": " << r.refusal;
  }
  EXPECT_TRUE(C("POST", "/bigquery/v2/projects/demo/queries",
                R"({"useLegacySql":false,"query":"SELECT * FROM crm.INFORMATION_SCHEMA.TABLES"})")
                  .refusal.empty());

  // A #standardSQL marker is GoogleSQL too; legacy SQL (the API's default) is refused.
  EXPECT_TRUE(
      C("POST", "/bigquery/v2/projects/demo/queries", R"({"query":"#standardSQL\nSELECT 1"})")
          .refusal.empty());
  r = C("POST", "/bigquery/v2/projects/demo/queries", R"({"query":"SELECT 1"})");
  EXPECT_NE(r.refusal.find("legacy SQL is not let through"), std::string::npos) << r.refusal;
  r = C("POST", "/bigquery/v2/projects/demo/queries",
        R"({"query":"DECLARE x INT64","useLegacySql":false})");
  EXPECT_EQ(r.cls, StatementClass::kUnknown);
  EXPECT_NE(r.refusal.find("procedural language"), std::string::npos) << r.refusal;
}

TEST(BigQueryClassify, AJobIsWhatItsConfigurationDoes) {
  // A reading query with a destination table writes it; WRITE_TRUNCATE empties it first.
  BigQueryRequest r = C("POST", "/bigquery/v2/projects/demo/jobs",
                        R"({"configuration":{"query":{"query":"SELECT * FROM crm.customers",
                            "useLegacySql":false,"destinationTable":{"projectId":"demo",
                            "datasetId":"crm","tableId":"copy"},"writeDisposition":"WRITE_TRUNCATE"}}})");
  EXPECT_TRUE(r.refusal.empty()) << r.refusal;
  EXPECT_EQ(r.kind, "jobs.insert");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_TRUE(Has(r.guarded, "truncate"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"crm", "copy"}, {"crm", "customers"}}));

  r = C("POST", "/bigquery/v2/projects/demo/jobs",
        R"({"configuration":{"extract":{"sourceTable":{"datasetId":"crm","tableId":"customers"},
            "destinationUris":["gs://b/x.csv"]}}})");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_TRUE(Has(r.guarded, "export_data"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"crm", "customers"}}));
  r = C("POST", "/bigquery/v2/projects/demo/jobs",
        R"({"configuration":{"load":{"destinationTable":{"datasetId":"crm","tableId":"t"}}}})");
  EXPECT_TRUE(Has(r.guarded, "load_data"));
  r = C("POST", "/bigquery/v2/projects/demo/jobs",
        R"({"configuration":{"copy":{"destinationTable":{"datasetId":"a","tableId":"t"},
            "sourceTable":{"datasetId":"crm","tableId":"customers"}}}})");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"a", "t"}, {"crm", "customers"}}));

  // What each copies where the agent cannot mask it.
  EXPECT_EQ(r.copied_from, (std::vector<Relation>{{"crm", "customers"}}));  // (the copy job)
  r = C("POST", "/bigquery/v2/projects/demo/queries",
        R"({"query":"INSERT crm.t2 SELECT ssn FROM crm.customers; INSERT crm.t3 VALUES (1);)"
        R"( EXPORT DATA OPTIONS (uri = 'gs://b/*') AS SELECT * FROM crm.orders",)"
        R"("useLegacySql":false})");
  EXPECT_EQ(r.copied_from, (std::vector<Relation>{{"crm", "customers"}, {"crm", "orders"}}));
  r = C("POST", "/bigquery/v2/projects/demo/queries",
        R"({"query":"SELECT ssn FROM crm.customers","useLegacySql":false})");
  EXPECT_TRUE(r.copied_from.empty());

  for (absl::string_view bad :
       {R"({})", R"({"configuration":{}})",
        R"({"configuration":{"query":{"query":"SELECT 1","useLegacySql":false},
                                    "copy":{}}})",
        R"({"configuration":{"dryRun":true}})", "not json"}) {
    r = C("POST", "/bigquery/v2/projects/demo/jobs", bad);
    EXPECT_FALSE(r.refusal.empty()) << bad;
    EXPECT_EQ(r.cls, StatementClass::kUnknown) << bad;
  }
}

TEST(BigQueryClassify, WhatItDoesNotKnowOrMustNotRelayIsRefused) {
  for (const auto& [method, path] : std::vector<std::pair<const char*, const char*>>{
           {"GET", "/bigquery/v2/projects/demo/jobs"},  // other callers' jobs
           {"POST", "/upload/bigquery/v2/projects/demo/jobs"},
           {"GET", "/bigquery/v2/projects/demo/frobs"},
           {"PUT", "/bigquery/v2/projects"},
           {"GET", "/bigquery/v1/projects"},
           {"POST", "/bigquery/v2/projects/demo/datasets/crm/tables/t:frob"},
           {"GET", "/bigquery/v2/projects/demo/datasets/%zz"},
       }) {
    BigQueryRequest r = C(method, path);
    EXPECT_FALSE(r.refusal.empty()) << method << " " << path;
    EXPECT_EQ(r.cls, StatementClass::kUnknown) << path;
  }
  // Another project than the Connection's.
  BigQueryRequest r = C("GET", "/bigquery/v2/projects/other/datasets");
  EXPECT_NE(r.refusal.find("project other is not this connection's (demo)"), std::string::npos)
      << r.refusal;
  r = C("POST", "/bigquery/v2/projects/demo/jobs",
        R"({"jobReference":{"projectId":"other"},"configuration":{"query":{"query":"SELECT 1",
            "useLegacySql":false}}})");
  EXPECT_FALSE(r.refusal.empty());
  // A credential in the query string.
  r = C("GET", "/bigquery/v2/projects/demo/datasets", "", {{"access_token", "x"}});
  EXPECT_NE(r.refusal.find("a credential in the query (access_token)"), std::string::npos);
}

}  // namespace
}  // namespace sluice::agent::gcs
