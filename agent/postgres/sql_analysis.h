// What a PostgreSQL statement string does, from PostgreSQL's own parser (libpg_query): one class
// per statement of a multi-statement string, and the string's overall class (the most
// privileged of them). Parsing is expensive at data-path rates, so results are cached by query
// shape (the lexer's normalized text: literals and parameters stripped, which never changes what
// kind of statement it is); a repeated shape costs the lexer and one hash lookup.
#pragma once

#include <string>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/strings/string_view.h"
#include "common/sql/lexer.h"

namespace sluice::agent::postgres {

// Ordered by privilege: a string's class is the highest of its statements'.
enum class StatementClass {
  kEmpty,    // nothing but whitespace and comments
  kRead,     // SELECT (no writing CTE, no INTO), SHOW, EXPLAIN without ANALYZE, COPY ... TO STDOUT, FETCH
  kOther,    // session and transaction control: BEGIN, SET, DISCARD, PREPARE (of a read), EXECUTE, LISTEN
  kWrite,    // INSERT/UPDATE/DELETE/MERGE anywhere (CTEs included), COPY FROM, CALL, LOCK, NOTIFY
  kDdl,      // CREATE/ALTER/DROP/TRUNCATE/COMMENT/VACUUM/..., SELECT INTO, ALTER SYSTEM
  kDcl,      // GRANT/REVOKE, roles, ownership, default privileges, row security policies
  kUnknown,  // cannot be classified: DO blocks, LOAD, text the parser refuses, statements over the size cap
};

const char* ClassName(StatementClass c);

// A table a statement names: schema empty when unqualified.
struct Relation {
  std::string schema;
  std::string table;
  bool operator==(const Relation&) const = default;
};

struct StatementFacts {
  StatementClass cls = StatementClass::kUnknown;
  std::string kind;  // the parser's node name, e.g. "DeleteStmt" (empty when unparseable)
  // What guardrails match on, found anywhere in the statement (CTEs, subqueries, EXPLAIN
  // ANALYZE included): drop_database, drop_table, truncate, delete_without_where,
  // update_without_where, alter_system, copy_program. (ddl, dcl and unknown come from `cls`.)
  std::vector<std::string> guarded;
  std::vector<Relation> relations;     // every table it names
  std::vector<std::string> functions;  // every function it calls, lower-case, without schema
};

struct StatementInfo {
  sql::Shape shape;                       // normalized text and fingerprint (from the lexer)
  std::vector<StatementFacts> statements;  // one per statement, in order
  StatementClass overall = StatementClass::kEmpty;
  std::string parse_error;  // why it could not be classified, when overall is kUnknown

  // Nothing in it writes, changes the schema or privileges, or escapes classification.
  bool read_only() const { return overall <= StatementClass::kOther; }
  // The statement that decided `overall` (for messages): e.g. "DeleteStmt".
  std::string deciding_kind() const;
};

// A COPY ... TO STDOUT statement: what its output rows hold and how they are written.
struct CopyOutFacts {
  Relation relation;                 // COPY table: the table (empty table for COPY (query))
  std::vector<std::string> columns;  // the column list, when given
  bool query = false;                // COPY (query) TO STDOUT
  bool binary = false;
  bool csv = false;
  bool header = false;
  char delimiter = '\t';
  std::string null_string = "\\N";
  char quote = '"';
  char escape = '"';
  std::string problem;  // set when an option cannot be understood (the output cannot be masked)
};

// Every COPY ... TO STDOUT of `sql`, in order (parsed, never cached: the options are literals,
// which the shape cache does not see). Empty when there is none or the text does not parse.
std::vector<CopyOutFacts> CopyOutputs(absl::string_view sql);

// Texts longer than this are not parsed (kUnknown): parsing cost must stay bounded.
inline constexpr size_t kMaxParseBytes = 1 << 20;

// Parses and classifies `sql` (no cache).
StatementInfo AnalyzeStatement(absl::string_view sql);

// AnalyzeStatement results by shape, bounded. Not thread-safe: one per thread.
class StatementCache {
 public:
  explicit StatementCache(size_t max_entries = 4096) : max_entries_(max_entries) {}
  // The reference is valid until the next call, or for the cache's life when Kept().
  const StatementInfo& Get(absl::string_view sql);
  // Whether `info` (from Get) is a cache entry, which stays where it is (entries are never
  // evicted or moved).
  bool Kept(const StatementInfo& info) const { return &info != &uncached_; }

 private:
  size_t max_entries_;
  std::string scratch_;
  absl::node_hash_map<std::string, StatementInfo> cache_;
  StatementInfo uncached_;
};

}  // namespace sluice::agent::postgres
