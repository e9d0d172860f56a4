#include "agent/postgres/sql_analysis.h"

#include <gtest/gtest.h>

namespace sluice::agent::postgres {
namespace {

struct Case {
  const char* sql;
  StatementClass want;
};

TEST(SqlAnalysis, ClassifiesByTheGrammar) {
  using C = StatementClass;
  const Case cases[] = {
      {"SELECT 1", C::kRead},
      {"select * from t where a = 'x; delete from t'", C::kRead},  // the write is inside a literal
      {"/* DELETE */ SeLeCt -- drop table t\n 1", C::kRead},
      {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", C::kWrite},
      {"WITH x AS (SELECT 1) SELECT * FROM x", C::kRead},
      {"SELECT 1 INTO newtable", C::kDdl},
      {"SELECT 1; DELETE FROM t", C::kWrite},  // the bad statement last
      {"INSERT INTO t VALUES (1)", C::kWrite},
      {"update t set a = 1", C::kWrite},
      {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", C::kWrite},
      {"EXPLAIN DELETE FROM t", C::kRead},
      {"EXPLAIN ANALYZE DELETE FROM t", C::kWrite},
      {"EXPLAIN (ANALYZE off) DELETE FROM t", C::kRead},
      {"EXPLAIN (ANALYZE 1, FORMAT JSON) DELETE FROM t", C::kWrite},
      {"COPY t TO STDOUT", C::kRead},
      {"COPY (DELETE FROM t RETURNING *) TO STDOUT", C::kWrite},
      {"COPY t FROM STDIN", C::kWrite},
      {"COPY t TO PROGRAM 'rm -rf /'", C::kWrite},
      {"COPY t TO '/tmp/x'", C::kWrite},
      {"PREPARE p AS SELECT 1", C::kOther},
      {"PREPARE p AS DELETE FROM t", C::kWrite},
      {"EXECUTE p", C::kOther},
      {"DECLARE c CURSOR FOR SELECT 1", C::kRead},
      {"BEGIN; SET search_path = x; COMMIT", C::kOther},
      {"SET standard_conforming_strings = off", C::kUnknown},
      {"SHOW work_mem", C::kRead},
      {"CALL p()", C::kWrite},
      {"LOCK TABLE t", C::kWrite},
      {"CREATE TABLE t (a int)", C::kDdl},
      {"DROP DATABASE prod", C::kDdl},
      {"TRUNCATE t", C::kDdl},
      {"ALTER SYSTEM SET work_mem = '1GB'", C::kDdl},
      {"GRANT SELECT ON t TO bob", C::kDcl},
      {"ALTER ROLE bob SUPERUSER", C::kDcl},
      {"DO $$ BEGIN DELETE FROM t; END $$", C::kUnknown},
      {"LOAD 'evil.so'", C::kUnknown},
      {"SELEC 1", C::kUnknown},  // the parser refuses it
      {"", C::kEmpty},
      {" -- just a comment", C::kEmpty},
  };
  for (const auto& c : cases) {
    StatementInfo info = AnalyzeStatement(c.sql);
    EXPECT_EQ(ClassName(info.overall), std::string(ClassName(c.want))) << c.sql;
    EXPECT_EQ(info.read_only(), c.want <= C::kOther) << c.sql;
  }
}

TEST(SqlAnalysis, NamesTheDecidingStatementAndParseErrors) {
  StatementInfo info = AnalyzeStatement("SELECT 1; UPDATE t SET a = 2; SELECT 3");
  ASSERT_EQ(info.statements.size(), 3u);
  EXPECT_EQ(info.deciding_kind(), "UpdateStmt");
  StatementInfo bad = AnalyzeStatement("SELECT 1 +");
  EXPECT_EQ(bad.overall, StatementClass::kUnknown);
  EXPECT_NE(bad.parse_error.find("syntax error"), std::string::npos) << bad.parse_error;
  EXPECT_EQ(bad.deciding_kind(), "unparsed text");
  std::string huge = "SELECT '" + std::string(kMaxParseBytes, 'x') + "'";
  EXPECT_EQ(AnalyzeStatement(huge).overall, StatementClass::kUnknown);
}

TEST(SqlAnalysis, CacheAnswersByShapeButNeverCachesParseFailures) {
  StatementCache cache;
  EXPECT_EQ(cache.Get("SELECT * FROM t WHERE id = 1").overall, StatementClass::kRead);
  EXPECT_EQ(cache.Get("select * from t where id = 2").overall, StatementClass::kRead);
  // Same shape as a valid statement once literals are stripped, but refused by the parser: the
  // failure is not cached, and the valid one is still read.
  EXPECT_EQ(cache.Get("SELECT * FROM t WHERE id = B'12x'").overall, StatementClass::kRead);
  EXPECT_EQ(cache.Get("SELECT * FROM t WHERE u = U&'\\zzzz'").overall, StatementClass::kUnknown);
  EXPECT_EQ(cache.Get("SELECT * FROM t WHERE u = U&'ok'").overall, StatementClass::kRead);
  EXPECT_EQ(cache.Get("DELETE FROM t WHERE id = 3").overall, StatementClass::kWrite);
}

TEST(SqlAnalysis, CopyOutputsReadTheirOptions) {
  auto copies = CopyOutputs(
      "SELECT 1; COPY public.customers (email, name) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', "
      "NULL 'x', QUOTE '''');"
      "COPY t FROM STDIN; COPY t TO '/tmp/f'; COPY (SELECT 1) TO STDOUT (FORMAT binary); copy t to stdout csv");
  ASSERT_EQ(copies.size(), 3u);
  EXPECT_EQ(copies[0].relation, (Relation{"public", "customers"}));
  EXPECT_EQ(copies[0].columns, (std::vector<std::string>{"email", "name"}));
  EXPECT_TRUE(copies[0].csv);
  EXPECT_TRUE(copies[0].header);
  EXPECT_EQ(copies[0].delimiter, ';');
  EXPECT_EQ(copies[0].null_string, "x");
  EXPECT_EQ(copies[0].quote, '\'');
  EXPECT_EQ(copies[0].escape, '\'');  // defaults to the quote
  EXPECT_TRUE(copies[1].query);
  EXPECT_TRUE(copies[1].binary);
  EXPECT_TRUE(copies[2].csv);
  EXPECT_EQ(copies[2].delimiter, ',');
  EXPECT_EQ(copies[2].null_string, "");
  EXPECT_FALSE(copies[2].header);
  EXPECT_EQ(CopyOutputs("COPY t TO STDOUT (DELIMITER '::')")[0].problem, "delimiter '::'");
  EXPECT_EQ(CopyOutputs("COPY t TO STDOUT")[0].null_string, "\\N");
  EXPECT_TRUE(CopyOutputs("not sql").empty());
}

}  // namespace
}  // namespace sluice::agent::postgres
