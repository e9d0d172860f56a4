// What a PostgreSQL statement string does, from PostgreSQL's own parser (libpg_query): one class
// per statement of a multi-statement string, and the string's overall class (the most
// privileged of them). Parsing is expensive at data-path rates, so results are cached by query
// shape (the lexer's normalized text: literals and parameters stripped). A shape is a sound key
// only for facts that no literal decides: an analysis that looked at a literal's value (a WHERE
// of constants, EXPLAIN (ANALYZE 0), a setting's value, set_config's arguments) is marked
// `literal_sensitive` and never cached, so one caller's text never decides another's.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/strings/string_view.h"
#include "agent/postgres/lineage.h"
#include "agent/session/decision.h"
#include "agent/session/statement_facts.h"
#include "common/sql/lexer.h"

namespace sluice::agent::postgres {

// The classification (agent/session/decision.h), from PostgreSQL's grammar here.
using session::ClassName;
using session::StatementClass;

// A table a statement names: schema empty when unqualified (agent/session/statement_facts.h).
using Relation = session::Relation;

// A session setting a statement changes: SET / SET LOCAL / RESET / SET ... TO DEFAULT,
// set_config(), and transaction characteristics (BEGIN READ WRITE, SET TRANSACTION ...,
// SET SESSION CHARACTERISTICS ..., as transaction_read_only / default_transaction_read_only).
struct SettingChange {
  std::string name;         // lower-case; empty when it cannot be told (a computed name)
  std::string value;        // as text, when known
  bool reset = false;       // RESET / DEFAULT: back to the session's start value ("all": RESET ALL)
  bool value_known = true;  // false when the value is computed at run time
  bool operator==(const SettingChange&) const = default;
};

// The neutral facts (agent/session/statement_facts.h): `kind` is the parser's node name, e.g.
// "DeleteStmt" (empty when unparseable); `guarded` is found anywhere in the statement (CTEs,
// subqueries, EXPLAIN ANALYZE included) and adds alter_system and copy_program to the common
// kinds. Then what only PostgreSQL's path uses:
struct StatementFacts : session::StatementFacts {
  std::vector<SettingChange> settings;  // session settings it changes
  // Runs code the agent cannot see into (DO, CALL, functions that run SQL from a string): what.
  std::string runs_hidden_code;
  StatementLineage lineage;  // where its values come from and go (agent/postgres/lineage.h)
};

struct StatementInfo {
  sql::Shape shape;                        // normalized text and fingerprint (from the lexer)
  std::vector<StatementFacts> statements;  // one per statement, in order
  StatementClass overall = StatementClass::kEmpty;
  std::string parse_error;  // why it could not be classified, when overall is kUnknown
  // Some fact came from a literal's value (see the file comment): valid for this exact text only.
  bool literal_sensitive = false;

  // Nothing in it writes, changes the schema or privileges, or escapes classification.
  bool read_only() const { return overall <= StatementClass::kOther; }
  // The statement that decided `overall` (for messages): e.g. "DeleteStmt" (valid while this is).
  absl::string_view deciding_kind() const;
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

// `text` read as a boolean the way PostgreSQL reads one ('t', 'yes', 'on', '1', 'of', ... in any
// case, blanks around); nullopt when it is none.
std::optional<bool> BoolText(absl::string_view text);

// Functions with effects a read-only transaction does not stop (large objects, other sessions,
// remote SQL, server files): a statement calling one is a write.
const std::vector<std::string>& WritingFunctions();

// Functions that run SQL given to them as a string: what they run is invisible to the agent.
const std::vector<std::string>& SqlFromStringFunctions();

// Texts longer than this are not parsed (kUnknown): parsing cost must stay bounded.
inline constexpr size_t kMaxParseBytes = 1 << 20;

// Parses and classifies `sql` (no cache).
StatementInfo AnalyzeStatement(absl::string_view sql);

// AnalyzeStatement results by shape, bounded. Not thread-safe: one per thread. Only analyses
// that no literal decided are kept, and only for texts the lexer saw whole (a text longer than
// sql::kMaxLexBytes is normalized on its prefix only, so it is always analyzed afresh).
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
