// What a MySQL / MariaDB statement string does, from the agent's own lexer (sql_lexer.h) and a
// classifier by leading keywords: there is no MySQL grammar library to use (docs: mysql.md). It
// FAILS CLOSED: a text it cannot lex exactly as the server would, a leading keyword it does not
// know, a compound statement (BEGIN NOT ATOMIC, IF, a stored program body whose end it cannot
// find) is kUnknown with a parse_error; a statement that would undo what the agent relies on
// is `unsafe`. Output mirrors agent/postgres/sql_analysis.h: one StatementFacts per statement of
// a multi-statement text (split at `;` outside strings, comments and identifiers), and the
// text's overall class (the most privileged of them).
//
// Classes (session::StatementClass):
//   read:  SELECT (also FOR UPDATE / LOCK IN SHARE MODE: a read-only transaction allows these
//          locking reads; the locks end with the transaction), WITH ... SELECT, TABLE, VALUES,
//          SHOW, DESCRIBE / DESC / EXPLAIN (not executing), HELP, CHECKSUM TABLE;
//   other: BEGIN / START TRANSACTION / COMMIT / ROLLBACK / SAVEPOINT / RELEASE, SET of session
//          and user variables, SET ROLE, USE, PREPARE of a read, EXECUTE, DEALLOCATE, KILL,
//          UNLOCK TABLES, SELECT ... INTO @var, SIGNAL, GET DIAGNOSTICS;
//   write: INSERT, REPLACE, UPDATE, DELETE (multi-table too), LOAD DATA / XML, CALL, DO, HANDLER,
//          LOCK TABLES, XA, SELECT ... INTO OUTFILE / DUMPFILE (the server writes a file),
//          calls of WritingFunctions() and of functions that may be stored ones (`db.f()`, or a
//          name MariaDB does not have built in);
//   ddl:   CREATE / ALTER / DROP / RENAME / TRUNCATE, OPTIMIZE / REPAIR / ANALYZE / CHECK TABLE,
//          FLUSH, INSTALL / UNINSTALL, SET GLOBAL / PERSIST, RESET, PURGE, CHANGE MASTER,
//          START / STOP SLAVE / REPLICA, SHUTDOWN, BACKUP, CACHE / LOAD INDEX;
//   dcl:   GRANT, REVOKE, CREATE / ALTER / DROP / RENAME USER, CREATE / DROP ROLE, SET PASSWORD,
//          SET DEFAULT ROLE;
//   EXPLAIN ANALYZE and MariaDB's ANALYZE <statement> run their statement: its class (at least
//   read). SET STATEMENT ... FOR s: the class of s. PREPARE s FROM '<text>': the class of the
//   text (other for a read); EXECUTE IMMEDIATE '<text>': the class of the text.
//
// Tables: `db.t`, `` `db`.`t` ``; names are lower-cased (compare them with lower-case patterns),
// an unqualified table has an empty schema (the session's current database), except after a
// `USE db` earlier in the same text, which qualifies it with db. A database on its own (CREATE /
// DROP / ALTER DATABASE) is {db, ""}.
//
// Results are cached by shape (the lexer's normalized text and the LexMode); an analysis that
// looked at a literal's value (a setting's value, PREPARE's text, a constant WHERE) is
// `literal_sensitive` and never cached.
#pragma once

#include <string>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/strings/string_view.h"
#include "agent/mysql/sql_lexer.h"
#include "agent/session/decision.h"
#include "agent/session/statement_facts.h"
#include "common/sql/lexer.h"

