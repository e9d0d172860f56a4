#include "agent/session/guardrails.h"

#include <gtest/gtest.h>

namespace sluice::agent::session {
namespace {

using A = v1::GuardrailAction;
using D = GuardrailDecision;

v1::GuardrailRule Rule(const std::string& match, v1::GuardrailAction action,
                       std::vector<std::string> tables = {},
                       std::vector<std::string> schemas = {}) {
  v1::GuardrailRule r;
  r.set_match(match);
  r.set_action(action);
  for (auto& t : tables) r.add_tables(t);
  for (auto& s : schemas) r.add_schemas(s);
  if (action == v1::GUARDRAIL_ACTION_REQUIRE_APPROVAL) r.set_approval("dba-on-call");
  return r;
}

StatementFacts Facts(StatementClass cls, std::string kind, std::vector<std::string> guarded = {},
                     std::vector<Relation> relations = {},
                     std::vector<std::string> functions = {}) {
  StatementFacts f;
  f.cls = cls;
  f.kind = std::move(kind);
  f.guarded = std::move(guarded);
  f.relations = std::move(relations);
  f.functions = std::move(functions);
  return f;
}

struct Fixture {
  v1::PolicySnapshot snapshot;
  v1::Connection prod;
  v1::Connection dev;
  std::vector<std::string> dangerous{"load_file"};
  Fixture() {
    prod.set_name("orders");
    (*prod.mutable_tags())["env"] = "production";
    dev.set_name("scratchpad");
    v1::Guardrail* g = snapshot.add_guardrails();
    g->set_name("production-safety");
    g->mutable_connections()->add_names("orders");
    *g->add_rules() = Rule("drop_table", A::GUARDRAIL_ACTION_BLOCK);
    *g->add_rules() = Rule("delete_without_where", A::GUARDRAIL_ACTION_ALERT);
    *g->add_rules() = Rule("delete_without_where", A::GUARDRAIL_ACTION_REQUIRE_APPROVAL);
    *g->add_rules() = Rule("truncate", A::GUARDRAIL_ACTION_BLOCK, {"audit_*"});
    *g->add_rules() = Rule("ddl", A::GUARDRAIL_ACTION_BLOCK);
    *g->add_rules() = Rule("ddl", A::GUARDRAIL_ACTION_ALLOW, {}, {"scratch"});
    *g->add_rules() = Rule("dangerous_function", A::GUARDRAIL_ACTION_BLOCK);
    *g->add_rules() = Rule("dcl", A::GUARDRAIL_ACTION_ALERT);
  }
};

TEST(SessionGuardrails, StrictestWinsAndAllowIsAnExceptionForItsKind) {
  Fixture f;
  GuardrailSet set(f.snapshot, f.prod, &f.dangerous);
  ASSERT_FALSE(set.empty());
  // Two rules of one kind: the stricter one.
  D d = set.DecideOne(
      Facts(StatementClass::kWrite, "DELETE", {"delete_without_where"}, {{"", "t"}}), "sales");
  EXPECT_EQ(d.action, D::kRequireApproval);
  EXPECT_EQ(d.approval, "dba-on-call");
  EXPECT_EQ(d.target, "t");  // named without patterns
  EXPECT_EQ(d.statement_kind, "DELETE");
  // ddl allowed in scratch, but drop_table still blocks there.
  EXPECT_EQ(
      set.DecideOne(Facts(StatementClass::kDdl, "CREATE TABLE", {}, {{"scratch", "t"}}), "").action,
      D::kAllow);
  d = set.DecideOne(Facts(StatementClass::kDdl, "DROP TABLE", {"drop_table"}, {{"scratch", "t"}}),
                    "");
  EXPECT_EQ(d.action, D::kBlock);
  EXPECT_EQ(d.match, "drop_table");
  EXPECT_EQ(d.target, "scratch.t");
  // A database on its own is named by itself.
  d = set.DecideOne(Facts(StatementClass::kDdl, "DROP DATABASE", {"drop_database"}, {{"prod", ""}}),
                    "");
  EXPECT_EQ(d.match, "ddl");
  EXPECT_EQ(d.target, "prod");
}

TEST(SessionGuardrails, UnqualifiedTablesAndTheCurrentSchema) {
  Fixture f;
  GuardrailSet set(f.snapshot, f.prod, &f.dangerous);
  StatementFacts create = Facts(StatementClass::kDdl, "CREATE TABLE", {}, {{"", "tmp"}});
  // The allow rule accepts an unqualified table only when the current schema matches it.
  EXPECT_EQ(set.DecideOne(create, "scratch").action, D::kAllow);
  EXPECT_EQ(set.DecideOne(create, "public").action, D::kBlock);
  EXPECT_EQ(set.DecideOne(create, "").action, D::kBlock);  // no current database: never
  // A restricting rule with a schema pattern matches an unqualified table whatever the schema.
  v1::PolicySnapshot audit;
  v1::Guardrail* g = audit.add_guardrails();
  g->set_name("audit");
  g->mutable_connections()->add_names("orders");
  *g->add_rules() = Rule("truncate", A::GUARDRAIL_ACTION_REQUIRE_APPROVAL, {}, {"audit"});
  GuardrailSet audit_set(audit, f.prod, &f.dangerous);
  StatementFacts truncate = Facts(StatementClass::kDdl, "TRUNCATE", {"truncate"}, {{"", "x"}});
  D d = audit_set.DecideOne(truncate, "sales");
  EXPECT_EQ(d.action, D::kRequireApproval);
  EXPECT_EQ(d.target, "x");
  truncate.relations = {{"sales", "x"}};
  EXPECT_EQ(audit_set.DecideOne(truncate, "audit").action, D::kAllow);  // qualified elsewhere
}

TEST(SessionGuardrails, FunctionsFromTheProtocolListAndTheRule) {
  Fixture f;
  v1::GuardrailRule* r = f.snapshot.mutable_guardrails(0)->add_rules();
  r->set_match("dangerous_function");
  r->set_action(v1::GUARDRAIL_ACTION_BLOCK);
  r->add_functions("wipe_everything");
  GuardrailSet set(f.snapshot, f.prod, &f.dangerous);
  D d = set.DecideOne(Facts(StatementClass::kRead, "SELECT", {}, {}, {"load_file"}), "");
  EXPECT_EQ(d.action, D::kBlock);
  EXPECT_EQ(d.target, "load_file");
  EXPECT_EQ(
      set.DecideOne(Facts(StatementClass::kRead, "SELECT", {}, {}, {"wipe_everything"}), "").target,
      "wipe_everything");
  GuardrailSet no_list(f.snapshot, f.prod, nullptr);
  EXPECT_EQ(
      no_list.DecideOne(Facts(StatementClass::kRead, "SELECT", {}, {}, {"load_file"}), "").action,
      D::kAllow);
}

TEST(SessionGuardrails, ManyStatementsStrictestFirstOnTiesAndProductionUnknown) {
  Fixture f;
  GuardrailSet set(f.snapshot, f.prod, &f.dangerous);
  std::vector<StatementFacts> many = {
      Facts(StatementClass::kRead, "SELECT"),
      Facts(StatementClass::kDcl, "GRANT", {}, {{"", "a"}}),
      Facts(StatementClass::kDcl, "REVOKE", {}, {{"", "b"}}),
  };
  D d = set.Decide(many, "");
  EXPECT_EQ(d.action, D::kAlert);
  EXPECT_EQ(d.statement_kind, "GRANT");  // the first of two alerts
  many.push_back(Facts(StatementClass::kUnknown, ""));
  d = set.Decide(many, "");
  EXPECT_EQ(d.action, D::kBlock);
  EXPECT_EQ(d.guardrail, "(default)");
  EXPECT_EQ(d.statement_kind, "unparsed text");
  // Not production: unknown is not blocked by default; no guardrail: nothing is decided.
  v1::Guardrail* g = f.snapshot.add_guardrails();
  g->set_name("dev-light");
  g->mutable_connections()->add_names("scratchpad");
  *g->add_rules() = Rule("drop_database", A::GUARDRAIL_ACTION_BLOCK);
  GuardrailSet dev(f.snapshot, f.dev, &f.dangerous);
  EXPECT_EQ(dev.Decide(many, "").action, D::kAllow);
  GuardrailSet none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.Decide(many, "").action, D::kAllow);
}

}  // namespace
}  // namespace sluice::agent::session
