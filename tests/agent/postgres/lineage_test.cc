#include "agent/postgres/lineage.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pg_query.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "agent/postgres/sql_analysis.h"

namespace sluice::agent::postgres {

void PrintTo(const SourceColumn& c, std::ostream* os) {
  *os << (c.table.empty() ? "?" : c.table) << "." << (c.column.empty() ? "*" : c.column);
}
void PrintTo(const Escape& e, std::ostream* os) {
  PrintTo(e.source, os);
  *os << " -> " << e.how;
}

namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

SourceColumn C(const char* table, const char* column) { return SourceColumn{table, column}; }
Escape E(const char* table, const char* column, const char* how) {
  return Escape{C(table, column), how};
}

// The lineage of a one-statement text, through AnalyzeStatement (as the relay gets it).
StatementLineage L(const char* sql) {
  StatementInfo info = AnalyzeStatement(sql);
  EXPECT_TRUE(info.parse_error.empty()) << sql << ": " << info.parse_error;
  EXPECT_EQ(info.statements.size(), 1u) << sql;
  if (info.statements.empty()) return {};
  const StatementLineage& l = info.statements[0].lineage;
  std::cout << "  " << sql << "\n    " << DescribeLineage(l) << "\n";
  return l;
}

// ---- The attack pass: values read through expressions and side channels ----

TEST(Lineage, WholeRowReferences) {
  auto l = L("SELECT c FROM customers c");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "")));   // the row ...
  EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "c")));  // ... or a column named c
  EXPECT_FALSE(l.outputs[0].plain);
  EXPECT_TRUE(l.opaque.empty());

  l = L("SELECT row_to_json(c) FROM customers c");
  EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "")));
  EXPECT_FALSE(l.outputs[0].plain);

  l = L("SELECT to_jsonb(c.*) FROM customers c");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "")));

  l = L("SELECT customers FROM customers");  // unaliased: the table's name
  EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "")));

  // A subquery's row is its columns.
  l = L("SELECT json_agg(t) FROM (SELECT ssn FROM customers) t");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));

  // (c).field picks one column of the row.
  l = L("SELECT (c).id FROM customers c");
  EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "id")));
  EXPECT_THAT(l.outputs[0].sources, Not(Contains(C("customers", ""))));
}

TEST(Lineage, ExpressionsDeriveFromTheirColumns) {
  for (const char* sql :
       {"SELECT ssn || '' FROM customers", "SELECT format('%s', ssn) FROM customers",
        "SELECT array_agg(ssn) FROM customers", "SELECT upper(ssn) AS ssn FROM customers",
        "SELECT CASE WHEN id > 0 THEN ssn END FROM customers",
        "SELECT coalesce(NULL, ssn) FROM customers", "SELECT ARRAY[ssn] FROM customers",
        "SELECT ROW(ssn, 1) FROM customers", "SELECT ssn COLLATE \"C\" FROM customers",
        "SELECT string_agg(ssn, ',' ORDER BY id) FROM customers"}) {
    auto l = L(sql);
    ASSERT_EQ(l.outputs.size(), 1u) << sql;
    EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "ssn"))) << sql;
    EXPECT_FALSE(l.outputs[0].plain) << sql;
  }
  auto l = L("SELECT reverse(card) FROM customers");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "card")));
  EXPECT_EQ(l.outputs[0].name, "reverse");
}

TEST(Lineage, ThroughSubqueriesAndCtes) {
  auto l = L("SELECT x FROM (SELECT ssn || '' AS x FROM customers) s");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);  // the wire has no table for x

  l = L("SELECT s.x FROM (SELECT ssn AS x, id FROM customers) s");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_TRUE(l.outputs[0].plain);

  // Column aliases of the subquery rename its columns by position.
  l = L("SELECT b FROM (SELECT id, ssn FROM customers) s(a, b)");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));

  // A chain of CTEs.
  l =
      L("WITH a AS (SELECT ssn, id FROM customers), b AS (SELECT lower(ssn) AS s2 FROM a) SELECT "
        "s2 FROM b");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);

  // CTE column names.
  l = L("WITH a(x, y) AS (SELECT id, ssn FROM customers) SELECT y FROM a");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));

  // A name looked up through a `*` of a subquery.
  l = L("SELECT s.ssn, s.id FROM (SELECT * FROM customers) s");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "id")));
  EXPECT_TRUE(l.outputs[0].plain);

  // A scalar subquery, correlated.
  l = L("SELECT id, (SELECT c2.ssn FROM customers c2 WHERE c2.id = c.id) FROM customers c");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "ssn")));
  l = L(
      "SELECT (SELECT c.ssn FROM orders o LIMIT 1) FROM customers c");  // the outer query's column
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  l = L("SELECT ARRAY(SELECT ssn FROM customers)");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
}

