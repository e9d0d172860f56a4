#include "agent/mysql/sql_analysis.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "agent/session/guardrails.h"

namespace sluice::agent::mysql {
namespace {

using C = StatementClass;

StatementInfo Analyze(absl::string_view sql, const char* sql_mode = "", uint32_t version = 0) {
  return AnalyzeStatement(sql, LexModeFromSqlMode(sql_mode, version));
}

std::string ClassOf(absl::string_view sql, const char* sql_mode = "") {
  return ClassName(Analyze(sql, sql_mode).overall);
}

TEST(MysqlSqlAnalysis, ClassesByLeadingKeywords) {
  struct Case {
    const char* sql;
    const char* cls;
    const char* kind;
  } cases[] = {
      {"", "empty", ""},
      {" ; -- nothing\n", "empty", ""},
      {"SELECT * FROM t FOR UPDATE", "read", "SELECT"},
      {"(SELECT 1) UNION (SELECT 2)", "read", "SELECT"},
      {"WITH c AS (SELECT 1) SELECT * FROM c", "read", "WITH"},
      {"VALUES (1), (2)", "read", "VALUES"},
      {"SHOW TABLES", "read", "SHOW"},
      {"DESC t", "read", "EXPLAIN"},
      {"EXPLAIN FORMAT=JSON DELETE FROM t", "read", "EXPLAIN DELETE"},
      {"EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", "write", "ANALYZE DELETE"},
      {"ANALYZE FORMAT=JSON UPDATE t SET a = 1 WHERE id = 2", "write", "ANALYZE UPDATE"},
      {"ANALYZE TABLE t", "ddl", "ANALYZE TABLE"},
      {"HELP 'select'", "read", "HELP"},
      {"CHECKSUM TABLE t", "read", "CHECKSUM"},
      {"SELECT a INTO @x FROM t LIMIT 1", "other", "SELECT INTO"},
      {"SELECT * FROM t INTO OUTFILE '/tmp/x'", "write", "SELECT INTO OUTFILE"},
      {"SELECT * INTO DUMPFILE '/tmp/x' FROM t", "write", "SELECT INTO DUMPFILE"},
      {"INSERT LOW_PRIORITY t (a) VALUES (1)", "write", "INSERT"},
      {"REPLACE INTO t VALUES (1)", "write", "REPLACE"},
      {"LOAD DATA INFILE '/tmp/x' INTO TABLE t", "write", "LOAD DATA"},
      {"CALL db.p(1)", "write", "CALL"},
      {"DO 1", "write", "DO"},
      {"HANDLER t OPEN", "write", "HANDLER"},
      {"LOCK TABLES t READ", "write", "LOCK TABLES"},
      {"XA START 'x'", "write", "XA"},
      {"SELECT GET_LOCK('x', 0)", "write", "SELECT"},
      {"SELECT NEXT VALUE FOR s", "write", "SELECT"},
      {"CREATE OR REPLACE DEFINER = 'u'@'%' SQL SECURITY INVOKER VIEW v AS SELECT 1", "ddl",
       "CREATE VIEW"},
      {"CREATE DEFINER=user@localhost PROCEDURE p() SELECT 1", "ddl", "CREATE PROCEDURE"},
      {"CREATE PROCEDURE p() BEGIN SELECT 1; END", "unknown", "CREATE PROCEDURE"},
      {"CREATE PROCEDURE p() BEGIN END", "ddl", "CREATE PROCEDURE"},
      {"RENAME TABLE a TO b, c TO d", "ddl", "RENAME TABLE"},
      {"OPTIMIZE TABLE t", "ddl", "OPTIMIZE TABLE"},
      {"FLUSH TABLES WITH READ LOCK", "ddl", "FLUSH TABLES"},
      {"SET GLOBAL max_connections = 10", "ddl", "SET GLOBAL"},
      {"SET @@global.max_connections = 10", "ddl", "SET GLOBAL"},
      {"SET PERSIST max_connections = 10", "ddl", "SET GLOBAL"},
      {"SHUTDOWN", "ddl", "SHUTDOWN"},
      {"START SLAVE", "ddl", "START SLAVE"},
      {"CHANGE MASTER TO MASTER_HOST = 'x'", "ddl", "CHANGE MASTER"},
      {"GRANT SELECT ON *.* TO u", "dcl", "GRANT"},
      {"CREATE USER u IDENTIFIED BY 'x'", "dcl", "CREATE USER"},
      {"RENAME USER a TO b", "dcl", "RENAME USER"},
      {"DROP ROLE r", "dcl", "DROP ROLE"},
      {"SET PASSWORD FOR u = PASSWORD('x')", "dcl", "SET PASSWORD"},
      {"SET DEFAULT ROLE r FOR u", "dcl", "SET DEFAULT ROLE"},
      {"SET ROLE r", "other", "SET ROLE"},
      {"BEGIN WORK", "other", "BEGIN"},
      {"START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT", "other", "START TRANSACTION"},
      {"ROLLBACK TO SAVEPOINT s", "other", "ROLLBACK"},
      {"USE shop", "other", "USE"},
      {"KILL QUERY 12", "other", "KILL"},
      {"UNLOCK TABLES", "other", "UNLOCK"},
      {"DEALLOCATE PREPARE s", "other", "DEALLOCATE"},
      {"DROP PREPARE s", "other", "DEALLOCATE PREPARE"},
      {"EXECUTE s USING @a", "other", "EXECUTE"},
      {"PREPARE s FROM 'SELECT ?'", "other", "PREPARE SELECT"},
      {"PREPARE s FROM 'UPDATE t SET a = ?'", "write", "PREPARE UPDATE"},
      {"EXECUTE IMMEDIATE 'SELECT 1'", "read", "EXECUTE IMMEDIATE SELECT"},
      {"SET STATEMENT max_statement_time = 1 FOR SELECT 1", "read", "SELECT"},
      {"BEGIN NOT ATOMIC SELECT 1; END", "unknown", "BEGIN NOT ATOMIC"},
      {"IF 1 THEN SELECT 1; END IF", "unknown", "IF"},
      {"lbl: LOOP LEAVE lbl; END LOOP", "unknown", ""},  // "unparsed text"
      {"DELIMITER //", "unknown", "DELIMITER"},
      {"SELEC 1", "unknown", ""},
      {"SELECT (1", "unknown", ""},
      {"BINLOG 'AAAA'", "unknown", "BINLOG"},
  };
  for (const auto& c : cases) {
    StatementInfo info = Analyze(c.sql);
    EXPECT_EQ(ClassName(info.overall), std::string(c.cls)) << c.sql << " " << info.parse_error;
    std::string kind = c.cls == std::string("empty") ? "" : c.kind;
    if (info.overall != C::kEmpty && kind.empty()) kind = "unparsed text";
    EXPECT_EQ(std::string(info.deciding_kind()), kind) << c.sql;
    if (info.overall == C::kUnknown) {
      EXPECT_FALSE(info.parse_error.empty()) << c.sql;
    }
  }
}

TEST(MysqlSqlAnalysis, GuardedKindsRelationsAndFunctions) {
  StatementInfo info = Analyze("DELETE FROM `Shop`.Orders");
  ASSERT_EQ(info.statements.size(), 1u);
  EXPECT_EQ(info.statements[0].guarded, std::vector<std::string>{"delete_without_where"});
  EXPECT_EQ(info.statements[0].relations, (std::vector<Relation>{{"shop", "orders"}}));
  for (const char* sql :
       {"DELETE FROM t WHERE 1", "DELETE FROM t WHERE true", "DELETE FROM t WHERE '1' = '1'",
        "DELETE FROM t WHERE id = 1 OR 1 = 1", "DELETE FROM t WHERE (2 > 1)",
        "DELETE FROM t WHERE NOT 0", "DELETE FROM t WHERE id = id", "DELETE FROM t LIMIT 5",
        "DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id", "DELETE FROM t WHERE name LIKE '%'"}) {
    EXPECT_EQ(Analyze(sql).statements[0].guarded, std::vector<std::string>{"delete_without_where"})
        << sql;
  }
  for (const char* sql : {"DELETE FROM t WHERE id = 1", "DELETE FROM t WHERE 1 = 0 OR id = 2",
                          "DELETE FROM t WHERE id IN (SELECT id FROM u WHERE 1)"}) {
    EXPECT_TRUE(Analyze(sql).statements[0].guarded.empty()) << sql;
  }
  EXPECT_EQ(Analyze("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = 1").statements[0].guarded,
            std::vector<std::string>{"update_without_where"});
  EXPECT_TRUE(Analyze("UPDATE t SET a = 1 WHERE id = 3").statements[0].guarded.empty());
  EXPECT_TRUE(Analyze("DELETE FROM t WHERE 0x41 = X'41'").statements[0].guarded.empty());
  EXPECT_EQ(Analyze("CREATE OR REPLACE TABLE t (a INT)").statements[0].guarded,
            std::vector<std::string>{"drop_table"});
  EXPECT_TRUE(Analyze("UPDATE t SET a = (SELECT 1 FROM u WHERE 1) WHERE id = 3")
                  .statements[0]
                  .guarded.empty());

  info = Analyze("DROP TEMPORARY TABLE IF EXISTS a, db.b");
  EXPECT_EQ(info.statements[0].guarded, std::vector<std::string>{"drop_table"});
  EXPECT_EQ(info.statements[0].relations, (std::vector<Relation>{{"", "a"}, {"db", "b"}}));
  info = Analyze("DROP SCHEMA IF EXISTS prod");
  EXPECT_EQ(info.statements[0].guarded, std::vector<std::string>{"drop_database"});
  EXPECT_EQ(info.statements[0].relations, (std::vector<Relation>{{"prod", ""}}));
  EXPECT_EQ(Analyze("TRUNCATE TABLE audit_log").statements[0].guarded,
            std::vector<std::string>{"truncate"});
  EXPECT_EQ(Analyze("EXPLAIN DELETE FROM t").statements[0].guarded,
            std::vector<std::string>{"delete_without_where"});  // found anywhere, as PostgreSQL's

  info = Analyze(
      "SELECT a.x FROM s.a AS a JOIN b USE INDEX (i) ON a.id = b.id, (SELECT 1 FROM c) d "
      "WHERE EXISTS (SELECT 1 FROM e) AND y IN (SELECT z FROM `F`)");
  EXPECT_EQ(info.statements[0].relations,
            (std::vector<Relation>{{"s", "a"}, {"", "b"}, {"", "c"}, {"", "e"}, {"", "f"}}));
  EXPECT_EQ(Analyze("INSERT INTO t (a, b) SELECT x, y FROM u").statements[0].relations,
            (std::vector<Relation>{{"", "t"}, {"", "u"}}));
  EXPECT_EQ(Analyze("CREATE INDEX i ON db.t (a)").statements[0].relations,
            (std::vector<Relation>{{"db", "t"}}));

  info = Analyze("SELECT LOAD_FILE('/etc/passwd'), db.MyFunc(1), `sys_exec`('id') FROM t");
  EXPECT_EQ(info.statements[0].functions,
            (std::vector<std::string>{"load_file", "myfunc", "sys_exec"}));
  EXPECT_EQ(info.overall, C::kWrite);  // sys_exec runs a command
  EXPECT_EQ(Analyze("CALL db.Cleanup()").statements[0].functions,
            std::vector<std::string>{"cleanup"});
  EXPECT_EQ(Analyze("CALL p()").statements[0].runs_hidden_code, "CALL of a procedure");
}

// A call of a function MariaDB does not have built in may be a stored function or a UDF, with
// effects the agent cannot see: at least a write, naming the function. Built-ins stay reads.
TEST(MysqlSqlAnalysis, CallsOfFunctionsNotBuiltInAreWrites) {
  StatementInfo info = Analyze("SELECT f_write()");
  EXPECT_EQ(info.overall, C::kWrite);
  EXPECT_EQ(info.statements[0].kind, "SELECT");
  EXPECT_EQ(info.statements[0].runs_hidden_code, "f_write(), which may be a stored function");
  EXPECT_EQ(Analyze("SELECT Shop.Audit(1) FROM t").statements[0].runs_hidden_code,
            "shop.audit(), which may be a stored function");
  for (const char* sql : {
           "SELECT f_read() FROM t",
           "SELECT db.concat('a')",  // qualified: a stored function, whatever its name
           "SELECT `f`()",
           "SET @x = my_func(1)",
           "SELECT 1 FROM t WHERE id = f(2) ORDER BY 1",
           "SELECT count (id) FROM t",   // with a space (no IGNORE_SPACE): a stored `count`
           "SELECT `count`(id) FROM t",  // quoted: the same
           "SELECT now (), 1",
           "SELECT point()",        // only point(x, y) is built in
           "SELECT json_table(1)",  // outside a FROM list
           "PREPARE s FROM 'SELECT f()'",
           "EXPLAIN SELECT f()",
           "SELECT (SELECT f(id) FROM t LIMIT 1)",
           "SELECT TRIM(LEADING 'x' FROM f()), EXTRACT(DAY FROM now())",  // FROM: not a table
           "SELECT SUBSTRING('abc' FROM f())",
           "SELECT HIGH_PRIORITY f()",
           "SELECT STRAIGHT_JOIN f() FROM t",
           "SELECT * FROM t JOIN u ON f(t.id) = u.id",
           "SELECT f (1)",
           "WITH c AS (SELECT f()) SELECT * FROM c",
       }) {
    EXPECT_EQ(ClassOf(sql), "write") << sql;
  }
  for (const char* sql : {
           "SELECT now(), concat('a', 'b'), json_object('k', 1), group_concat(v), count(*) FROM t",
           "SELECT count(DISTINCT v), sum(n), max(n), avg(n), std(n) FROM t",
           "SELECT `concat`('a', v), concat ('b', v), CONCAT_WS(',', v) FROM t",
           "SELECT extractvalue('<a>1</a>', '/a'), updatexml('<a/>', '/a', '<b/>')",
           "SELECT CAST(n AS DECIMAL(10,2)), CAST(v AS CHAR(10) CHARACTER SET utf8mb4) FROM t",
           "SELECT CONVERT(n, DATETIME(6)), CONVERT(v USING latin1), CHAR(65 USING utf8mb4)",
           "SELECT IF(1, 2, 3), IFNULL(a, 1), COALESCE(a, b), DATE(now()), TIME(now())",
           "SELECT TRIM(LEADING 'x' FROM v), SUBSTRING(v FROM 1 FOR 2), POSITION('a' IN v) FROM t",
           "SELECT EXTRACT(YEAR FROM now()), DATE_ADD(now(), INTERVAL 1 DAY), GET_FORMAT(DATE, "
           "'USA')",
           "SELECT row_number() OVER (ORDER BY id), lag(n, 1) OVER w FROM t WINDOW w AS (ORDER BY "
           "id)",
           "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY n) OVER () FROM t",
           "SELECT json_arrayagg(v), json_value('{}', '$.a'), json_extract('{}', '$') FROM t",
           "SELECT point(1, 2), polygon(linestring(point(0, 0), point(1, 1), point(0, 0)))",
           "SELECT st_astext(st_geomfromtext('POINT(1 1)')), uuid(), sys_guid()",
           "WITH c(a, b) AS (SELECT 1, 2), d (x) AS (SELECT 3) SELECT * FROM c, d",
           "SELECT * FROM t, JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$', NESTED PATH '$' "
           "COLUMNS (b DATETIME(6) PATH '$'))) AS j",
           "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$')) j",
           "SELECT id FROM t WHERE MATCH (v) AGAINST ('x' IN BOOLEAN MODE)",
           "SELECT * FROM t FORCE INDEX (i) WHERE id IN (1, 2) AND EXISTS (SELECT 1) AND "
           "v = ANY (SELECT v FROM u) AND ROW(1, 2) = (1, 2)",
           "SELECT a FROM t PROCEDURE ANALYSE()",
           "SELECT VALUES(a) FROM t",
           "SELECT DEFAULT(a), BINARY(v), NOT(1), INTERVAL(1, 2), MOD(5, 2) FROM t",
           "SELECT * FROM t FOR SYSTEM_TIME AS OF (now())",
           "SELECT (1) UNION (SELECT 2)",
           "SHOW COUNT(*) WARNINGS",
       }) {
    StatementInfo read = Analyze(sql);
    EXPECT_EQ(std::string(ClassName(read.overall)), "read") << sql << " " << read.parse_error;
    EXPECT_EQ(read.statements[0].runs_hidden_code, "") << sql;
  }
  EXPECT_EQ(ClassOf("SELECT a INTO @x FROM t WHERE a = lower('A')"), "other");
  EXPECT_EQ(ClassOf("KILL CONNECTION_ID()"), "other");
  // Definitions are not calls (and DDL is above write anyway).
  EXPECT_EQ(Analyze("CREATE FUNCTION f(a INT) RETURNS INT RETURN a").statements[0].runs_hidden_code,
            "");
  EXPECT_EQ(Analyze("INSERT INTO db.t (a) VALUES (1)").statements[0].runs_hidden_code, "");
  EXPECT_EQ(Analyze("INSERT IGNORE t (a) VALUES (1)").statements[0].runs_hidden_code, "");
  EXPECT_EQ(Analyze("INSERT INTO t (a) VALUES (f())").statements[0].runs_hidden_code,
            "f(), which may be a stored function");
  EXPECT_EQ(Analyze("CREATE TABLE IF NOT EXISTS t (a INT, FOREIGN KEY (a) REFERENCES u (id))")
                .statements[0]
                .runs_hidden_code,
            "");
  EXPECT_EQ(Analyze("CREATE INDEX i ON db.t (a)").statements[0].runs_hidden_code, "");
}

// What masking needs beyond tables: names the statement gives its own row sources (a result
// column claiming one is computed), and values it keeps in user variables for later.
TEST(MysqlSqlAnalysis, DefinedNamesAndUserVariables) {
  auto defined = [](absl::string_view sql) { return Analyze(sql).statements[0].defined_names; };
  auto has = [](const std::vector<std::string>& v, const char* name) {
    return std::find(v.begin(), v.end(), name) != v.end();
  };
  EXPECT_TRUE(has(defined("WITH customers AS (SELECT ssn AS name FROM customers) SELECT name "
                          "FROM customers"),
                  "customers"));
  EXPECT_TRUE(has(defined("WITH RECURSIVE w (n) AS (SELECT 1) SELECT n FROM w"), "w"));
  EXPECT_TRUE(has(defined("WITH a AS (SELECT 1), B AS (SELECT 2) SELECT * FROM a, b"), "b"));
  EXPECT_TRUE(has(defined("SELECT x FROM (SELECT concat(ssn) x FROM customers) AS t"), "t"));
  EXPECT_TRUE(has(defined("SELECT x FROM (SELECT ssn x FROM customers) t2"), "t2"));
  EXPECT_TRUE(defined("SELECT ssn FROM customers WHERE id = 1").empty());

  for (const char* sql : {"SELECT ssn INTO @x FROM customers", "SELECT @x := ssn FROM customers",
                          "SET @x = (SELECT ssn FROM customers LIMIT 1)", "SET @`x` := 1",
                          "SELECT ssn FROM customers INTO @a"}) {
    EXPECT_TRUE(Analyze(sql).statements[0].assigns_user_variables) << sql;
  }
  for (const char* sql : {"SELECT @x", "SELECT * FROM t WHERE @x = 1",
                          "SET @@session.sql_mode = ''", "SELECT ssn FROM customers"}) {
    EXPECT_FALSE(Analyze(sql).statements[0].assigns_user_variables) << sql;
  }
}

TEST(MysqlSqlAnalysis, ModesAddedToTheSessionsSqlMode) {
  // What MariaDB Connector/J sends at connect time: the session reads the mode back afterwards.
  StatementInfo info =
      Analyze("set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')");
  EXPECT_TRUE(info.unsafe.empty()) << info.unsafe;
  EXPECT_TRUE(info.changes_sql_mode);
  EXPECT_TRUE(Analyze("SET SESSION sql_mode = CONCAT(@@session.sql_mode, ',ANSI_QUOTES', '')")
                  .unsafe.empty());
  for (const char* sql :
       {"SET sql_mode = concat(@@sql_mode, ',ORACLE')", "SET sql_mode = concat(@@sql_mode, @x)",
        "SET sql_mode = concat(@@global.sql_mode, ',ANSI')",
        "SET sql_mode = concat(@@sql_mode, ',ANSI'), @y = 1) -- ",
        "SET sql_mode = concat('ANSI', @@sql_mode)"}) {
    EXPECT_FALSE(Analyze(sql).unsafe.empty() && Analyze(sql).overall != C::kUnknown) << sql;
  }
}

TEST(MysqlSqlAnalysis, SettingsAndUnsafe) {
  StatementInfo info = Analyze("SET sql_mode = 'ANSI_QUOTES', @a = 1, autocommit = 0");
  EXPECT_EQ(info.overall, C::kOther);
  EXPECT_TRUE(info.unsafe.empty());
  EXPECT_TRUE(info.changes_sql_mode);
  EXPECT_TRUE(info.literal_sensitive);
  EXPECT_EQ(info.statements[0].settings,
            (std::vector<SettingChange>{{"sql_mode", "ANSI_QUOTES"}, {"autocommit", "0"}}));
  EXPECT_TRUE(Analyze("SET @@session.sql_mode = DEFAULT").changes_sql_mode);
  EXPECT_TRUE(Analyze("SET SESSION sql_mode = _utf8mb4'NO_BACKSLASH_ESCAPES'").unsafe.empty());
  for (const char* sql :
       {"SET sql_mode = CONCAT(@@sql_mode, @m)", "SET sql_mode = @m", "SET sql_mode = 'ORACLE'",
        "SET sql_mode = 4", "SET NAMES gbk", "SET NAMES DEFAULT", "SET CHARACTER SET sjis",
        "SET CHARSET big5", "SET character_set_client = 'cp932'",
        "SET @@collation_connection = gbk_chinese_ci", "SET NAMES utf8mb4 COLLATE gb18030_bin",
        "SET GLOBAL a = 1, sql_mode = 'ANSI'", "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t",
        "LOAD DATA LOW_PRIORITY LOCAL INFILE 'x' INTO TABLE t", "PREPARE s FROM @q",
        "PREPARE s FROM CONCAT('SELECT', ' 1')", "EXECUTE IMMEDIATE @q",
        "PREPARE s FROM 'SET sql_mode = \\'\\''"}) {
    info = Analyze(sql);
    EXPECT_FALSE(info.unsafe.empty()) << sql;
    EXPECT_FALSE(info.unsafe_lifts_read_only) << sql;
    EXPECT_FALSE(info.read_only()) << sql;
  }
  EXPECT_EQ(Analyze("PREPARE s FROM @q").overall, C::kUnknown);
  for (const char* sql : {"SET NAMES utf8mb4", "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'",
                          "SET CHARACTER SET latin1", "SET character_set_results = binary",
                          "SET GLOBAL character_set_client = gbk", "/*!40101 SET NAMES utf8 */"}) {
    EXPECT_TRUE(Analyze(sql).unsafe.empty()) << sql;
  }
  for (const char* sql :
       {"SET tx_read_only = 0", "SET SESSION tx_read_only = OFF", "SET @@tx_read_only = DEFAULT",
        "SET @@session.transaction_read_only = @x", "SET TRANSACTION READ WRITE",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
        "START TRANSACTION READ WRITE", "SET STATEMENT tx_read_only = 0 FOR DELETE FROM t",
        "PREPARE s FROM 'START TRANSACTION READ WRITE'"}) {
    info = Analyze(sql);
    EXPECT_TRUE(info.unsafe_lifts_read_only) << sql;
    EXPECT_FALSE(info.unsafe.empty()) << sql;
  }
  for (const char* sql : {"SET tx_read_only = 1", "SET SESSION TRANSACTION READ ONLY",
                          "START TRANSACTION READ ONLY", "SET GLOBAL TRANSACTION READ WRITE"}) {
    EXPECT_TRUE(Analyze(sql).unsafe.empty()) << sql;
  }
  EXPECT_EQ(Analyze("SET SESSION TRANSACTION READ ONLY").statements[0].settings,
            (std::vector<SettingChange>{{"tx_read_only", "1"}}));
  EXPECT_EQ(Analyze("USE `Shop`").statements[0].database, "shop");
}

TEST(MysqlSqlAnalysis, MultiStatementTexts) {
  StatementInfo info = Analyze("SELECT 1; DROP TABLE t;");
  ASSERT_EQ(info.statements.size(), 2u);
  EXPECT_EQ(info.overall, C::kDdl);
  EXPECT_EQ(info.deciding_kind(), "DROP TABLE");
  // USE earlier in the text qualifies the tables after it.
  info = Analyze("DELETE FROM a WHERE id = 1; USE other; DELETE FROM b WHERE id = 1");
  EXPECT_EQ(info.statements[0].relations, (std::vector<Relation>{{"", "a"}}));
  EXPECT_EQ(info.statements[2].relations, (std::vector<Relation>{{"other", "b"}}));
  // A statement after a change of the lexing mode was lexed in the old one.
  info = Analyze("SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT '\\'; DROP TABLE t; -- '");
  EXPECT_EQ(info.overall, C::kUnknown);
  EXPECT_EQ(info.statements.size(), 2u);
  EXPECT_TRUE(info.changes_sql_mode);
  // A mode that does not change lexing lets the rest be classified.
  EXPECT_EQ(Analyze("SET sql_mode = 'STRICT_ALL_TABLES'; SELECT 1").overall, C::kOther);
  // A comment holding a `;` splits nothing.
  EXPECT_EQ(Analyze("SELECT 1 /* ; DROP TABLE t */").statements.size(), 1u);
}

TEST(MysqlSqlAnalysis, FailsClosed) {
  std::string big = "SELECT '" + std::string(kMaxParseBytes, 'x') + "'";
  StatementInfo info = Analyze(big);
  EXPECT_EQ(info.overall, C::kUnknown);
  EXPECT_FALSE(info.shape.fingerprint.empty());
  EXPECT_EQ(Analyze("SELECT 1", "ORACLE").overall, C::kUnknown);
  EXPECT_EQ(Analyze("SELECT 1 /*M!100000 , 2 */").overall, C::kUnknown);  // version unknown
  EXPECT_EQ(ClassName(Analyze("SELECT 1 /*M!100000 , 2 */", "", 101106).overall),
            std::string("read"));
  EXPECT_EQ(ClassOf("PREPARE a FROM 'PREPARE b FROM ''SELECT 1'''"), "unknown");
  EXPECT_EQ(ClassOf("PREPARE a FROM 'SELECT 1; SELECT 2'"), "unknown");
  EXPECT_EQ(ClassOf("SET STATEMENT x = 1 FOR"), "unknown");
  EXPECT_EQ(ClassOf("SET x"), "unknown");
}

// Every text from an alphabet of the lexer's and classifier's special bytes and words is
// analyzed without a crash (the sanitizer build runs this too), and what fails to lex is unknown.
TEST(MysqlSqlAnalysis, ArbitraryTexts) {
  const std::vector<std::string> pieces = {
      "'",     "\"",      "`",         "\\",     "/*",        "*/",    "/*!",  "/*M!",    "50000",
      "#",     "--",      " ",         "\n",     ";",         "(",     ")",    ",",       ".",
      "@",     "@@",      "=",         "0x",     "X'",        "1",     "e",    "select",  "delete",
      "from",  "t",       "where",     "set",    "sql_mode",  "names", "into", "outfile", "prepare",
      "s",     "explain", "analyze",   "create", "procedure", "begin", "end",  "drop",    "table",
      "use",   "for",     "statement", "or",     "not",       "like",  "'%'",  "load",    "data",
      "local", "infile",  "with",      "update", "\x80"};
  std::mt19937 random(20261207);
  for (int i = 0; i < 20000; ++i) {
    std::string sql;
    const int n = 1 + static_cast<int>(random() % 14);
    for (int k = 0; k < n; ++k) sql += pieces[random() % pieces.size()];
    for (const char* mode : {"", "ANSI_QUOTES,NO_BACKSLASH_ESCAPES"}) {
      LexMode lex_mode = LexModeFromSqlMode(mode, random() % 2 ? 101106 : 0);
      StatementInfo info = AnalyzeStatement(sql, lex_mode);
      if (!Lex(sql, lex_mode).error.empty()) {
        EXPECT_EQ(info.overall, C::kUnknown) << sql;
      }
      if (info.overall == C::kUnknown) {
        EXPECT_FALSE(info.parse_error.empty()) << sql;
      }
    }
  }
}

// Texts built to make a naive classifier quadratic or recurse without bound: each is analyzed in
// about linear time and ends as some class (the bound is generous: a quadratic pass over 1 MiB
// takes minutes).
TEST(MysqlSqlAnalysis, AdversarialTextsStayCheap) {
  auto repeat = [](absl::string_view unit, absl::string_view head, absl::string_view tail) {
    std::string s(head);
    while (s.size() + unit.size() + tail.size() < kMaxParseBytes)
      s.append(unit.data(), unit.size());
    return s + std::string(tail);
  };
  const std::vector<std::string> texts = {
      repeat("(", "SELECT * FROM t WHERE ", "1"),
      repeat("JOIN (", "SELECT * FROM t ", ""),
      repeat("JOIN x, ", "SELECT * FROM t ", "y"),
      repeat("(a, ", "SELECT * FROM ", "b"),
      repeat("SET STATEMENT a = 1 FOR ", "", "SELECT 1"),
      repeat("EXPLAIN ANALYZE ", "", "SELECT 1"),
      repeat("a OR ", "DELETE FROM t WHERE ", "b"),
      repeat("f(", "SELECT ", ""),
      repeat("f(1, ", "SELECT ", ""),
      repeat("JSON_TABLE(1) j, ", "SELECT * FROM ", "t"),
      repeat("c(a) AS (SELECT 1), ", "WITH ", "d AS (SELECT 1) SELECT 1"),
      repeat("/*!50000 1 */ + ", "SELECT ", "1"),
      repeat("SELECT 1;", "", ""),
  };
  // No clock here (speed is the benchmarks' business): a pass that were quadratic in these 1 MiB
  // texts would not finish within the test's ctest timeout.
  for (const std::string& sql : texts) {
    StatementInfo info = AnalyzeStatement(sql, LexMode());
    EXPECT_FALSE(info.statements.empty());
  }
}

TEST(MysqlSqlAnalysis, ShapeAndCache) {
  StatementInfo info = Analyze("SELECT * FROM t WHERE id = 5");
  EXPECT_EQ(info.shape.normalized, "select * from t where id = ?");
  EXPECT_EQ(info.shape.fingerprint.size(), 16u);
  EXPECT_EQ(info.shape.classification, "read");
  StatementCache cache(2);
  const StatementInfo& a = cache.Get("SELECT * FROM t WHERE id = 5", LexMode());
  EXPECT_TRUE(cache.Kept(a));
  const StatementInfo& b = cache.Get("select * from t where id = 6", LexMode());
  EXPECT_EQ(&a, &b);
  // The mode is part of the key: "x" is a string in one and a column in the other.
  const StatementInfo& c = cache.Get("SELECT \"x\" FROM t", LexModeFromSqlMode("ANSI_QUOTES"));
  EXPECT_TRUE(cache.Kept(c));
  EXPECT_NE(&a, &c);
  // Literal-sensitive analyses and unclassifiable texts are never kept.
  EXPECT_FALSE(cache.Kept(cache.Get("DELETE FROM t WHERE 1 = 1", LexMode())));
  EXPECT_FALSE(cache.Kept(cache.Get("SET sql_mode = ''", LexMode())));
  EXPECT_FALSE(cache.Kept(cache.Get("SELEC 1", LexMode())));
  EXPECT_FALSE(cache.Kept(cache.Get("SELECT 2 FROM u", LexMode())));  // full
}

TEST(MysqlSqlAnalysis, GuardrailsOverMysqlFacts) {
  v1::PolicySnapshot snapshot;
  v1::Connection prod;
  prod.set_name("shop");
  (*prod.mutable_tags())["env"] = "prod";
  v1::Guardrail* g = snapshot.add_guardrails();
  g->set_name("safety");
  g->mutable_connections()->add_names("shop");
  auto rule = [&](const char* match, v1::GuardrailAction action, const char* schema) {
    v1::GuardrailRule* r = g->add_rules();
    r->set_match(match);
    r->set_action(action);
    if (schema[0] != '\0') r->add_schemas(schema);
  };
  rule("delete_without_where", v1::GUARDRAIL_ACTION_BLOCK, "");
  rule("dangerous_function", v1::GUARDRAIL_ACTION_BLOCK, "");
  rule("ddl", v1::GUARDRAIL_ACTION_BLOCK, "");
  rule("ddl", v1::GUARDRAIL_ACTION_ALLOW, "scratch");
  session::GuardrailSet set(snapshot, prod, &DangerousFunctions());
  auto decide = [&](const char* sql, const char* database) {
    return set.Decide(Analyze(sql).statements, database);
  };
  using D = session::GuardrailDecision;
  EXPECT_EQ(decide("/*!50000 DELETE FROM t */", "shop").match, "delete_without_where");
  EXPECT_EQ(decide("SELECT load_file('/etc/passwd')", "shop").target, "load_file");
  EXPECT_EQ(decide("CREATE TABLE x (a int)", "scratch").action, D::kAllow);
  EXPECT_EQ(decide("CREATE TABLE x (a int)", "shop").action, D::kBlock);
  // USE in the same text: the table is known to be in shop, whatever the session thought.
  EXPECT_EQ(decide("USE shop; CREATE TABLE x (a int)", "scratch").action, D::kBlock);
  EXPECT_EQ(decide("DELIMITER //", "shop").guardrail, "(default)");
}

// The classification corpus (classification_corpus.jsonl), one case per line:
//   {"sql_mode": "...", "sql": "...", "class": "...", "guarded": [...],
//    optional "unsafe": bool, "lifts_read_only": bool, "functions": [...],
//    "mariadb_version": N (the server's version, for versioned comments),
//    "server": what MariaDB 10.11 does when it is not `class` ("error": it refuses the text; a
//              class: the agent deliberately classifies more strictly), "note": why}
// `class` and `guarded` are what the classifier must say; a differential test runs each case
// against a real MariaDB 10.11 and checks that the server does what `server` (or `class`) says.
TEST(MysqlSqlAnalysis, Corpus) {
  std::ifstream in(std::string(SLUICE_SOURCE_DIR) +
                   "/tests/agent/mysql/classification_corpus.jsonl");
  ASSERT_TRUE(in.good());
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json c = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(c.is_object()) << line;
    ++cases;
    const std::string sql = c.value("sql", "");
    StatementInfo info =
        Analyze(sql, c.value("sql_mode", "").c_str(), c.value("mariadb_version", 0u));
    EXPECT_EQ(ClassName(info.overall), c.value("class", "")) << sql << " " << info.parse_error;
    std::vector<std::string> guarded;
    std::vector<std::string> functions;
    for (const auto& s : info.statements) {
      for (const auto& k : s.guarded) guarded.push_back(k);
      for (const auto& f : s.functions) functions.push_back(f);
    }
    EXPECT_EQ(guarded, c.value("guarded", std::vector<std::string>{})) << sql;
    EXPECT_EQ(!info.unsafe.empty(), c.value("unsafe", false)) << sql << " " << info.unsafe;
    EXPECT_EQ(info.unsafe_lifts_read_only, c.value("lifts_read_only", false)) << sql;
    if (c.contains("functions")) {
      EXPECT_EQ(functions, c.value("functions", std::vector<std::string>{})) << sql;
    }
  }
  EXPECT_GE(cases, 60);
}

}  // namespace
}  // namespace sluice::agent::mysql
