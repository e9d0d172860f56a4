// What a BigQuery GoogleSQL text does (a `jobs.query` or a query job's SQL), from the agent's own
// lexer and a classifier by leading keywords, in the session core's terms
// (agent/session/statement_facts.h) so that the same guardrails and grants decide it as on the
// SQL paths. There is no GoogleSQL grammar library in Debian: like the MySQL path
// (agent/mysql/sql_analysis.h), it FAILS CLOSED — a text it cannot lex, a leading keyword it does
// not know, and procedural language (scripting: DECLARE, SET, IF, LOOP, BEGIN ... END, EXECUTE
// IMMEDIATE, CALL of a procedure it cannot see into) are kUnknown with a parse_error.
//
// Lexical structure (https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical):
// '...' and "..." strings, their triple-quoted forms, r/b prefixes (raw strings keep
// backslashes), `quoted identifiers` (which may hold a whole dotted path), # and -- comments to
// the end of the line, /* */ comments; statements are split at `;` outside all of those.
//
// Classes:
//   read:  SELECT, WITH ... SELECT, (SELECT ...);
//   other: BEGIN [TRANSACTION], COMMIT [TRANSACTION], ROLLBACK [TRANSACTION];
//   write: INSERT, UPDATE, DELETE, MERGE, LOAD DATA, EXPORT DATA (the query's rows leave for
//          Cloud Storage or another service), CALL (a procedure: code the agent does not see);
//   ddl:   CREATE / ALTER / DROP / UNDROP of schemas, tables, views, functions, procedures,
//          models, snapshots, search and vector indexes; TRUNCATE TABLE;
//   dcl:   GRANT, REVOKE, CREATE / DROP ROW ACCESS POLICY (who sees which rows);
//   unknown: scripting, EXTERNAL_QUERY() (runs SQL of its own on another database), a WITH whose
//          statement is not a query, anything else.
// Guarded (what guardrails match on besides the class): drop_database (DROP SCHEMA),
// drop_table (DROP TABLE / VIEW / MATERIALIZED VIEW / SNAPSHOT TABLE / EXTERNAL TABLE),
// truncate, delete_without_where / update_without_where (no top-level WHERE, or one that is
// constant true: TRUE, 1 = 1), export_data, load_data.
//
// Relations: every table named after FROM, JOIN, INTO, UPDATE, DELETE [FROM], MERGE [INTO],
// TRUNCATE TABLE, and the object of CREATE / ALTER / DROP: `dataset.table` or
// `project.dataset.table` (quoted or not; names lower-cased), a table without a dataset gets
// `default_dataset`. Projects named in table paths are reported apart (`projects`).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/session/decision.h"
#include "agent/session/statement_facts.h"

namespace sluice::agent::gcs {

// One output column of a plain SELECT, for masking by lineage (agent/gcs/bigquery_masking.h).
struct SelectItem {
  enum Kind { kColumn, kStar, kExpression };
  Kind kind = kExpression;
  std::string column;  // kColumn: the column's name in its table (lower-case)
  std::string name;    // the output's name: its alias, or the column's; "" when unknown
  // Every name the item uses that is not a function's: columns, or tables and aliases standing
  // for whole rows (TO_JSON_STRING(t)); lower-case, the last part of a path.
  std::vector<std::string> identifiers;
  bool star_replace = false;  // `* REPLACE (...)`: a star whose columns may hold anything
};

struct GoogleSqlStatement : session::StatementFacts {
  std::string parse_error;  // why it is kUnknown ("" otherwise)
  // A plain SELECT (no set operation, no AS STRUCT / AS VALUE) whose select list was read.
  bool simple_select = false;
  std::vector<SelectItem> select;
  // Names that stand for a table in FROM / JOIN: {alias or table name, table}, lower-case.
  std::vector<std::pair<std::string, std::string>> aliases;
};

struct GoogleSqlAnalysis {
  std::vector<GoogleSqlStatement> statements;
  session::StatementClass overall = session::StatementClass::kEmpty;  // the most privileged
  std::vector<std::string> projects;  // projects named in table paths, lower-case, once each
  std::string parse_error;            // the first statement's that is kUnknown
};

// Texts longer than this are not analysed (kUnknown).
inline constexpr size_t kMaxGoogleSqlBytes = 1 << 20;

GoogleSqlAnalysis AnalyzeGoogleSql(absl::string_view sql, absl::string_view default_dataset);

}  // namespace sluice::agent::gcs