TEST(Lineage, RecursiveCtesMixTheirColumns) {
  auto l =
      L("WITH RECURSIVE r(a, b) AS (SELECT ssn, '' FROM customers UNION ALL SELECT b, a FROM r) "
        "SELECT b FROM r");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);
  // The recursive arm sees what the CTE holds: its escapes are found.
  l =
      L("WITH RECURSIVE r(a) AS (SELECT ssn FROM customers UNION SELECT a FROM r WHERE "
        "pg_notify('c', a) IS NULL) "
        "SELECT 1 FROM r");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "pg_notify")));
  // CYCLE's path and SEARCH's ordering columns hold the CTE's values.
  l =
      L("WITH RECURSIVE t(id) AS (SELECT ssn FROM customers UNION ALL SELECT id FROM t) "
        "CYCLE id SET is_cycle USING path SELECT path FROM t");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  l =
      L("WITH RECURSIVE t(id) AS (SELECT ssn FROM customers UNION ALL SELECT id FROM t) "
        "SEARCH DEPTH FIRST BY id SET ord SELECT ord FROM t");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  l =
      L("WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT n "
        "FROM t");
  EXPECT_THAT(l.outputs[0].sources, IsEmpty());
  EXPECT_TRUE(l.opaque.empty());
}

TEST(Lineage, SetOperationsHaveNoPlainColumns) {
  auto l = L("SELECT ssn FROM customers UNION SELECT 'x'");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);

  l = L("SELECT id, 'x' FROM orders INTERSECT SELECT 1, email FROM customers");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("orders", "id")));
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "email")));

  // Stars do not line up: every column may hold anything of either side.
  l = L("SELECT * FROM customers UNION SELECT * FROM archive");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_TRUE(l.outputs[0].star);
  EXPECT_FALSE(l.outputs[0].plain);
  EXPECT_THAT(l.outputs[0].sources, UnorderedElementsAre(C("customers", ""), C("archive", "")));

  l = L("SELECT x FROM (SELECT ssn AS x FROM customers EXCEPT SELECT '1') s");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);
}

TEST(Lineage, FunctionsThatReadTablesOutOfSight) {
  auto l = L("SELECT query_to_xml('select ssn from customers', true, false, '')");
  EXPECT_THAT(l.opaque, ::testing::HasSubstr("query_to_xml"));
  l = L("SELECT table_to_xml('customers', true, false, '')");
  EXPECT_THAT(l.opaque, ::testing::HasSubstr("table_to_xml"));
  l = L("SELECT * FROM dblink('dbname=x', 'select ssn from customers') AS t(s text)");
  EXPECT_THAT(l.opaque, ::testing::HasSubstr("dblink"));
  l = L("SELECT cursor_to_xml('c', 10, false, false, '')");
  EXPECT_FALSE(l.opaque.empty());
  l = L("SELECT most_common_vals FROM pg_stats WHERE attname = 'ssn'");
  EXPECT_THAT(l.opaque, ::testing::HasSubstr("pg_stats"));
  EXPECT_THAT(L("DO $$ BEGIN RAISE NOTICE 'x'; END $$").opaque, ::testing::HasSubstr("DO"));
  EXPECT_THAT(L("CALL leak(1)").opaque, ::testing::HasSubstr("CALL leak"));
  // Ordinary functions are followed.
  EXPECT_TRUE(L("SELECT lower(email), now() FROM customers").opaque.empty());
}

