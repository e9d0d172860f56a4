// Guardrails on a PostgreSQL connection: the protocol-neutral rules (agent/session/guardrails.h)
// over the facts PostgreSQL's grammar gives (sql_analysis.h), with PostgreSQL's list of dangerous
// functions. An unqualified table may live in any schema on the search_path: it matches every
// schema pattern of a restricting rule, and of an allow rule only the patterns matching "public".
#pragma once

#include <string>
#include <vector>

#include "agent/postgres/sql_analysis.h"
#include "agent/session/decision.h"
#include "agent/session/guardrails.h"
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
  GuardrailSet(const v1::PolicySnapshot& snapshot, const v1::Connection& connection)
      : set_(snapshot, connection, &DangerousFunctions()) {}

  bool empty() const { return set_.empty(); }
  GuardrailDecision Decide(const StatementInfo& info) const {
    return set_.Decide(info.statements, "public");
  }

 private:
  session::GuardrailSet set_;
};

}  // namespace sluice::agent::postgres
