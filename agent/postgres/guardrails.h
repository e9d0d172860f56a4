// Guardrails on one connection: what each statement's facts (from PostgreSQL's grammar, see
// sql_analysis.h) mean under the Guardrail rules that select the connection.
//
// Per statement, every rule whose `match` kind the statement has, and whose target patterns
// match, is a candidate:
//   - an `allow` rule is an exception for its kind: candidates of the same kind are dropped
//     (other kinds still apply: allowing `ddl` in schema scratch does not allow `drop_table`
//     there if a drop_table rule blocks it);
//   - of the rest, the strictest wins: block > require_approval > alert.
// Targets: `tables` / `schemas` globs (fnmatch) match when any table the statement names
// matches. An unqualified table may live in any schema (search_path), so it matches every
// schema pattern of a restricting rule, and only patterns matching "public" of an allow rule.
// `dangerous_function` matches calls of the built-in list (DangerousFunctions) or the rule's
// `functions`. Where a guardrail applies to a connection tagged env=prod or env=production,
// an `unknown` statement that no rule decides is blocked (fail closed).
// A string of several statements gets the strictest decision among them.
#pragma once

#include <string>
#include <vector>

#include "agent/postgres/sql_analysis.h"
#include "agent/session/decision.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::postgres {

// The decision (agent/session/decision.h): the rule that decided, by name.
using session::ActionName;
using session::GuardrailDecision;

// Functions `dangerous_function` matches without a `functions` list.
const std::vector<std::string>& DangerousFunctions();

class GuardrailSet {
 public:
  GuardrailSet() = default;
  // The rules of the snapshot's Guardrails that select `connection`.
  GuardrailSet(const v1::PolicySnapshot& snapshot, const v1::Connection& connection);

  bool empty() const { return rules_.empty(); }
  GuardrailDecision Decide(const StatementInfo& info) const;

 private:
  struct Rule {
    std::string guardrail;
    v1::GuardrailRule rule;
  };
  std::vector<Rule> rules_;
  bool production_ = false;
};

}  // namespace sluice::agent::postgres