TEST(Lineage, SideChannelsAreEscapes) {
  auto l = L("SELECT pg_notify('ch', ssn) FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "pg_notify")));
  l = L("SELECT set_config('application_name', email, false) FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "email", "set_config")));
  l = L(
      "SELECT 1 FROM customers WHERE pg_advisory_lock(length(ssn)) IS NOT NULL");  // anywhere, not
                                                                                   // only outputs
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "pg_advisory_lock")));
  l =
      L("SELECT count(*) FROM customers c, LATERAL (SELECT pg_sleep(CASE WHEN c.ssn LIKE '1%' THEN "
        "1 END)) s");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "pg_sleep")));
  l = L("SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "lo_from_bytea")));
  // A cast can put the value into an error message.
  l = L("SELECT ssn::int FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "cast to int4")));
  l = L("SELECT id FROM customers WHERE CAST(ssn AS date) IS NULL");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "cast to date")));
  l = L("SELECT int8(card) FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "card", "cast to int8")));
  // Casts to text types cannot fail on text.
  EXPECT_THAT(L("SELECT ssn::text, ssn::varchar(3), id::text FROM customers").escapes, IsEmpty());
  // NOTIFY's payload is a literal.
  EXPECT_THAT(L("NOTIFY ch, 'hello'").escapes, IsEmpty());
  // A parameter of EXECUTE becomes a value of the prepared statement.
  l = L("EXECUTE p((SELECT ssn FROM customers LIMIT 1))");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "EXECUTE p")));
}

// ---- What a statement returns, reads and writes ----

TEST(Lineage, PlainColumnsAliasesAndJoins) {
  auto l =
      L("SELECT c.email AS e, c.ssn AS x, o.total FROM customers c JOIN orders o ON o.customer_id "
        "= c.id");
  ASSERT_EQ(l.outputs.size(), 3u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "email")));
  EXPECT_EQ(l.outputs[0].name, "e");
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_THAT(l.outputs[2].sources, ElementsAre(C("orders", "total")));
  for (const auto& o : l.outputs) EXPECT_TRUE(o.plain);
  EXPECT_THAT(l.reads, UnorderedElementsAre(C("customers", "email"), C("customers", "ssn"),
                                            C("orders", "total"), C("orders", "customer_id"),
                                            C("customers", "id")));
  EXPECT_THAT(l.tables, UnorderedElementsAre("customers", "orders"));

  // An unqualified column may be any table's.
  l = L("SELECT ssn FROM customers c JOIN orders o USING (id)");
  EXPECT_THAT(l.outputs[0].sources,
              UnorderedElementsAre(C("customers", "ssn"), C("orders", "ssn")));
  EXPECT_TRUE(l.outputs[0].plain);

  // Schema-qualified.
  l = L("SELECT public.customers.ssn FROM public.customers");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_TRUE(l.outputs[0].plain);

  // An aliased join.
  l = L("SELECT j.ssn FROM (customers c JOIN orders o ON true) j");
  EXPECT_THAT(l.outputs[0].sources,
              UnorderedElementsAre(C("customers", "ssn"), C("orders", "ssn")));

  // JOIN ... USING (id) AS x: x.id is either side's id.
  l = L("SELECT x.id FROM customers JOIN orders USING (id) AS x");
  EXPECT_THAT(l.outputs[0].sources, UnorderedElementsAre(C("customers", "id"), C("orders", "id")));

  // With no table to take it from, a column is unresolved.
  l = L("SELECT ssn");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);
}

TEST(Lineage, CountHasNoSourcesAndWhereIsOnlyRead) {
  auto l = L("SELECT count(*) FROM customers");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, IsEmpty());
  EXPECT_THAT(l.tables, ElementsAre("customers"));

  l = L("SELECT id FROM customers WHERE ssn = '1' ORDER BY email");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "id")));
  EXPECT_THAT(l.reads, UnorderedElementsAre(C("customers", "id"), C("customers", "ssn"),
                                            C("customers", "email")));
  EXPECT_THAT(l.escapes, IsEmpty());

  l = L("SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.ssn = o.ref)");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("orders", "id")));
  EXPECT_THAT(l.reads, Contains(C("customers", "ssn")));
}