namespace sluice::agent::mysql {

using session::ClassName;
using session::StatementClass;
using Relation = session::Relation;

// A session setting a statement changes: SET [SESSION | LOCAL | @@session.] name = value,
// SET NAMES / CHARACTER SET, SET SESSION TRANSACTION READ ONLY (as tx_read_only = 1).
struct SettingChange {
  std::string name;         // lower-case: "sql_mode", "names", "character set", "tx_read_only"
  std::string value;        // as text, when known
  bool reset = false;       // = DEFAULT: back to the server's global value
  bool value_known = true;  // false when the value is an expression
  bool operator==(const SettingChange&) const = default;
};

// The neutral facts (agent/session/statement_facts.h): `kind` is the leading keywords
// ("SELECT", "DELETE", "DROP TABLE", "SET GLOBAL"; empty when unknown); `guarded` holds
// drop_database, drop_table, truncate, delete_without_where, update_without_where (a
// DELETE / UPDATE without a top-level WHERE, or with one that is constant true: 1, TRUE, 1 = 1,
// 'a' = 'a', x = x, ... OR 1 = 1). Then what only the MySQL path uses:
struct StatementFacts : session::StatementFacts {
  std::vector<SettingChange> settings;  // session settings it changes
  // Runs code the agent cannot see into (CALL of a procedure, a call of a function that is not
  // built in, which may be a stored function or a UDF): what.
  std::string runs_hidden_code;
  // Why the agent cannot let it run, whatever the grant ("" when it can): sql_mode set to what
  // the lexer cannot follow, a character set other than utf8mb4 / utf8mb3 / utf8 / latin1 /
  // ascii / binary, read-only lifted, PREPARE or EXECUTE IMMEDIATE of text the agent cannot see,
  // LOAD DATA LOCAL (the server would ask the client for a file).
  std::string unsafe;
  // It would make the upstream session writable: SET tx_read_only / transaction_read_only to
  // anything but a true constant, SET [SESSION] TRANSACTION READ WRITE, START TRANSACTION READ
  // WRITE (also `unsafe`).
  bool unsafe_lifts_read_only = false;
  std::string database;  // USE db: the database it selects (after the server's OK)
  // Names it gives row sources of its own (CTEs, derived tables; lower-case): a result column
  // whose table is one of them is computed, not a base column (result_masking.h).
  std::vector<std::string> defined_names;
  // It stores a value in a user variable (`@v := ...`, `INTO @v`, `SET @v = ...`): a later
  // statement can read it back with no table in sight (masking refuses that, session_masking.cc).
  bool assigns_user_variables = false;
};

struct StatementInfo {
  sql::Shape shape;  // normalized text, fingerprint (as common/sql), classification = overall
  std::vector<StatementFacts> statements;  // one per statement, in order
  StatementClass overall = StatementClass::kEmpty;
  std::string parse_error;  // why it could not be classified, when a statement is kUnknown
  std::string unsafe;       // the first statement's `unsafe` reason
  bool unsafe_lifts_read_only = false;
  // A statement sets the session's sql_mode (to a value the lexer can follow, or DEFAULT): the
  // session lexes what comes after this text in the new mode, which it reads back from the
  // server once the text ran (a statement of this text after the change is kUnknown: it was
  // lexed in the old mode).
  bool changes_sql_mode = false;
  bool literal_sensitive = false;  // valid for this exact text only (see the file comment)

  bool read_only() const { return overall <= StatementClass::kOther && unsafe.empty(); }
  // The statement that decided `overall` (for messages): e.g. "DELETE" (valid while this is).
  absl::string_view deciding_kind() const;
};

// Functions `dangerous_function` matches without a `functions` list (for session::GuardrailSet):
// server files (load_file), commands of the lib_mysqludf_sys UDFs (sys_exec, sys_eval, sys_get,
// sys_set), CPU burning (benchmark), waits on replication (master_pos_wait, master_gtid_wait,
// source_pos_wait, wait_for_executed_gtid_set) and named locks other sessions see (get_lock,
// release_lock, release_all_locks). SLEEP is not on it.
const std::vector<std::string>& DangerousFunctions();

// Functions with effects a read-only transaction does not stop: a statement calling one is a
// write. Named locks (get_lock, release_lock, release_all_locks), the UDFs that run commands
// (sys_exec, sys_eval, sys_set) and sequences (nextval, setval, NEXT VALUE FOR). Besides these,
// a call of any function MariaDB does not have built in (sql_builtin_functions.h), and every
// qualified call `db.f()`, may be a stored function or a UDF: the statement is at least a write
// and its `runs_hidden_code` names the function.
const std::vector<std::string>& WritingFunctions();

// Texts longer than this are not analyzed (kUnknown).
inline constexpr size_t kMaxParseBytes = 1 << 20;

// Lexes and classifies `sql` as the server would in `mode` (no cache).
StatementInfo AnalyzeStatement(absl::string_view sql, const LexMode& mode);

// AnalyzeStatement results by shape and mode, bounded. Not thread-safe: one per thread. Only
// analyses that no literal decided and that lexed are kept.
class StatementCache {
 public:
  explicit StatementCache(size_t max_entries = 4096) : max_entries_(max_entries) {}
  // The reference is valid until the next call, or for the cache's life when Kept().
  const StatementInfo& Get(absl::string_view sql, const LexMode& mode);
  bool Kept(const StatementInfo& info) const { return &info != &uncached_; }

 private:
  size_t max_entries_;
  absl::node_hash_map<std::string, StatementInfo> cache_;
  StatementInfo uncached_;
};

}  // namespace sluice::agent::mysql
