#include "agent/postgres/guardrails.h"

#include <fnmatch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/policy/selectors.h"

namespace sluice::agent::postgres {
namespace {

bool Glob(const std::string& pattern, const std::string& value) {
  return fnmatch(pattern.c_str(), value.c_str(), 0) == 0;
}

bool AnyGlob(const google::protobuf::RepeatedPtrField<std::string>& patterns,
             const std::string& value) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return Glob(p, value); });
}

// Whether the rule's target patterns accept the statement; `target` names what matched.
bool TargetMatches(const v1::GuardrailRule& rule, const StatementFacts& facts,
                   std::string* target) {
  if (rule.schemas().empty() && rule.tables().empty()) return true;
  const bool exception = rule.action() == v1::GUARDRAIL_ACTION_ALLOW;
  for (const Relation& r : facts.relations) {
    bool schema_ok = rule.schemas().empty() ||
                     (r.schema.empty() ? (exception ? AnyGlob(rule.schemas(), "public") : true)
                                       : AnyGlob(rule.schemas(), r.schema));
    bool table_ok = rule.tables().empty() || AnyGlob(rule.tables(), r.table);
    if (schema_ok && table_ok) {
      *target = r.schema.empty() ? r.table : absl::StrCat(r.schema, ".", r.table);
      return true;
    }
  }
  return false;
}

// Whether the statement has the rule's kind; `target` names the function for dangerous_function.
bool KindMatches(const v1::GuardrailRule& rule, const StatementFacts& facts, std::string* target) {
  const std::string& m = rule.match();
  if (m == "ddl") return facts.cls == StatementClass::kDdl;
  if (m == "dcl") return facts.cls == StatementClass::kDcl;
  if (m == "unknown") return facts.cls == StatementClass::kUnknown;
  if (m == "dangerous_function") {
    for (const std::string& f : facts.functions) {
      const auto& builtin = DangerousFunctions();
      if (std::find(builtin.begin(), builtin.end(), f) != builtin.end() ||
          std::find(rule.functions().begin(), rule.functions().end(), f) !=
              rule.functions().end()) {
        *target = f;
        return true;
      }
    }
    return false;
  }
  return std::find(facts.guarded.begin(), facts.guarded.end(), m) != facts.guarded.end();
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

const std::vector<std::string>& DangerousFunctions() {
  static const auto* f = new std::vector<std::string>{
      "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
      "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_drop_replication_slot",
      "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write",
      "pg_file_rename", "pg_file_unlink", "lo_import", "lo_export", "dblink", "dblink_exec",
      "dblink_connect", "dblink_connect_u", "dblink_send_query",
      // SQL given as a string runs where the agent cannot see it.
      "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
      "dblink_open", "dblink_build_sql_insert"};
  return *f;
}

GuardrailSet::GuardrailSet(const v1::PolicySnapshot& snapshot, const v1::Connection& connection) {
  for (const auto& g : snapshot.guardrails()) {
    if (!policy::SelectsConnection(g.connections(), connection)) continue;
    for (const auto& r : g.rules()) rules_.push_back(Rule{g.name(), r});
  }
  auto env = connection.tags().find("env");
  production_ =
      env != connection.tags().end() && (env->second == "prod" || env->second == "production");
}

GuardrailDecision GuardrailSet::Decide(const StatementInfo& info) const {
  GuardrailDecision overall;
  if (rules_.empty()) return overall;
  for (const StatementFacts& facts : info.statements) {
    std::vector<std::string> allowed_kinds;
    std::vector<GuardrailDecision> candidates;
    bool unknown_decided = false;
    for (const Rule& r : rules_) {
      std::string target;
      if (!KindMatches(r.rule, facts, &target)) continue;
      if (!TargetMatches(r.rule, facts, &target)) continue;
      if (r.rule.match() == "unknown") unknown_decided = true;
      if (r.rule.action() == v1::GUARDRAIL_ACTION_ALLOW) {
        allowed_kinds.push_back(r.rule.match());
        continue;
      }
      if (target.empty() && !facts.relations.empty()) {
        // Name the table for the message and the event, even when the rule has no patterns.
        const Relation& t = facts.relations.front();
        target = t.schema.empty() ? t.table : absl::StrCat(t.schema, ".", t.table);
      }
      candidates.push_back(GuardrailDecision{ActionOf(r.rule.action()), r.guardrail, r.rule.match(),
                                             target, r.rule.approval(), facts.kind});
    }
    for (const GuardrailDecision& c : candidates) {
      if (std::find(allowed_kinds.begin(), allowed_kinds.end(), c.match) != allowed_kinds.end())
        continue;
      if (c.action > overall.action) overall = c;
    }
    if (facts.cls == StatementClass::kUnknown && !unknown_decided && production_ &&
        overall.action < GuardrailDecision::kBlock) {
      overall = GuardrailDecision{GuardrailDecision::kBlock,
                                  "(default)",
                                  "unknown",
                                  "",
                                  "",
                                  facts.kind.empty() ? "unparsed text" : facts.kind};
    }
  }
  return overall;
}

}  // namespace sluice::agent::postgres
