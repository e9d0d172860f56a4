// What the session core decides, as values: a caller's login refused, a statement allowed,
// alerted on, refused (with the kind of refusal) or held for approval. A protocol adapter turns a
// decision into its wire (agent/postgres/refusal.h: a Refuse becomes an ErrorResponse with its
// SQLSTATE); nothing here knows a wire.
#pragma once

#include <optional>
#include <string>
#include <variant>

#include "common/audit/events.h"

namespace sluice::agent::session {

// What a statement does, as a protocol's SQL analysis classifies it (agent/postgres/sql_analysis.h
// for PostgreSQL, agent/mysql/sql_analysis.h for MySQL and MariaDB). Ordered by privilege: a
// string's class is the highest of its statements'.
enum class StatementClass {
  kEmpty,    // nothing but whitespace and comments
  kRead,     // SELECT (no writing CTE, no INTO), SHOW, EXPLAIN without ANALYZE, COPY ... TO STDOUT,
             // FETCH
  kOther,    // session and transaction control: BEGIN, SET, DISCARD, PREPARE (of a read), EXECUTE,
             // LISTEN
  kWrite,    // INSERT/UPDATE/DELETE/MERGE anywhere (CTEs included), COPY FROM, CALL, LOCK, NOTIFY,
             // calls of functions with effects a read-only transaction does not stop
  kDdl,      // CREATE/ALTER/DROP/TRUNCATE/COMMENT/VACUUM/..., SELECT INTO, ALTER SYSTEM
  kDcl,      // GRANT/REVOKE, roles, ownership, default privileges, row security policies
  kUnknown,  // cannot be classified: DO blocks, LOAD, text the parser refuses, statements over the
             // size cap
};

// "empty", "read", "other", "write", "ddl", "dcl", "unknown" (the audit's `classification`).
const char* ClassName(StatementClass c);

// What the guardrails say of a statement: the rule that decided it, by name
// (agent/session/guardrails.h evaluates the rules over a protocol's statement facts).
struct GuardrailDecision {
  enum Action { kAllow = 0, kAlert = 1, kRequireApproval = 2, kBlock = 3 };
  Action action = kAllow;
  std::string guardrail;       // the Guardrail's name ("(default)" for the production unknown rule)
  std::string match;           // the rule's kind
  std::string target;          // what matched: a table, a function, or empty
  std::string approval;        // ApprovalPolicy, for require_approval
  std::string statement_kind;  // the parser's node name of the deciding statement
};

// "allow", "alert", "require_approval", "block".
const char* ActionName(GuardrailDecision::Action a);

// The statement runs.
struct Allow {};

// The statement runs; an `alert` guardrail wants it known (an alert event).
struct Alert {
  GuardrailDecision guardrail;
};

// Refused: a login, or a statement (which then never reaches the server; the session goes on).
struct Refuse {
  audit::RefusalKind kind = audit::RefusalKind::kOther;
  std::string message;  // what the caller is told ("Sluice: ..."); its wire adds the code
  std::string detail;   // a login's refusal: why, without the agent's wording (a token's verifier)
  // A statement's: the audit's `decision` (audit::StatementEvent::kRefused, kBlocked, kDenied),
  // and the guardrail rule when one decided.
  const char* decision = audit::StatementEvent::kRefused;
  std::optional<GuardrailDecision> guardrail;
};

// The statement waits for approvers (agent/session/approval_hold.h) before it goes anywhere.
struct Hold {
  GuardrailDecision guardrail;
};

using Decision = std::variant<Allow, Alert, Refuse, Hold>;

}  // namespace sluice::agent::session
