// Guardrails on one connection, for every protocol: what a statement's facts (from the
// protocol's SQL analysis, agent/session/statement_facts.h) mean under the Guardrail rules that
// select the connection. The protocol supplies its list of dangerous functions and, per decision,
// the schema an unqualified table is taken to be in.
//
// Per statement, every rule whose `match` kind the statement has, and whose target patterns
// match, is a candidate:
//   - an `allow` rule is an exception for its kind: candidates of the same kind are dropped
//     (other kinds still apply: allowing `ddl` in schema scratch does not allow `drop_table`
//     there if a drop_table rule blocks it);
//   - of the rest, the strictest wins: block > require_approval > alert (the first on ties).
// Targets: `tables` / `schemas` globs (fnmatch) match when any table the statement names
// matches. An unqualified table matches every schema pattern of a restricting rule (it may be
// in any schema: PostgreSQL's search_path; MySQL's current database as the agent knows it may
// lag a USE), and of an allow rule only the patterns that match `unqualified_schema` (PostgreSQL:
// "public"; MySQL: the session's current database; none when that is empty).
// `dangerous_function` matches calls of the protocol's list or of the rule's `functions`.
// Where a guardrail applies to a connection tagged env=prod or env=production, an `unknown`
// statement that no rule decides is blocked (fail closed).
// A string of several statements gets the strictest decision among them (the first on ties).
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/session/decision.h"
#include "agent/session/statement_facts.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::session {

class GuardrailSet {
 public:
  GuardrailSet() = default;
  // The rules of the snapshot's Guardrails that select `connection`. `dangerous_functions` (the
  // protocol's built-in list for `dangerous_function`, lower-case) must outlive the set; null
  // means none.
  GuardrailSet(const v1::PolicySnapshot& snapshot, const v1::Connection& connection,
               const std::vector<std::string>* dangerous_functions);

  bool empty() const { return rules_.empty(); }

  // The decision for one statement.
  GuardrailDecision DecideOne(const StatementFacts& facts,
                              absl::string_view unqualified_schema) const;

  // The decision for a string of statements: the strictest of DecideOne's, the first on ties.
  template <typename Facts>
  GuardrailDecision Decide(const std::vector<Facts>& statements,
                           absl::string_view unqualified_schema) const {
    static_assert(std::is_base_of_v<StatementFacts, Facts>);
    GuardrailDecision overall;
    if (rules_.empty()) return overall;
    for (const Facts& facts : statements) {
      GuardrailDecision one = DecideOne(facts, unqualified_schema);
      if (one.action > overall.action) overall = std::move(one);
    }
    return overall;
  }

 private:
  struct Rule {
    std::string guardrail;
    v1::GuardrailRule rule;
  };
  bool KindMatches(const v1::GuardrailRule& rule, const StatementFacts& facts,
                   std::string* target) const;

  std::vector<Rule> rules_;
  const std::vector<std::string>* dangerous_functions_ = nullptr;
  bool production_ = false;
};

}  // namespace sluice::agent::session