TEST(Lineage, StarExpansions) {
  auto l = L("SELECT * FROM customers");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_TRUE(l.outputs[0].star);
  EXPECT_TRUE(l.outputs[0].plain);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "")));

  l = L("SELECT o.id, c.* FROM customers c JOIN orders o ON true");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_TRUE(l.outputs[1].star);
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "")));

  // A star over a subquery whose columns are known becomes those columns.
  l = L("SELECT * FROM (SELECT ssn || '' AS x, id FROM customers) s");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_FALSE(l.outputs[0].star);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);
  EXPECT_TRUE(l.outputs[1].plain);

  l = L("WITH a AS (SELECT lower(email) AS e FROM customers) SELECT * FROM a");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "email")));
  EXPECT_FALSE(l.outputs[0].plain);

  // A star over a star stays one.
  l = L("SELECT s.* FROM (SELECT * FROM customers) s");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_TRUE(l.outputs[0].star);
  EXPECT_TRUE(l.outputs[0].plain);

  EXPECT_TRUE(L("TABLE customers").outputs[0].star);
}

TEST(Lineage, LateralAndFunctionsInFrom) {
  auto l = L("SELECT c.id, l.x FROM customers c, LATERAL (SELECT c.ssn || '' AS x) l");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[1].plain);

  l =
      L("SELECT l.x FROM customers c CROSS JOIN LATERAL (SELECT o.total AS x FROM orders o WHERE "
        "o.cid = c.id) l");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("orders", "total")));

  // A set-returning function: its columns derive from its arguments.
  l = L("SELECT g FROM customers c, regexp_split_to_table(c.ssn, '-') g");
  EXPECT_THAT(l.outputs[0].sources, Contains(C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);
  l = L("SELECT * FROM customers c, unnest(ARRAY[c.ssn]) AS u(v)");
  EXPECT_THAT(l.outputs[0].sources,
              UnorderedElementsAre(C("customers", ""), C("customers", "ssn")));
  EXPECT_FALSE(l.outputs[0].plain);
}

TEST(Lineage, GroupingAndWindows) {
  auto l = L("SELECT email, count(*) FROM customers GROUP BY email HAVING max(ssn) > '1'");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "email")));
  EXPECT_THAT(l.outputs[1].sources, IsEmpty());
  EXPECT_THAT(l.reads, Contains(C("customers", "ssn")));

  // A window's value depends on how it partitions and orders (conservative).
  l =
      L("SELECT rank() OVER (PARTITION BY email ORDER BY ssn), sum(id) OVER w FROM customers "
        "WINDOW w AS (PARTITION BY card)");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[0].sources,
              UnorderedElementsAre(C("customers", "email"), C("customers", "ssn")));
  EXPECT_THAT(l.outputs[1].sources,
              UnorderedElementsAre(C("customers", "id"), C("customers", "card")));
  l = L("SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM customers");
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
}

TEST(Lineage, ValuesAndReturning) {
  auto l = L("VALUES (1, 'a'), ((SELECT ssn FROM customers LIMIT 1), 'b')");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_THAT(l.outputs[1].sources, IsEmpty());

  l = L("DELETE FROM customers WHERE id = 1 RETURNING ssn, ssn || 'x'");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_TRUE(l.outputs[0].plain);
  EXPECT_FALSE(l.outputs[1].plain);
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_THAT(l.escapes, IsEmpty());

  l = L("UPDATE orders o SET note = 'x' FROM customers c WHERE c.id = o.cid RETURNING c.ssn, o.*");
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
  EXPECT_TRUE(l.outputs[1].star);
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("orders", "")));

  // A writing CTE's RETURNING is a query's columns.
  l = L("WITH d AS (DELETE FROM customers RETURNING ssn) SELECT * FROM d");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_THAT(l.outputs[0].sources, ElementsAre(C("customers", "ssn")));
}

