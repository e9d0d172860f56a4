#include "agent/mysql/sql_lexer.h"

#include <gtest/gtest.h>

namespace sluice::agent::mysql {
namespace {

LexMode Mode(const char* sql_mode, uint32_t version = 0) {
  return LexModeFromSqlMode(sql_mode, version);
}

// The tokens' texts joined by '|', or "ERROR: why".
std::string Tokens(absl::string_view sql, const LexMode& mode = LexMode()) {
  LexResult r = Lex(sql, mode);
  if (!r.error.empty()) return "ERROR: " + r.error;
  std::string out;
  for (const Token& t : r.tokens) {
    if (!out.empty()) out += "|";
    switch (t.kind) {
      case TokenKind::kString:
        out += "'" + t.text + "'";
        break;
      case TokenKind::kQuoted:
        out += "`" + t.text + "`";
        break;
      case TokenKind::kNumber:
        out += "#" + t.text;
        break;
      default:
        out += t.text;
    }
  }
  return out;
}

TEST(MysqlLexer, Comments) {
  EXPECT_EQ(Tokens("SELECT 1 # DROP TABLE t\n, 2"), "select|#1|,|#2");
  EXPECT_EQ(Tokens("SELECT 1 -- DROP TABLE t\n, 2"), "select|#1|,|#2");
  EXPECT_EQ(Tokens("SELECT 1 --\tx\n"), "select|#1");
  EXPECT_EQ(Tokens("SELECT 1--"), "select|#1");  // `--` at the end of the text is a comment
  // `--` without a following space is two minus signs: 1--1 is arithmetic.
  EXPECT_EQ(Tokens("SELECT 1--1; DROP TABLE t"), "select|#1|-|-|#1|;|drop|table|t");
  EXPECT_EQ(Tokens("SELECT 1 /* DROP; TABLE */ , 2"), "select|#1|,|#2");
  EXPECT_EQ(Tokens("SELECT/**/1"), "select|#1");
  EXPECT_EQ(Tokens("SELECT 1 /* open"), "ERROR: a comment is not closed");
  EXPECT_EQ(Tokens("SELECT 1 --\x80"), "ERROR: '--' followed by a non-ASCII byte");
  EXPECT_EQ(Tokens(absl::string_view("SELECT 1 -- \0\nDROP TABLE t", 27)),
            "ERROR: a NUL byte in the text");
}

TEST(MysqlLexer, ExecutableComments) {
  EXPECT_EQ(Tokens("/*! DROP TABLE t */"), "drop|table|t");
  EXPECT_EQ(Tokens("/*!50000 DROP TABLE t */"), "drop|table|t");
  EXPECT_EQ(Tokens("/*!50000DROP*/TABLE t"), "drop|table|t");             // glued across tokens
  EXPECT_EQ(Tokens("/*!M50000 DROP TABLE t */"), "m50000|drop|table|t");  // not a version
  EXPECT_EQ(Tokens("SELECT 2 */ 3"), "select|#2|*|/|#3");  // no comment open: operators
  // MariaDB's /*M! and MySQL 5.7+ versions depend on the server: known only with its version.
  EXPECT_EQ(Tokens("/*M!100000 DROP TABLE t */"),
            "ERROR: an executable comment whose running depends on the server's version");
  EXPECT_EQ(Tokens("/*M!100000 DROP TABLE t */", Mode("", 101106)), "drop|table|t");
  EXPECT_EQ(Tokens("/*M! DROP TABLE t */", Mode("", 101106)), "drop|table|t");
  EXPECT_EQ(Tokens("SELECT 1 /*M!999999 , 2 */", Mode("", 101106)), "select|#1");
  EXPECT_EQ(Tokens("SELECT 1 /*!80000 , 2 */", Mode("", 101106)), "select|#1");  // MySQL 8 only
  EXPECT_EQ(Tokens("SELECT 1 /*!50700 , 2 */"),
            "ERROR: an executable comment whose running depends on the server's version");
  EXPECT_EQ(Tokens("SELECT 1 /*!100200 , 2 */", Mode("", 101106)), "select|#1|,|#2");
  EXPECT_EQ(Tokens("SELECT 1 /*!40101 , 2 */"), "select|#1|,|#2");
  // A skipped comment ends at its first */, whatever quotes it holds.
  EXPECT_EQ(Tokens("SELECT 1 /*!99999 ' */ , 2 -- '", Mode("", 101106)), "select|#1|,|#2");
  EXPECT_EQ(Tokens("SELECT 1 /*!99999 /* x */ */", Mode("", 101106)),
            "ERROR: a comment inside a skipped versioned comment");
  // Code inside: strings are strings, a line comment swallows the end marker.
  EXPECT_EQ(Tokens("/*! SELECT '*/' */"), "select|'*/'");
  EXPECT_EQ(Tokens("/*! SELECT 1 -- */\n, 2 */"), "select|#1|,|#2");
  EXPECT_EQ(Tokens("/*! SELECT 1 /*! , 2 */ */"),
            "ERROR: an executable comment inside an executable comment");
  EXPECT_EQ(Tokens("/*! SELECT 1 /* c */ */"), "ERROR: a comment inside an executable comment");
  EXPECT_EQ(Tokens("/*! SELECT 1; DROP TABLE t */"), "ERROR: ';' inside an executable comment");
  EXPECT_EQ(Tokens("/*! SELECT 1"), "ERROR: an executable comment is not closed");
}

TEST(MysqlLexer, StringsAndIdentifiers) {
  EXPECT_EQ(Tokens("SELECT '\\'; DROP TABLE t; -- '"), "select|''; DROP TABLE t; -- '");
  EXPECT_EQ(Tokens("SELECT '\\'; DROP TABLE t; -- '", Mode("NO_BACKSLASH_ESCAPES")),
            "select|'\\'|;|drop|table|t|;");
  EXPECT_EQ(Tokens("SELECT 'it''s', '\\n\\%'"), "select|'it's'|,|'\n\\%'");
  EXPECT_EQ(Tokens("SELECT \"a\"\"b\""), "select|'a\"b'");
  EXPECT_EQ(Tokens("SELECT \"a\"\"b\"", Mode("ANSI_QUOTES")), "select|`a\"b`");
  EXPECT_EQ(Tokens("SELECT \"\\\"; DROP TABLE t; -- \"", Mode("ANSI")),
            "select|`\\`|;|drop|table|t|;");
  EXPECT_EQ(Tokens("SELECT `a``b`.`c`"), "select|`a`b`|.|`c`");
  EXPECT_EQ(Tokens("SELECT _utf8mb4'\\'x', N'y', X'4a', b'01', 0x4A, 0b1, 1e-5, .5, 1abc"),
            "select|_utf8mb4|''x'|,|'y'|,|#X'4a'|,|#b'01'|,|#0x4A|,|#0b1|,|#1e-5|,|#.5|,|1abc");
  EXPECT_EQ(Tokens("SELECT X'4\\'"), "ERROR: a malformed X'..' or B'..' constant");
  EXPECT_EQ(Tokens("SELECT 'open"), "ERROR: a string is not closed");
  EXPECT_EQ(Tokens("SELECT 'open\\'"), "ERROR: a string is not closed");
  EXPECT_EQ(Tokens("SELECT `open"), "ERROR: a quoted identifier is not closed");
  EXPECT_EQ(Tokens("SET @a := 1, @@session.x = 2"), "set|@|a|:=|#1|,|@@|session|.|x|=|#2");
  EXPECT_EQ(Tokens("SELECT a FROM t1 WHERE b <=> c"), "select|a|from|t1|where|b|<=>|c");
}

TEST(MysqlLexer, NormalizedShape) {
  LexResult a = Lex("SELECT  name FROM `t` WHERE id = 5 /* c */ AND x = 'y';", LexMode());
  LexResult b = Lex("select name\nfrom `t` where id = 7 and x = \"z\"", LexMode());
  EXPECT_EQ(a.normalized, "select name from `t` where id = ? and x = ?");
  EXPECT_EQ(a.normalized, b.normalized);
  EXPECT_EQ(Lex("SELECT f(1)", LexMode()).normalized, "select f(?)");
  // What differs in tokens differs in shape.
  EXPECT_NE(Lex("SELECT 1--1", LexMode()).normalized, Lex("SELECT 1 - -1", LexMode()).normalized);
  EXPECT_EQ(Lex("/*!50000 DROP TABLE t */", LexMode()).normalized, "drop table t");
}

TEST(MysqlLexer, SqlModes) {
  EXPECT_EQ(Mode(""), LexMode());
  LexMode ansi = Mode("real_as_float, PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI");
  EXPECT_TRUE(ansi.ansi_quotes);
  EXPECT_TRUE(ansi.supported);
  EXPECT_TRUE(Mode("POSTGRESQL").ansi_quotes);
  EXPECT_TRUE(Mode("STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES").no_backslash_escapes);
  EXPECT_FALSE(Mode("ORACLE").supported);
  EXPECT_FALSE(Mode("NO_SUCH_MODE").supported);
  EXPECT_FALSE(Mode("4").supported);
  EXPECT_EQ(Tokens("SELECT 1", Mode("ORACLE")),
            "ERROR: the session's sql_mode is one the agent cannot lex");
  EXPECT_EQ(Mode("", 101106).mariadb_version, 101106u);
}

TEST(MysqlLexer, MariaDbVersion) {
  EXPECT_EQ(MariaDbVersion("10.11.6-MariaDB-0+deb12u1"), 101106u);
  EXPECT_EQ(MariaDbVersion("5.5.5-10.11.6-MariaDB-log"), 101106u);
  EXPECT_EQ(MariaDbVersion("11.4.2-MariaDB"), 110402u);
  EXPECT_EQ(MariaDbVersion("8.0.36"), 0u);
  EXPECT_EQ(MariaDbVersion("MariaDB"), 0u);
}

}  // namespace
}  // namespace sluice::agent::mysql
