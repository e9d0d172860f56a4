#include "common/sql/lexer.h"

#include <gtest/gtest.h>

namespace sluice::sql {
namespace {

TEST(SqlLexer, LiteralsCommentsAndWhitespaceAreNormalized) {
  Shape a = Analyze("SELECT *  FROM t WHERE id = 42 AND name = 'O''Brien' -- trailing\n;");
  EXPECT_EQ(a.normalized, "select * from t where id = ? and name = ?");
  Shape b = Analyze("select * /* a /* nested */ comment */ from t where id=7 and name=E'x\\'y'");
  EXPECT_EQ(b.normalized, "select * from t where id=? and name=?");
  EXPECT_EQ(Analyze("SELECT $1, $$body$$, $fn$ x $fn$, 1.5e-3, .5").normalized,
            "select ?, ?, ?, ?, ?");
  EXPECT_EQ(Analyze("select t1.c2 from \"My Table\" t1").normalized,
            "select t1.c2 from \"My Table\" t1");
  EXPECT_EQ(a.fingerprint.size(), 16u);
  EXPECT_EQ(Analyze("SELECT * FROM t WHERE id = 1 AND name = 'x'").fingerprint, a.fingerprint);
  EXPECT_NE(Analyze("SELECT * FROM u WHERE id = 1 AND name = 'x'").fingerprint, a.fingerprint);
}

TEST(SqlLexer, FirstKeywordClassification) {
  EXPECT_EQ(Analyze("  /* hi */ Select 1").classification, "read");
  EXPECT_EQ(Analyze("INSERT INTO t VALUES (1)").classification, "write");
  EXPECT_EQ(Analyze("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x").classification,
            "write");
  EXPECT_EQ(Analyze("WITH x AS (SELECT 1) SELECT * FROM x").classification, "read");
  EXPECT_EQ(Analyze("drop table t").classification, "ddl");
  EXPECT_EQ(Analyze("GRANT SELECT ON t TO bob").classification, "dcl");
  EXPECT_EQ(Analyze("BEGIN").classification, "transaction");
  EXPECT_EQ(Analyze("").classification, "empty");
  EXPECT_EQ(Analyze("frobnicate").classification, "other");
}

TEST(SqlLexer, UnterminatedInputDoesNotOverrun) {
  for (const char* s : {"select 'abc", "select $$abc", "select \"abc", "/* open", "select E'\\",
                        "$", "$1", "'", "e'"}) {
    Shape sh = Analyze(s);
    EXPECT_EQ(sh.fingerprint.size(), 16u) << s;
  }
}

TEST(SqlLexer, NormalizeReturnsTheFirstKeyword) {
  std::string n = "old contents";
  EXPECT_EQ(Normalize("  /* c */ WITH x AS (select 1) table x", &n), "with");
  EXPECT_EQ(n, "with x as (select ?) table x");
  EXPECT_EQ(Normalize("123; 'x'", &n), "");
  EXPECT_EQ(Normalize("", &n), "");
  EXPECT_EQ(n, "");
}

TEST(SqlLexer, StringsWhoseMeaningDependsOnStandardConformingStrings) {
  EXPECT_TRUE(DependsOnStandardConformingStrings("SELECT 'a\\' , ' ; DELETE FROM orders; -- '"));
  EXPECT_TRUE(DependsOnStandardConformingStrings("SELECT N'\\x'"));
  EXPECT_TRUE(DependsOnStandardConformingStrings("SELECT 'unterminated \\"));
  EXPECT_FALSE(DependsOnStandardConformingStrings("SELECT E'a\\' , ' ; x"));
  EXPECT_FALSE(DependsOnStandardConformingStrings("SELECT $$a\\$$, \"we\\ird\" -- '\\'\n"));
  EXPECT_FALSE(DependsOnStandardConformingStrings("SELECT 'plain' /* '\\' */"));
  EXPECT_FALSE(DependsOnStandardConformingStrings("SELECT 1"));
}

TEST(SqlLexer, NumbersEndAsPostgresEndsThem) {
  std::string a, b;
  Normalize("DELETE FROM t WHERE id = 1or true", &a);
  Normalize("DELETE FROM t WHERE id = 1e1", &b);
  EXPECT_NE(a, b);
  Normalize("SELECT 1.5e-3, .5, 10", &a);
  EXPECT_EQ(a, "select ?, ?, ?");
  Normalize("SELECT 0x1F", &a);
  EXPECT_EQ(a, "select ?x1f");  // 0 and an alias, to PostgreSQL 15
}

}  // namespace
}  // namespace sluice::sql