TEST(Lineage, WritesAreEscapes) {
  auto l = L("INSERT INTO notes (body) SELECT ssn FROM customers RETURNING id, body");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "INSERT INTO notes")));
  ASSERT_EQ(l.outputs.size(), 2u);
  EXPECT_THAT(l.outputs[1].sources, ElementsAre(C("notes", "body")));

  l = L("INSERT INTO notes SELECT * FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "", "INSERT INTO notes")));
  l = L("INSERT INTO notes VALUES (1, (SELECT email FROM customers LIMIT 1))");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "email", "INSERT INTO notes")));
  EXPECT_THAT(L("INSERT INTO notes VALUES (1, 'x')").escapes, IsEmpty());

  l = L("UPDATE notes SET body = c.ssn FROM customers c WHERE c.id = notes.cid");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "UPDATE notes")));
  // A value that stays in its own column is still masked there.
  l = L("UPDATE customers SET ssn = upper(ssn), note = ssn");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "UPDATE customers")));
  EXPECT_THAT(L("UPDATE customers SET ssn = trim(ssn)").escapes, IsEmpty());

  l =
      L("MERGE INTO notes n USING customers c ON n.cid = c.id "
        "WHEN MATCHED THEN UPDATE SET body = c.ssn WHEN NOT MATCHED THEN INSERT (cid, body) VALUES "
        "(c.id, c.email)");
  EXPECT_THAT(l.escapes, UnorderedElementsAre(E("customers", "ssn", "MERGE INTO notes"),
                                              E("customers", "id", "MERGE INTO notes"),
                                              E("customers", "email", "MERGE INTO notes")));
  EXPECT_THAT(l.outputs, IsEmpty());

  l = L(
      "INSERT INTO notes (id, body) SELECT id, email FROM customers "
      "ON CONFLICT (id) DO UPDATE SET body = excluded.body || (SELECT ssn FROM customers LIMIT 1)");
  EXPECT_THAT(l.escapes, Contains(E("customers", "email", "INSERT INTO notes")));
  EXPECT_THAT(l.escapes,
              Contains(E("customers", "ssn", "INSERT INTO notes ON CONFLICT DO UPDATE")));
}

TEST(Lineage, StatementsThatKeepValuesAreEscapes) {
  auto l = L("CREATE TABLE x AS SELECT ssn FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "CREATE TABLE x AS")));
  EXPECT_THAT(l.outputs, IsEmpty());
  l = L("SELECT ssn INTO x FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "SELECT INTO x")));
  EXPECT_THAT(l.outputs, IsEmpty());
  EXPECT_THAT(l.tables, UnorderedElementsAre("x", "customers"));
  l = L("CREATE MATERIALIZED VIEW mv AS SELECT * FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "", "CREATE MATERIALIZED VIEW mv")));
  // A view's columns are the view's on the wire, no longer the table's: plain ones escape too.
  l = L("CREATE VIEW v AS SELECT ssn FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "CREATE VIEW v")));
  l = L("COPY (SELECT ssn FROM customers) TO STDOUT");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "COPY (query) TO STDOUT")));
  l = L("COPY customers (ssn) TO '/tmp/x'");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "COPY customers TO file")));
  l = L("COPY customers TO STDOUT");  // masked by column on the wire
  EXPECT_THAT(l.escapes, IsEmpty());
  EXPECT_THAT(l.reads, ElementsAre(C("customers", "")));
  EXPECT_THAT(L("CREATE TABLE y AS EXECUTE p").opaque, ::testing::HasSubstr("EXECUTE"));

  // A cursor or prepared statement returns its rows later: plain columns are named by the wire
  // then, computed ones are not.
  l = L("DECLARE cur CURSOR FOR SELECT ssn, ssn || '' AS x, email FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "DECLARE CURSOR cur")));
  EXPECT_THAT(l.outputs, IsEmpty());
  l = L("PREPARE p (int) AS SELECT ssn, lower(email) FROM customers WHERE id = $1");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "email", "PREPARE p")));
  l = L("PREPARE q AS INSERT INTO notes SELECT ssn FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "INSERT INTO notes")));
  EXPECT_THAT(L("DECLARE c2 CURSOR FOR SELECT * FROM customers").escapes, IsEmpty());

  // EXPLAIN returns none of its query's values.
  l = L("EXPLAIN SELECT ssn FROM customers");
  EXPECT_THAT(l.outputs, IsEmpty());
  EXPECT_THAT(l.reads, ElementsAre(C("customers", "ssn")));
  l = L("EXPLAIN ANALYZE SELECT pg_notify('c', ssn) FROM customers");
  EXPECT_THAT(l.escapes, ElementsAre(E("customers", "ssn", "pg_notify")));
}

