// What a protocol's SQL analysis reports of one statement, in the terms guardrails match on
// (agent/session/guardrails.h). Each protocol's analysis derives its own facts from these
// (agent/postgres/sql_analysis.h from PostgreSQL's grammar, agent/mysql/sql_analysis.h from the
// agent's MySQL/MariaDB lexer) and adds what only that protocol needs.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/session/decision.h"

namespace sluice::agent::session {

// A table a statement names: schema empty when unqualified (PostgreSQL: found on the
// search_path; MySQL/MariaDB: in the session's current database). A MySQL database named on its
// own (DROP DATABASE d) is {d, ""}.
struct Relation {
  std::string schema;
  std::string table;
  bool operator==(const Relation&) const = default;
};

struct StatementFacts {
  StatementClass cls = StatementClass::kUnknown;
  // What the statement is, for messages and events: PostgreSQL's parse node name ("DeleteStmt"),
  // MySQL's leading keywords ("DELETE", "DROP TABLE"); empty when it could not be read.
  std::string kind;
  // What guardrails match on besides `cls` (ddl, dcl and unknown come from `cls`):
  // drop_database, drop_table, truncate, delete_without_where, update_without_where, and the
  // protocol's own (PostgreSQL: alter_system, copy_program).
  std::vector<std::string> guarded;
  std::vector<Relation> relations;     // every table it names
  std::vector<std::string> functions;  // every function it calls, lower-case, without schema
};

// The kind of the statement that decided a string's overall class (for messages): the first of
// `statements` of class `overall`; "unparsed text" when it could not be read. A view into it.
template <typename Facts>
absl::string_view DecidingKind(const std::vector<Facts>& statements, StatementClass overall) {
  for (const StatementFacts& s : statements) {
    if (s.cls != overall) continue;
    return s.kind.empty() ? absl::string_view("unparsed text") : absl::string_view(s.kind);
  }
  return "";
}

}  // namespace sluice::agent::session
