#include "agent/postgres/sql_analysis.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/sql/lexer.h"

namespace sluice::agent::postgres {

void PrintTo(const SettingChange& c, std::ostream* os) {
  *os << "{" << c.name << "=" << c.value << (c.reset ? " reset" : "")
      << (c.value_known ? "" : " unknown") << "}";
}

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
      "SELECT 1; COPY public.customers (email, name) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER "
      "';', "
      "NULL 'x', QUOTE '''');"
      "COPY t FROM STDIN; COPY t TO '/tmp/f'; COPY (SELECT 1) TO STDOUT (FORMAT binary); copy t to "
      "stdout csv");
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

bool Guards(absl::string_view sql, const std::string& what) {
  StatementInfo info = AnalyzeStatement(sql);
  for (const auto& s : info.statements) {
    if (std::find(s.guarded.begin(), s.guarded.end(), what) != s.guarded.end()) return true;
  }
  return false;
}

TEST(SqlAnalysis, ConstantWhereClausesThatHoldForEveryRow) {
  for (const char* sql :
       {"DELETE FROM t WHERE 2 > 1",           "DELETE FROM t WHERE NOT false",
        "DELETE FROM t WHERE 1 <> 2",          "DELETE FROM t WHERE 'a' = 'a'",
        "DELETE FROM t WHERE 1 = 1 OR id = 3", "DELETE FROM t WHERE 1.5 >= 1",
        "DELETE FROM t WHERE 't'::bool",       "DELETE FROM t WHERE NULL IS NULL",
        "DELETE FROM t WHERE 1 IN (1, 2)",     "DELETE FROM t WHERE (1 = 1) IS TRUE",
        "DELETE FROM t WHERE -1 < 0 AND true", "DELETE FROM t WHERE -5 > -10",
        "DELETE FROM t WHERE 0 = 0",           "DELETE FROM t WHERE - 2 = -2",
        "DELETE FROM t WHERE -(3) < -(4)",     "DELETE FROM t WHERE 't'",
        "DELETE FROM t WHERE 'yes'",           "DELETE FROM t WHERE 't' = true",
        "DELETE FROM t WHERE '1' = 1",         "DELETE FROM t WHERE NOT 'off'"}) {
    EXPECT_TRUE(Guards(sql, "delete_without_where")) << sql;
  }
  for (const char* sql :
       {"DELETE FROM t WHERE 1 = 2", "DELETE FROM t WHERE 2 < 1", "DELETE FROM t WHERE id = 1",
        "DELETE FROM t WHERE 1 = 1 AND id = 3", "DELETE FROM t WHERE NULL = NULL",
        "DELETE FROM t WHERE 'b' > 'a'", "DELETE FROM t WHERE id = id",
        "DELETE FROM t WHERE -10 > -5", "DELETE FROM t WHERE random() = random()",
        "DELETE FROM t WHERE 'f'", "DELETE FROM t WHERE '2' = 1"}) {
    EXPECT_FALSE(Guards(sql, "delete_without_where")) << sql;
  }
  EXPECT_TRUE(Guards("UPDATE t SET a = 1 WHERE 3 >= 3", "update_without_where"));
}

TEST(SqlAnalysis, MergeThatMatchesEveryRowIsWithoutWhere) {
  EXPECT_TRUE(Guards("MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
                     "delete_without_where"));
  EXPECT_TRUE(Guards(
      "MERGE INTO orders o USING customers c ON 1 = 1 WHEN MATCHED AND 2 > 1 THEN UPDATE SET x = 1",
      "update_without_where"));
  EXPECT_FALSE(
      Guards("MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE",
             "delete_without_where"));
  EXPECT_FALSE(
      Guards("MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED AND o.id = 3 THEN DELETE",
             "delete_without_where"));
  EXPECT_FALSE(
      Guards("MERGE INTO orders o USING (SELECT 1) s ON true WHEN NOT MATCHED THEN DO NOTHING",
             "delete_without_where"));
}

TEST(SqlAnalysis, DecisionsThatReadALiteralAreNotSharedByShape) {
  StatementCache cache;
  // Poisoning: a harmless text first, then the same shape with other literals.
  EXPECT_FALSE(cache.Get("DELETE FROM orders WHERE 1 = 2").statements[0].guarded.size() > 0);
  EXPECT_EQ(cache.Get("DELETE FROM orders WHERE 1 = 1").statements[0].guarded,
            std::vector<std::string>{"delete_without_where"});
  EXPECT_EQ(cache.Get("EXPLAIN (ANALYZE 0) INSERT INTO t VALUES (1)").overall,
            StatementClass::kRead);
  EXPECT_EQ(cache.Get("EXPLAIN (ANALYZE 1) INSERT INTO t VALUES (1)").overall,
            StatementClass::kWrite);
  EXPECT_EQ(cache.Get("SET default_transaction_read_only = 'on'").statements[0].settings[0].value,
            "on");
  EXPECT_EQ(cache.Get("SET default_transaction_read_only = 'off'").statements[0].settings[0].value,
            "off");
  EXPECT_TRUE(AnalyzeStatement("DELETE FROM t WHERE 1 = 2").literal_sensitive);
  EXPECT_FALSE(
      AnalyzeStatement("SELECT abalance FROM pgbench_accounts WHERE aid = 1").literal_sensitive);
  // A column compared with a constant decides nothing by the constant's value: cached by shape.
  EXPECT_FALSE(AnalyzeStatement("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2")
                   .literal_sensitive);
  EXPECT_FALSE(
      AnalyzeStatement("DELETE FROM t WHERE id IN (1, 2) AND x IS NULL").literal_sensitive);
  EXPECT_TRUE(AnalyzeStatement("DELETE FROM t WHERE 1 IN (1, 2)").literal_sensitive);
}

