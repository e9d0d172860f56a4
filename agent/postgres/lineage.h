// Column lineage of one PostgreSQL statement, from libpg_query's JSON parse tree: which table
// columns each result column's value is computed from, which table values leave the statement
// other than as result columns (NOTIFY payloads, settings, rows written elsewhere, cursors, casts
// whose errors quote the value), and every table column read anywhere.
//
// Pure and policy-independent: no catalog, so a table's columns are unknown and an unqualified
// column is taken from every table in scope that could have it. Conservative throughout: when
// unsure, a value is derived from more, never less; a tree shape the analysis does not know, or a
// way of reading table data it cannot follow (SQL run from a string, a whole table read by name,
// DO, CALL), is named in `opaque`.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace sluice::agent::postgres {

struct SourceColumn {
  std::string table;   // relation name as parsed (lower-case unless quoted), no schema; "" when the
                       // reference could come from any table in the statement (unresolved)
  std::string column;  // "" for a whole-row reference (every column of the table)
  bool operator==(const SourceColumn&) const = default;
};

struct OutputLineage {
  std::string name;                   // the column's label as PostgreSQL would choose it; best
                                      // effort, "" when not known (a `*`)
  std::vector<SourceColumn> sources;  // table columns its value is computed from (empty: none)
  // A top-level `*` / `t.*` expansion: stands for an unknown number of columns (those of tables;
  // a `*` over subqueries whose columns are all known is expanded into them instead), every one
  // of which is computed from at most `sources`.
  bool star = false;
  // A plain column reference with no computation (through subqueries and CTEs too), so the wire
  // names its table column; for a `*`: every column it stands for is such a column.
  bool plain = false;
};

struct Escape {  // a value read from a table leaving other than as a result column
  SourceColumn source;
  std::string
      how;  // e.g. "pg_notify", "set_config", "INSERT INTO notes", "CREATE TABLE x AS",
            // "DECLARE CURSOR c", "PREPARE p", "cast to int4" (an error message can quote it)
  bool operator==(const Escape&) const = default;
};

struct StatementLineage {
  // The columns of the rows this statement returns, in order: SELECT / VALUES / set operations,
  // RETURNING of INSERT/UPDATE/DELETE. Empty for statements that return no rows of their query
  // (EXPLAIN, DECLARE, PREPARE, CREATE TABLE AS, SELECT INTO, COPY).
  std::vector<OutputLineage> outputs;
  std::vector<Escape> escapes;
  std::vector<SourceColumn> reads;  // every table column referenced anywhere (WHERE, ORDER BY,
                                    // GROUP BY, JOIN ON, subqueries, ...); whole rows as column ""
  std::vector<std::string> tables;  // every table named (for resolving unresolved references)
  // Non-empty when the statement reads table data in a way the analysis cannot follow, naming it
  // ("query_to_xml runs SQL from a string", "DO block", "parse tree not understood: ..."); several
  // reasons are joined by "; ".
  std::string opaque;
};

// `stmt` is one statement node as libpg_query gives it: {"SelectStmt": {...}}, {"InsertStmt": ...}.
// Never throws.
StatementLineage ComputeLineage(const nlohmann::json& stmt);

// A one-line description, for tests and logs: outputs, escapes, reads, opaque.
std::string DescribeLineage(const StatementLineage& lineage);

}  // namespace sluice::agent::postgres
