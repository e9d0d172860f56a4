// Internal to the MySQL statement analysis: nothing but agent/mysql/sql_*.cc includes this
// header; everyone else uses agent/mysql/sql_analysis.h. The classifier of one statement's tokens
// (sql_classify.cc, with SET, transactions and prepared statements in sql_classify_set.cc) and
// what it uses to read tokens and find facts (sql_facts.cc).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "agent/mysql/sql_analysis.h"
#include "agent/mysql/sql_lexer.h"

namespace sluice::agent::mysql::sql_analysis_internal {

using Tokens = absl::Span<const Token>;

// What classifying one statement needs and finds besides its facts.
struct Context {
  LexMode mode;
  int depth = 0;                // PREPARE / EXECUTE IMMEDIATE nesting
  int nesting = 0;              // statements inside statements (EXPLAIN, SET STATEMENT, WITH)
  bool sensitive = false;       // a literal's value decided something
  std::string error;            // why the statement is kUnknown
  bool changes_lexing = false;  // it changes sql_mode or the character set
};

// Classifies one statement (no `;` in `t`, not empty).
StatementFacts Classify(Tokens t, Context* ctx);

// Analysis of a text nested in a statement (PREPARE ... FROM '<text>'), one level deep.
StatementInfo AnalyzeNested(absl::string_view sql, Context* ctx);

// Classifiers by leading keyword (sql_classify_set.cc).
void ClassifySet(Tokens t, Context* ctx, StatementFacts* f);
void ClassifyStart(Tokens t, Context* ctx, StatementFacts* f);
void ClassifyPrepare(Tokens t, Context* ctx, StatementFacts* f);
void ClassifyExecute(Tokens t, Context* ctx, StatementFacts* f);

// Reading tokens (sql_facts.cc).
bool WordAt(Tokens t, size_t i, absl::string_view w);
bool PunctAt(Tokens t, size_t i, absl::string_view p);
bool NameAt(Tokens t, size_t i);  // a word or a quoted identifier
// The index just past the `)` matching the `(` at t[i] (t.size() when it is not closed).
size_t SkipParens(Tokens t, size_t i);
// The index of the first `w` at parenthesis depth 0 from `from`, or t.size().
size_t FindTopLevel(Tokens t, absl::string_view w, size_t from = 0);
// Parts of a statement split at top-level commas.
std::vector<Tokens> SplitTopLevel(Tokens t, absl::string_view separator);
bool ParensBalanced(Tokens t);
std::string Upper(absl::string_view s);
// A constant value: one string or number token, an introducer and a string (_utf8mb4'x'), or a
// signed number; or a word (ON, utf8mb4). Sets `*value`.
bool ConstantValue(Tokens t, std::string* value);

// Facts (sql_facts.cc).
template <typename T>
void AddUnique(std::vector<T>* v, T item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(std::move(item));
}
// Reads a comma-separated list of table references from t[i] (aliases, index hints and
// parenthesized joins skipped; subqueries skipped); returns the index after it.
size_t ReadTableList(Tokens t, size_t i, std::vector<Relation>* out);
// Tables named after FROM, JOIN, INTO, TABLE, REFERENCES anywhere in the statement.
void CollectRelations(Tokens t, std::vector<Relation>* out);
// Names the statement gives to row sources of its own, lower-case: CTE names (`WITH w AS (`) and
// every name after a closing parenthesis (derived tables' aliases, and by over-approximation
// expression aliases). Result columns that claim one of them as their table are not base columns.
void CollectDefinedNames(Tokens t, std::vector<std::string>* out);
// Whether the statement stores a value in a user variable (`@v := ...`, `... INTO @v`,
// `SET @v = ...`), where it outlives the statement and a later one can read it back.
bool AssignsUserVariables(Tokens t);
// Functions called anywhere in the statement, lower-case, without schema; and in `stored` (when
// not null) the calls the server may resolve to a stored function or a UDF: every qualified call
// (as `db.f`), and each unqualified one that is not built in (sql_builtin_functions.h).
void CollectFunctions(Tokens t, std::vector<std::string>* out,
                      std::vector<std::string>* stored = nullptr);
// Whether the statement (an UPDATE or DELETE) changes every row: no top-level WHERE, or a
// constant-true one.
bool WithoutWhere(Tokens t, size_t from, bool* sensitive);

}  // namespace sluice::agent::mysql::sql_analysis_internal
