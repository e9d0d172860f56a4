#include "agent/session/guardrails.h"

#include <fnmatch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/policy/selectors.h"

namespace sluice::agent::session {
namespace {

bool Glob(const std::string& pattern, const std::string& value) {
  return fnmatch(pattern.c_str(), value.c_str(), 0) == 0;
}

bool AnyGlob(const google::protobuf::RepeatedPtrField<std::string>& patterns,
             const std::string& value) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return Glob(p, value); });
}

// How a table is named in messages and events: "schema.table", "table", or a database alone.
std::string TargetName(const Relation& r) {
  if (r.schema.empty()) return r.table;
  if (r.table.empty()) return r.schema;
  return absl::StrCat(r.schema, ".", r.table);
}

// Whether the rule's target patterns accept the statement; `target` names what matched.
bool TargetMatches(const v1::GuardrailRule& rule, const StatementFacts& facts,
                   const std::string& unqualified_schema, std::string* target) {
  if (rule.schemas().empty() && rule.tables().empty()) return true;
  const bool exception = rule.action() == v1::GUARDRAIL_ACTION_ALLOW;
  for (const Relation& r : facts.relations) {
    bool schema_ok = true;
    if (!rule.schemas().empty()) {
      if (!r.schema.empty()) {
        schema_ok = AnyGlob(rule.schemas(), r.schema);
      } else if (exception) {
        schema_ok = !unqualified_schema.empty() && AnyGlob(rule.schemas(), unqualified_schema);
      }
    }
    bool table_ok = rule.tables().empty() || AnyGlob(rule.tables(), r.table);
    if (schema_ok && table_ok) {
      *target = TargetName(r);
      return true;
    }
  }
  return false;
}

GuardrailDecision::Action ActionOf(v1::GuardrailAction a) {
  switch (a) {
    case v1::GUARDRAIL_ACTION_BLOCK:
      return GuardrailDecision::kBlock;
    case v1::GUARDRAIL_ACTION_REQUIRE_APPROVAL:
      return GuardrailDecision::kRequireApproval;
    case v1::GUARDRAIL_ACTION_ALERT:
      return GuardrailDecision::kAlert;
    default:
      return GuardrailDecision::kAllow;
  }
}

}  // namespace

GuardrailSet::GuardrailSet(const v1::PolicySnapshot& snapshot, const v1::Connection& connection,
                           const std::vector<std::string>* dangerous_functions)
    : dangerous_functions_(dangerous_functions) {
  for (const auto& g : snapshot.guardrails()) {
    if (!policy::SelectsConnection(g.connections(), connection)) continue;
    for (const auto& r : g.rules()) rules_.push_back(Rule{g.name(), r});
  }
  auto env = connection.tags().find("env");
  production_ =
      env != connection.tags().end() && (env->second == "prod" || env->second == "production");
}

// Whether the statement has the rule's kind; `target` names the function for dangerous_function.
bool GuardrailSet::KindMatches(const v1::GuardrailRule& rule, const StatementFacts& facts,
                               std::string* target) const {
  const std::string& m = rule.match();
  if (m == "ddl") return facts.cls == StatementClass::kDdl;
  if (m == "dcl") return facts.cls == StatementClass::kDcl;
  if (m == "unknown") return facts.cls == StatementClass::kUnknown;
  if (m == "dangerous_function") {
    for (const std::string& f : facts.functions) {
      bool builtin = dangerous_functions_ != nullptr &&
                     std::find(dangerous_functions_->begin(), dangerous_functions_->end(), f) !=
                         dangerous_functions_->end();
      if (builtin || std::find(rule.functions().begin(), rule.functions().end(), f) !=
                         rule.functions().end()) {
        *target = f;
        return true;
      }
    }
    return false;
  }
  return std::find(facts.guarded.begin(), facts.guarded.end(), m) != facts.guarded.end();
}

GuardrailDecision GuardrailSet::DecideOne(const StatementFacts& facts,
                                          absl::string_view unqualified_schema) const {
  GuardrailDecision decided;
  if (rules_.empty()) return decided;
  const std::string schema(unqualified_schema);
  std::vector<std::string> allowed_kinds;
  std::vector<GuardrailDecision> candidates;
  bool unknown_decided = false;
  for (const Rule& r : rules_) {
    std::string target;
    if (!KindMatches(r.rule, facts, &target)) continue;
    if (!TargetMatches(r.rule, facts, schema, &target)) continue;
    if (r.rule.match() == "unknown") unknown_decided = true;
    if (r.rule.action() == v1::GUARDRAIL_ACTION_ALLOW) {
      allowed_kinds.push_back(r.rule.match());
      continue;
    }
    // Name the table for the message and the event, even when the rule has no patterns.
    if (target.empty() && !facts.relations.empty()) target = TargetName(facts.relations.front());
    candidates.push_back(GuardrailDecision{ActionOf(r.rule.action()), r.guardrail, r.rule.match(),
                                           target, r.rule.approval(), facts.kind});
  }
  for (GuardrailDecision& c : candidates) {
    if (std::find(allowed_kinds.begin(), allowed_kinds.end(), c.match) != allowed_kinds.end())
      continue;
    if (c.action > decided.action) decided = std::move(c);
  }
  if (facts.cls == StatementClass::kUnknown && !unknown_decided && production_ &&
      decided.action < GuardrailDecision::kBlock) {
    decided = GuardrailDecision{GuardrailDecision::kBlock,
                                "(default)",
                                "unknown",
                                "",
                                "",
                                facts.kind.empty() ? "unparsed text" : facts.kind};
  }
  return decided;
}

}  // namespace sluice::agent::session