TEST(SqlAnalysis, TextsLongerThanTheLexerReadsAreAnalyzedWhole) {
  StatementCache cache;
  EXPECT_EQ(cache.Get("").overall, StatementClass::kEmpty);
  // The lexer normalizes only a prefix: a comment (or blanks) filling it once made the text's
  // shape that of an empty string.
  std::string hidden = "/*" + std::string(sql::kMaxLexBytes, ' ') + "*/ DELETE FROM orders";
  EXPECT_EQ(cache.Get(hidden).overall, StatementClass::kWrite);
  std::string blank = std::string(sql::kMaxLexBytes + 10, ' ') + "DELETE FROM orders";
  EXPECT_EQ(cache.Get(blank).overall, StatementClass::kWrite);
}

TEST(SqlAnalysis, NumbersEndWhereTheServerEndsThem) {
  StatementCache cache;
  EXPECT_TRUE(cache.Get("DELETE FROM t WHERE id = 1e1").statements[0].guarded.empty());
  // `1or` is trailing junk to PostgreSQL 15 (an error), not the number of `1e1`'s shape.
  EXPECT_EQ(cache.Get("DELETE FROM t WHERE id = 1or true").overall, StatementClass::kUnknown);
}

TEST(SqlAnalysis, SettingsAStatementChanges) {
  auto settings = [](const char* sql) {
    std::vector<SettingChange> out;
    for (const auto& s : AnalyzeStatement(sql).statements)
      out.insert(out.end(), s.settings.begin(), s.settings.end());
    return out;
  };
  using S = SettingChange;
  EXPECT_EQ(settings("SET standard_conforming_strings = off"),
            (std::vector<S>{{"standard_conforming_strings", "off"}}));
  EXPECT_EQ(settings("set local STANDARD_CONFORMING_STRINGS to 'off'"),
            (std::vector<S>{{"standard_conforming_strings", "off"}}));
  EXPECT_EQ(settings("RESET standard_conforming_strings"),
            (std::vector<S>{{"standard_conforming_strings", "", true}}));
  EXPECT_EQ(settings("RESET ALL"), (std::vector<S>{{"all", "", true}}));
  EXPECT_EQ(settings("SELECT set_config('standard_conforming_strings', 'off', false)"),
            (std::vector<S>{{"standard_conforming_strings", "off"}}));
  EXPECT_EQ(settings("SELECT pg_catalog.set_config(lower('X'), 'off', false)"),
            (std::vector<S>{{"", "off"}}));
  EXPECT_EQ(settings("SELECT set_config('application_name', email, false) FROM t"),
            (std::vector<S>{{"application_name", "", false, false}}));
  // READ WRITE is the constant 0, which the parse tree leaves out (as it does negative numbers):
  // a value not known, which counts as lifting read-only.
  const S read_write{"transaction_read_only", "", false, false};
  EXPECT_EQ(settings("BEGIN READ WRITE"), (std::vector<S>{read_write}));
  EXPECT_EQ(settings("BEGIN READ ONLY"), (std::vector<S>{{"transaction_read_only", "1"}}));
  EXPECT_EQ(settings("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE"),
            (std::vector<S>{{"transaction_isolation", "serializable"}, read_write}));
  EXPECT_EQ(settings("SET TRANSACTION READ WRITE"), (std::vector<S>{read_write}));
  EXPECT_EQ(settings("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
            (std::vector<S>{{"default_transaction_read_only", "", false, false}}));
  EXPECT_EQ(settings("SET NAMES 'SJIS'"), (std::vector<S>{{"client_encoding", "SJIS"}}));
  EXPECT_EQ(AnalyzeStatement("DO $$ BEGIN NULL; END $$").statements[0].runs_hidden_code,
            "a DO block");
  EXPECT_NE(AnalyzeStatement("SELECT query_to_xml('select 1', true, true, '')")
                .statements[0]
                .runs_hidden_code,
            "");
}

}  // namespace
}  // namespace sluice::agent::postgres