TEST(Lineage, UtilityStatements) {
  for (const char* sql :
       {"BEGIN", "SET application_name = 'x'", "SHOW search_path", "FETCH 10 FROM cur",
        "CREATE TABLE t (id int DEFAULT 1, CHECK (id > 0))", "DROP TABLE t", "LISTEN ch",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql RETURN a + 1"}) {
    auto l = L(sql);
    EXPECT_TRUE(l.opaque.empty()) << sql << ": " << l.opaque;
    EXPECT_THAT(l.outputs, IsEmpty()) << sql;
    EXPECT_THAT(l.escapes, IsEmpty()) << sql;
  }
  EXPECT_THAT(L("LOCK TABLE customers").tables, ElementsAre("customers"));
  // Expressions evaluated over a table's rows now are not followed.
  EXPECT_FALSE(L("ALTER TABLE customers ADD COLUMN x text GENERATED ALWAYS AS (ssn || '') STORED")
                   .opaque.empty());
  EXPECT_FALSE(L("CREATE INDEX ON customers ((ssn::int))").opaque.empty());
}

TEST(Lineage, MalformedTreesDoNotThrow) {
  using nlohmann::json;
  for (const char* text :
       {"null", "{}", "[]", "{\"SelectStmt\": 5}", "{\"SelectStmt\": {\"targetList\": 5}}",
        "{\"SelectStmt\": {\"targetList\": [5, {\"ResTarget\": {\"val\": []}}]}}",
        "{\"SelectStmt\": {\"fromClause\": [{\"RangeVar\": []}, {\"Bogus\": {}}, 7]}}",
        "{\"SelectStmt\": {\"op\": \"SETOP_UNION\"}}",
        "{\"SelectStmt\": {\"op\": 3, \"larg\": 1, \"rarg\": []}}",
        "{\"SelectStmt\": {\"targetList\": [{\"ResTarget\": {\"val\": {\"ColumnRef\": {\"fields\": "
        "1}}}}]}}",
        "{\"SelectStmt\": {\"targetList\": [{\"ResTarget\": {\"val\": {\"ColumnRef\": {\"fields\": "
        "[{\"Bogus\": 1}]}}}}]}}",
        "{\"SelectStmt\": {\"withClause\": {\"ctes\": [{\"CommonTableExpr\": {\"ctequery\": 1}}], "
        "\"recursive\": true}}}",
        "{\"InsertStmt\": {\"relation\": 1}}",
        "{\"UpdateStmt\": {\"relation\": {\"relname\": \"t\"}, \"targetList\": [1]}}",
        "{\"CopyStmt\": {\"query\": []}}", "{\"ExplainStmt\": {\"query\": 1}}",
        "{\"A\": 1, \"B\": 2}"}) {
    json tree = json::parse(text);
    StatementLineage l;
    EXPECT_NO_THROW(l = ComputeLineage(tree)) << text;
  }
  // A shape the analysis does not know is named, not skipped.
  EXPECT_FALSE(ComputeLineage(json::parse("{\"SelectStmt\": {\"fromClause\": [{\"Bogus\": {}}]}}"))
                   .opaque.empty());
  EXPECT_FALSE(ComputeLineage(json::parse("null")).opaque.empty());

  // Deep nesting stops, named.
  std::string deep = "SELECT ";
  for (int i = 0; i < 1500; ++i) deep += "(";
  deep += "ssn";
  for (int i = 0; i < 1500; ++i) deep += " || 'x')";
  deep += " FROM customers";
  PgQueryParseResult r = pg_query_parse(deep.c_str());
  if (r.error == nullptr) {
    json tree = json::parse(r.parse_tree);
    StatementLineage l = ComputeLineage(tree["stmts"][0]["stmt"]);
    EXPECT_THAT(l.opaque, ::testing::HasSubstr("nested too deeply"));
  }
  pg_query_free_parse_result(r);
}

// The cost: AnalyzeStatement with the lineage against the lineage alone, on a pgbench-like
// statement (it runs once per statement shape; results are cached by shape).
}  // namespace
}  // namespace sluice::agent::postgres
