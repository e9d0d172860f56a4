#include "agent/postgres/sql_analysis.h"

#include <pg_query.h>

#include <algorithm>
#include <optional>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace sluice::agent::postgres {
namespace {

using nlohmann::json;

// True when a node of one of `kinds` occurs anywhere under `node`.
bool Contains(const json& node, const absl::flat_hash_set<absl::string_view>& kinds) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (kinds.contains(it.key())) return true;
      if (Contains(it.value(), kinds)) return true;
    }
  } else if (node.is_array()) {
    for (const auto& v : node) {
      if (Contains(v, kinds)) return true;
    }
  }
  return false;
}

const absl::flat_hash_set<absl::string_view>& WriteKinds() {
  static const auto* k = new absl::flat_hash_set<absl::string_view>{"InsertStmt", "UpdateStmt",
                                                                    "DeleteStmt", "MergeStmt"};
  return *k;
}

// EXPLAIN runs its statement only with ANALYZE. Anything but a clear "false" counts as running
// it (the conservative reading). An argument's value is a literal: `*sensitive` is set.
bool ExplainExecutes(const json& explain, bool* sensitive) {
  auto options = explain.find("options");
  if (options == explain.end() || !options->is_array()) return false;
  for (const auto& o : *options) {
    auto def = o.find("DefElem");
    if (def == o.end() || !def->is_object() || def->value("defname", "") != "analyze") continue;
    auto arg = def->find("arg");
    if (arg == def->end()) return true;  // ANALYZE
    *sensitive = true;
    if (auto s = arg->find("String"); s != arg->end() && s->is_object()) {
      std::string v = absl::AsciiStrToLower(s->value("sval", ""));
      return !(v == "false" || v == "off" || v == "no" || v == "0");
    }
    if (auto i = arg->find("Integer"); i != arg->end() && i->is_object()) {
      return i->value("ival", 0) != 0;  // the parser leaves out a zero
    }
    return true;
  }
  return false;
}

StatementClass ClassOf(const json& stmt, bool* sensitive);

// A copy of `node` without "location" keys, for comparing expressions by content.
json WithoutLocations(const json& node) {
  if (node.is_object()) {
    json out = json::object();
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it.key() != "location") out[it.key()] = WithoutLocations(it.value());
    }
    return out;
  }
  if (node.is_array()) {
    json out = json::array();
    for (const auto& v : node) out.push_back(WithoutLocations(v));
    return out;
  }
  return node;
}

// The value of a constant expression, when it is one this code can evaluate: boolean, integer,
// numeric and string constants (also cast to boolean), NOT / AND / OR, comparisons
// (= <> != < > <= >=), IN lists, IS [NOT] NULL and IS [NOT] TRUE / FALSE of constants. A
// comparison of two equal expressions without column references (`'a' = 'a'`) is true too.
// Whatever looked at a literal's value sets `*sensitive`.
struct Constant {
  // kUnreadable: an integer constant whose value the parse tree does not give (see IntegerAt).
  enum Kind { kNull, kBool, kNumber, kString, kUnreadable } kind = kNull;
  bool b = false;
  double number = 0;
  std::string str;
};

// The statement text being analyzed (set by AnalyzeStatement for the walk): libpg_query
// 15-4.0's JSON leaves out the value of a negative integer constant as it does a zero
// (`"ival": {}`), so the value is read from the text at the constant's location.
thread_local absl::string_view t_text;

// The integer written at byte `location` of the text being analyzed: an optional '-', blanks,
// digits. nullopt when it is written otherwise (`-(4)`).
std::optional<double> IntegerAt(int64_t location) {
  if (location < 0 || static_cast<size_t>(location) >= t_text.size()) return std::nullopt;
  absl::string_view rest = t_text.substr(static_cast<size_t>(location));
  bool negative = false;
  if (!rest.empty() && rest[0] == '-') {
    negative = true;
    rest.remove_prefix(1);
    while (!rest.empty() && absl::ascii_isspace(rest[0])) rest.remove_prefix(1);
  }
  size_t n = 0;
  while (n < rest.size() && n < 18 && absl::ascii_isdigit(rest[n])) ++n;
  if (n == 0 || (n < rest.size() && (absl::ascii_isalnum(rest[n]) || rest[n] == '.'))) return std::nullopt;
  double v = 0;
  for (size_t i = 0; i < n; ++i) v = v * 10 + (rest[i] - '0');
  return negative ? -v : v;
}

std::optional<Constant> ConstantOf(const json& node, bool* sensitive) {
  if (!node.is_object()) return std::nullopt;
  if (auto cast = node.find("TypeCast"); cast != node.end() && cast->is_object()) {
    std::string type;
    auto names = cast->value("/typeName/names"_json_pointer, json::array());
    if (names.is_array() && !names.empty()) type = names.back().value("/String/sval"_json_pointer, std::string());
    auto inner = cast->find("arg");
    if (inner == cast->end()) return std::nullopt;
    auto v = ConstantOf(*inner, sensitive);
    if (!v || (type != "bool" && type != "boolean")) return std::nullopt;
    if (v->kind == Constant::kBool || v->kind == Constant::kNull) return v;
    if (v->kind != Constant::kString) return std::nullopt;
    std::optional<bool> b = BoolText(v->str);
    if (!b) return std::nullopt;
    Constant out;
    out.kind = Constant::kBool;
    out.b = *b;
    return out;
  }
  auto c = node.find("A_Const");
  if (c == node.end() || !c->is_object()) return std::nullopt;
  *sensitive = true;
  Constant out;
  if (c->value("isnull", false)) return out;
  if (auto b = c->find("boolval"); b != c->end() && b->is_object()) {
    out.kind = Constant::kBool;
    out.b = b->value("boolval", false);
    return out;
  }
  if (auto i = c->find("ival"); i != c->end() && i->is_object()) {
    out.kind = Constant::kNumber;
    if (i->contains("ival")) {
      out.number = static_cast<double>(i->value("ival", int64_t{0}));
    } else if (auto v = IntegerAt(c->value("location", int64_t{-1}))) {
      out.number = *v;
    } else {
      out.kind = Constant::kUnreadable;
    }
    return out;
  }
  if (auto f = c->find("fval"); f != c->end() && f->is_object()) {
    out.kind = Constant::kNumber;
    char* end = nullptr;
    std::string text = f->value("fval", "");
    out.number = std::strtod(text.c_str(), &end);
    if (end == nullptr || *end != '\0') return std::nullopt;
    return out;
  }
  if (auto sv = c->find("sval"); sv != c->end() && sv->is_object()) {
    out.kind = Constant::kString;
    out.str = sv->value("sval", "");
    return out;
  }
  return std::nullopt;
}

}  // namespace

std::optional<bool> BoolText(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (l == "t" || l == "tr" || l == "tru" || l == "true" || l == "y" || l == "ye" || l == "yes" || l == "on" ||
      l == "1") {
    return true;
  }
  if (l == "f" || l == "fa" || l == "fal" || l == "fals" || l == "false" || l == "n" || l == "no" || l == "of" ||
      l == "off" || l == "0") {
    return false;
  }
  return std::nullopt;
}

namespace {

// `c` as the kind of `other`, as PostgreSQL coerces an unknown-typed string literal to the other
// side's type.
Constant Coerced(const Constant& c, const Constant& other) {
  if (c.kind != Constant::kString || other.kind == Constant::kString) return c;
  Constant out = c;
  if (other.kind == Constant::kBool) {
    if (auto b = BoolText(c.str)) {
      out.kind = Constant::kBool;
      out.b = *b;
    }
  } else if (other.kind == Constant::kNumber) {
    std::string text(absl::StripAsciiWhitespace(c.str));
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (!text.empty() && end != nullptr && *end == '\0') {
      out.kind = Constant::kNumber;
      out.number = v;
    }
  }
  return out;
}

std::optional<bool> Compare(const std::string& op, const Constant& given_l, const Constant& given_r) {
  Constant l = Coerced(given_l, given_r);
  Constant r = Coerced(given_r, given_l);
  if (l.kind == Constant::kNull || r.kind == Constant::kNull) return std::nullopt;  // NULL: never true
  // Two constants, one of which cannot be read: it could be true (fail closed for guardrails).
  if (l.kind == Constant::kUnreadable || r.kind == Constant::kUnreadable) return true;
  int cmp = 0;
  if (l.kind == Constant::kNumber && r.kind == Constant::kNumber) {
    cmp = l.number < r.number ? -1 : l.number > r.number ? 1 : 0;
  } else if (l.kind == r.kind && l.kind == Constant::kString) {
    if (op != "=" && op != "<>" && op != "!=") return std::nullopt;  // order depends on collation
    cmp = l.str == r.str ? 0 : 1;
  } else if (l.kind == r.kind && l.kind == Constant::kBool) {
    cmp = l.b == r.b ? 0 : (l.b ? 1 : -1);
  } else {
    return std::nullopt;
  }
  if (op == "=") return cmp == 0;
  if (op == "<>" || op == "!=") return cmp != 0;
  if (op == "<") return cmp < 0;
  if (op == ">") return cmp > 0;
  if (op == "<=") return cmp <= 0;
  if (op == ">=") return cmp >= 0;
  return std::nullopt;
}

bool HasColumnRef(const json& node) {
  static const auto* kinds = new absl::flat_hash_set<absl::string_view>{"ColumnRef", "ParamRef", "SubLink",
                                                                         "FuncCall"};
  return Contains(node, *kinds);
}

// `*sensitive` is set only where a literal's value decided the answer (a column compared with a
// constant decides nothing: `aid = 1` is cached by shape).
std::optional<bool> Truth(const json& node, bool* sensitive, int depth = 0) {
  if (!node.is_object() || depth > 64) return std::nullopt;
  if (auto v = ConstantOf(node, sensitive)) {
    if (v->kind == Constant::kBool) return v->b;
    if (v->kind == Constant::kString) return BoolText(v->str);  // WHERE 't'
    if (v->kind == Constant::kUnreadable) return true;  // fail closed, as Compare does
    return std::nullopt;
  }
  if (auto b = node.find("BoolExpr"); b != node.end() && b->is_object()) {
    std::string op = b->value("boolop", "");
    auto args = b->value("args", json::array());
    if (!args.is_array() || args.empty()) return std::nullopt;
    if (op == "NOT_EXPR") {
      auto v = Truth(args[0], sensitive, depth + 1);
      if (!v) return std::nullopt;
      return !*v;
    }
    bool all_known = true;
    for (const auto& a : args) {
      auto v = Truth(a, sensitive, depth + 1);
      if (!v) {
        all_known = false;
        continue;
      }
      if (op == "AND_EXPR" && !*v) return false;
      if (op == "OR_EXPR" && *v) return true;
    }
    if (!all_known) return std::nullopt;
    return op == "AND_EXPR";
  }
  if (auto t = node.find("NullTest"); t != node.end() && t->is_object()) {
    auto arg = t->find("arg");
    if (arg == t->end()) return std::nullopt;
    bool probe = false;
    auto v = ConstantOf(*arg, &probe);
    *sensitive = *sensitive || (v.has_value() && probe);
    if (!v) return std::nullopt;
    bool is_null = v->kind == Constant::kNull;
    return t->value("nulltesttype", "") == "IS_NULL" ? is_null : !is_null;
  }
  if (auto t = node.find("BooleanTest"); t != node.end() && t->is_object()) {
    auto arg = t->find("arg");
    if (arg == t->end()) return std::nullopt;
    auto v = Truth(*arg, sensitive, depth + 1);
    if (!v) return std::nullopt;
    std::string type = t->value("booltesttype", "");
    if (type == "IS_TRUE" || type == "IS_NOT_FALSE") return *v;
    if (type == "IS_FALSE" || type == "IS_NOT_TRUE") return !*v;
    return std::nullopt;
  }
  auto e = node.find("A_Expr");
  if (e == node.end() || !e->is_object()) return std::nullopt;
  std::string op;
  if (auto name = e->find("name"); name != e->end() && name->is_array() && name->size() == 1) {
    op = (*name)[0].value("/String/sval"_json_pointer, std::string());
  }
  auto l = e->find("lexpr");
  auto r = e->find("rexpr");
  if (l == e->end() || r == e->end()) return std::nullopt;
  std::string kind = e->value("kind", "");
  if (kind == "AEXPR_OP") {
    bool probe = false;
    auto lc = ConstantOf(*l, &probe);
    auto rc = ConstantOf(*r, &probe);
    if (lc && rc) {
      *sensitive = *sensitive || probe;
      return Compare(op, *lc, *rc);
    }
    // The same expression on both sides, with nothing that varies by row.
    if (op == "=" && !HasColumnRef(*l) && WithoutLocations(*l) == WithoutLocations(*r)) {
      *sensitive = true;
      return true;
    }
    return std::nullopt;
  }
  if (kind == "AEXPR_IN" && (op == "=" || op == "<>")) {
    bool probe = false;
    auto lc = ConstantOf(*l, &probe);
    auto items = r->value("/List/items"_json_pointer, json::array());
    if (!lc || !items.is_array()) return std::nullopt;
    *sensitive = *sensitive || probe;
    bool any = false;
    for (const auto& item : items) {
      auto ic = ConstantOf(item, sensitive);
      if (!ic) return std::nullopt;
      auto eq = Compare("=", *lc, *ic);
      if (!eq) return std::nullopt;
      any = any || *eq;
    }
    return op == "=" ? any : !any;
  }
  return std::nullopt;
}

// A WHERE (or MERGE condition) that holds for every row: absent, or a constant expression that
// is true (`true`, `1 = 1`, `2 > 1`, `NOT false`, `1 = 1 OR x = 2`).
bool AlwaysTrue(const json& body, const char* key, bool* sensitive) {
  auto where = body.find(key);
  if (where == body.end()) return true;
  auto v = Truth(*where, sensitive);
  return v.has_value() && *v;
}

template <typename T>
void AddUnique(std::vector<T>* v, T item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(std::move(item));
}

// The text of a constant argument (string, number or boolean), when it is one.
std::optional<std::string> ConstantText(const json& node, bool* sensitive) {
  auto v = ConstantOf(node, sensitive);
  if (!v) return std::nullopt;
  switch (v->kind) {
    case Constant::kString: return v->str;
    case Constant::kBool: return std::string(v->b ? "on" : "off");
    case Constant::kNumber: {
      if (auto c = node.find("A_Const"); c != node.end()) {
        if (auto f = c->find("fval"); f != c->end()) return f->value("fval", "");
      }
      return std::to_string(static_cast<int64_t>(v->number));
    }
    case Constant::kNull:
    case Constant::kUnreadable: return std::nullopt;
  }
  return std::nullopt;
}

// The settings a VariableSetStmt changes.
void CollectSet(const json& body, StatementFacts* facts, bool* sensitive) {
  std::string kind = body.value("kind", "");
  std::string name = absl::AsciiStrToLower(body.value("name", ""));
  if (kind == "VAR_RESET_ALL") {
    facts->settings.push_back(SettingChange{"all", "", true, true});
    return;
  }
  if (kind == "VAR_RESET" || kind == "VAR_SET_DEFAULT") {
    facts->settings.push_back(SettingChange{name, "", true, true});
    return;
  }
  if (kind == "VAR_SET_CURRENT") return;  // SET x FROM CURRENT: the value it has
  if (kind == "VAR_SET_MULTI") {
    // SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ...
    bool session = name == "session characteristics";
    for (const auto& a : body.value("args", json::array())) {
      const json& def = a.value("DefElem", json::object());
      std::string option = def.value("defname", "");
      if (option.empty()) continue;
      if (session) option = "default_" + option;
      auto arg = def.find("arg");
      std::optional<std::string> value = arg == def.end() ? std::nullopt : ConstantText(*arg, sensitive);
      facts->settings.push_back(SettingChange{option, value.value_or(""), false, value.has_value()});
    }
    return;
  }
  // VAR_SET_VALUE: SET name = value[, value...]
  std::vector<std::string> values;
  bool known = true;
  for (const auto& a : body.value("args", json::array())) {
    auto v = ConstantText(a, sensitive);
    if (!v) {
      known = false;
      continue;
    }
    values.push_back(*v);
  }
  if (name == "client_encoding" || name == "names") name = "client_encoding";
  facts->settings.push_back(SettingChange{name, absl::StrJoin(values, ","), false, known});
}

// A transaction's characteristics given at BEGIN / START TRANSACTION.
void CollectTransaction(const json& body, StatementFacts* facts, bool* sensitive) {
  for (const auto& o : body.value("options", json::array())) {
    const json& def = o.value("DefElem", json::object());
    std::string option = def.value("defname", "");
    if (option.empty()) continue;
    auto arg = def.find("arg");
    std::optional<std::string> value = arg == def.end() ? std::nullopt : ConstantText(*arg, sensitive);
    facts->settings.push_back(SettingChange{option, value.value_or(""), false, value.has_value()});
  }
}

// set_config(name, value, is_local): the setting, when its name is a constant.
void CollectSetConfig(const json& call, StatementFacts* facts, bool* sensitive) {
  auto args = call.value("args", json::array());
  SettingChange change;
  change.value_known = false;
  if (args.is_array() && !args.empty()) {
    if (auto n = ConstantText(args[0], sensitive)) change.name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*n));
  }
  if (args.is_array() && args.size() >= 2) {
    if (auto v = ConstantText(args[1], sensitive)) {
      change.value = *v;
      change.value_known = true;
    }
  }
  facts->settings.push_back(std::move(change));
}

// MERGE: a WHEN MATCHED action hits every row of the target when the join condition and the
// action's own condition are always true: it counts as DELETE / UPDATE without WHERE.
void CollectMerge(const json& body, StatementFacts* facts, bool* sensitive) {
  if (!AlwaysTrue(body, "joinCondition", sensitive)) return;
  for (const auto& w : body.value("mergeWhenClauses", json::array())) {
    const json& clause = w.value("MergeWhenClause", json::object());
    if (!clause.value("matched", false) || !AlwaysTrue(clause, "condition", sensitive)) continue;
    std::string command = clause.value("commandType", "");
    if (command == "CMD_DELETE") AddUnique<std::string>(&facts->guarded, "delete_without_where");
    if (command == "CMD_UPDATE") AddUnique<std::string>(&facts->guarded, "update_without_where");
  }
}

// Walks one statement's tree for what guardrails match on.
void CollectFacts(const json& node, StatementFacts* facts, bool* sensitive) {
  if (node.is_array()) {
    for (const auto& v : node) CollectFacts(v, facts, sensitive);
    return;
  }
  if (!node.is_object()) return;
  if (auto rel = node.find("relname"); rel != node.end() && rel->is_string()) {
    AddUnique(&facts->relations, Relation{node.value("schemaname", ""), rel->get<std::string>()});
  }
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string& key = it.key();
    const json& body = it.value();
    if (!body.is_object()) {
      CollectFacts(body, facts, sensitive);
      continue;
    }
    if (key == "DropdbStmt") AddUnique<std::string>(&facts->guarded, "drop_database");
    if (key == "TruncateStmt") AddUnique<std::string>(&facts->guarded, "truncate");
    if (key == "AlterSystemStmt") AddUnique<std::string>(&facts->guarded, "alter_system");
    if (key == "CopyStmt" && body.value("is_program", false)) AddUnique<std::string>(&facts->guarded, "copy_program");
    if (key == "DeleteStmt" && AlwaysTrue(body, "whereClause", sensitive)) {
      AddUnique<std::string>(&facts->guarded, "delete_without_where");
    }
    if (key == "UpdateStmt" && AlwaysTrue(body, "whereClause", sensitive)) {
      AddUnique<std::string>(&facts->guarded, "update_without_where");
    }
    if (key == "MergeStmt") CollectMerge(body, facts, sensitive);
    if (key == "VariableSetStmt") CollectSet(body, facts, sensitive);
    if (key == "TransactionStmt") CollectTransaction(body, facts, sensitive);
    if (key == "DoStmt" && facts->runs_hidden_code.empty()) facts->runs_hidden_code = "a DO block";
    if (key == "CallStmt" && facts->runs_hidden_code.empty()) facts->runs_hidden_code = "CALL of a procedure";
    if (key == "DropStmt" && body.value("removeType", "") == "OBJECT_TABLE") {
      AddUnique<std::string>(&facts->guarded, "drop_table");
      // objects: [{"List": {"items": [{"String": {"sval": schema}}, {"String": {"sval": table}}]}}]
      for (const auto& o : body.value("objects", json::array())) {
        std::vector<std::string> parts;
        for (const auto& item : o.value("/List/items"_json_pointer, json::array())) {
          parts.push_back(item.value("/String/sval"_json_pointer, std::string()));
        }
        if (parts.empty()) continue;
        AddUnique(&facts->relations, Relation{parts.size() >= 2 ? parts[parts.size() - 2] : "", parts.back()});
      }
    }
    if (key == "FuncCall") {
      auto name = body.find("funcname");
      if (name != body.end() && name->is_array() && !name->empty()) {
        std::string f = absl::AsciiStrToLower(name->back().value("/String/sval"_json_pointer, std::string()));
        if (f == "set_config") CollectSetConfig(body, facts, sensitive);
        const auto& from_string = SqlFromStringFunctions();
        if (facts->runs_hidden_code.empty() && std::find(from_string.begin(), from_string.end(), f) != from_string.end()) {
          facts->runs_hidden_code = absl::StrCat(f, "(), which runs SQL given as a string");
        }
        AddUnique<std::string>(&facts->functions, std::move(f));
      }
    }
    CollectFacts(body, facts, sensitive);
  }
}

// A statement node wrapped as {"Kind": {...}}.
StatementClass ClassOfWrapped(const json& wrapped, bool* sensitive) {
  if (!wrapped.is_object() || wrapped.size() != 1) return StatementClass::kUnknown;
  return ClassOf(wrapped, sensitive);
}

StatementClass ClassOf(const json& stmt, bool* sensitive) {
  const std::string& kind = stmt.begin().key();
  const json& body = stmt.begin().value();
  using C = StatementClass;
  static const auto* read = new absl::flat_hash_set<absl::string_view>{"VariableShowStmt", "FetchStmt"};
  static const auto* other = new absl::flat_hash_set<absl::string_view>{
      "TransactionStmt", "VariableSetStmt", "DiscardStmt", "DeallocateStmt", "ListenStmt",
      "UnlistenStmt", "ClosePortalStmt", "ExecuteStmt", "CheckPointStmt", "ConstraintsSetStmt"};
  static const auto* write = new absl::flat_hash_set<absl::string_view>{
      "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "CallStmt", "LockStmt", "NotifyStmt"};
  static const auto* dcl = new absl::flat_hash_set<absl::string_view>{
      "GrantStmt", "GrantRoleStmt", "CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt",
      "DropRoleStmt", "ReassignOwnedStmt", "DropOwnedStmt", "AlterDefaultPrivilegesStmt",
      "AlterOwnerStmt", "CreatePolicyStmt", "AlterPolicyStmt"};
  static const auto* ddl = new absl::flat_hash_set<absl::string_view>{
      "TruncateStmt", "RenameStmt", "CommentStmt", "IndexStmt", "ViewStmt", "VacuumStmt",
      "ClusterStmt", "ReindexStmt", "RefreshMatViewStmt", "SecLabelStmt", "ImportForeignSchemaStmt",
      "DefineStmt", "CompositeTypeStmt", "RuleStmt", "AlterSystemStmt"};
  static const auto* unknown = new absl::flat_hash_set<absl::string_view>{"DoStmt", "LoadStmt"};

  if (kind == "SelectStmt") {
    if (body.contains("intoClause")) return C::kDdl;  // SELECT INTO creates a table
    return Contains(body, WriteKinds()) ? C::kWrite : C::kRead;
  }
  if (kind == "ExplainStmt") {
    if (!ExplainExecutes(body, sensitive)) return C::kRead;
    auto query = body.find("query");
    return query == body.end() ? C::kUnknown : std::max(C::kRead, ClassOfWrapped(*query, sensitive));
  }
  if (kind == "DeclareCursorStmt" || kind == "PrepareStmt") {
    auto query = body.find("query");
    if (query == body.end()) return C::kUnknown;
    C inner = ClassOfWrapped(*query, sensitive);
    return kind == "PrepareStmt" && inner == C::kRead ? C::kOther : inner;
  }
  if (kind == "CopyStmt") {
    if (body.value("is_program", false) || body.value("is_from", false)) return C::kWrite;
    if (body.contains("filename")) return C::kWrite;  // the server writes a file
    auto query = body.find("query");
    return query == body.end() ? C::kRead : std::max(C::kRead, ClassOfWrapped(*query, sensitive));
  }
  if (kind == "VariableSetStmt") {
    // Switching standard_conforming_strings off would make the server read string literals
    // differently from the parser that classified them.
    if (body.value("name", "") == "standard_conforming_strings") return C::kUnknown;
    return C::kOther;
  }
  if (kind == "CreateTableAsStmt") return C::kDdl;
  if (read->contains(kind)) return C::kRead;
  if (other->contains(kind)) return C::kOther;
  if (write->contains(kind)) return C::kWrite;
  if (dcl->contains(kind)) return C::kDcl;
  if (unknown->contains(kind)) return C::kUnknown;
  if (ddl->contains(kind) || absl::StartsWith(kind, "Create") || absl::StartsWith(kind, "Alter") ||
      absl::StartsWith(kind, "Drop")) {
    return C::kDdl;
  }
  return C::kUnknown;
}

}  // namespace

const std::vector<std::string>& WritingFunctions() {
  // Large objects are written in read-only transactions too (PostgreSQL 15 checks none of these);
  // ending other sessions, remote SQL and server files are effects beyond the session.
  static const auto* f = new std::vector<std::string>{
      "lo_from_bytea", "lo_create", "lo_creat", "lo_put", "lo_import", "lo_export", "lo_unlink", "lowrite",
      "lo_truncate", "lo_truncate64", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
      "pg_rotate_logfile", "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_logical_emit_message",
      "dblink_exec", "dblink", "dblink_send_query", "dblink_open"};
  return *f;
}

const std::vector<std::string>& SqlFromStringFunctions() {
  static const auto* f = new std::vector<std::string>{
      "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
      "dblink", "dblink_exec", "dblink_open", "dblink_send_query", "dblink_build_sql_insert"};
  return *f;
}

const char* ClassName(StatementClass c) {
  switch (c) {
    case StatementClass::kEmpty: return "empty";
    case StatementClass::kRead: return "read";
    case StatementClass::kOther: return "other";
    case StatementClass::kWrite: return "write";
    case StatementClass::kDdl: return "ddl";
    case StatementClass::kDcl: return "dcl";
    case StatementClass::kUnknown: return "unknown";
  }
  return "unknown";
}

std::string StatementInfo::deciding_kind() const {
  for (const auto& s : statements) {
    if (s.cls == overall) return s.kind.empty() ? "unparsed text" : s.kind;
  }
  return "";
}

StatementInfo AnalyzeStatement(absl::string_view sql) {
  StatementInfo info;
  info.shape = sql::Analyze(sql);
  if (sql.size() > kMaxParseBytes) {
    info.overall = StatementClass::kUnknown;
    info.parse_error = absl::StrCat("statement longer than ", kMaxParseBytes, " bytes is not parsed");
    info.statements.emplace_back();  // one unclassifiable statement
    return info;
  }
  std::string text(sql);  // NUL-terminated for the C API
  t_text = text;
  PgQueryParseResult result = pg_query_parse(text.c_str());
  if (result.error != nullptr) {
    t_text = absl::string_view();
    info.overall = StatementClass::kUnknown;
    info.parse_error = result.error->message != nullptr ? result.error->message : "parse error";
    info.statements.emplace_back();  // one unclassifiable statement
    pg_query_free_parse_result(result);
    return info;
  }
  json tree = json::parse(result.parse_tree != nullptr ? result.parse_tree : "{}", nullptr, false);
  pg_query_free_parse_result(result);
  // t_text refers to `text` only while this function walks the tree.
  struct ClearText {
    ~ClearText() { t_text = absl::string_view(); }
  } clear_text;
  auto stmts = tree.is_object() ? tree.find("stmts") : tree.end();
  if (!tree.is_object() || stmts == tree.end() || !stmts->is_array()) {
    info.overall = tree.is_object() ? StatementClass::kEmpty : StatementClass::kUnknown;
    if (!tree.is_object()) info.parse_error = "the parse tree could not be read";
    return info;
  }
  for (const auto& raw : *stmts) {
    auto stmt = raw.find("stmt");
    StatementFacts facts;
    if (stmt == raw.end() || !stmt->is_object() || stmt->size() != 1) {
      facts.cls = StatementClass::kUnknown;
    } else {
      facts.kind = stmt->begin().key();
      try {
        facts.cls = ClassOf(*stmt, &info.literal_sensitive);
        CollectFacts(*stmt, &facts, &info.literal_sensitive);
        // A call of a function that changes the database where a read-only transaction does not
        // stop it makes the statement a write.
        const auto& writers = WritingFunctions();
        for (const std::string& f : facts.functions) {
          if (std::find(writers.begin(), writers.end(), f) != writers.end()) {
            facts.cls = std::max(facts.cls, StatementClass::kWrite);
          }
        }
        facts.lineage = ComputeLineage(*stmt);
      } catch (const json::exception& e) {
        // A tree shape this code does not expect: it cannot be classified (fail closed).
        facts.cls = StatementClass::kUnknown;
        info.parse_error = absl::StrCat("parse tree not understood: ", e.what());
      }
    }
    info.overall = std::max(info.overall, facts.cls);
    info.statements.push_back(std::move(facts));
  }
  return info;
}

namespace {

// A DefElem's argument as text ("" when it has none).
std::string OptionText(const json& elem) {
  auto arg = elem.find("arg");
  if (arg == elem.end()) return "";
  if (auto s = arg->find("String"); s != arg->end()) return s->value("sval", "");
  if (auto b = arg->find("Boolean"); b != arg->end()) return b->value("boolval", false) ? "true" : "false";
  if (auto i = arg->find("Integer"); i != arg->end()) return std::to_string(i->value("ival", 0));
  return "?";
}

CopyOutFacts CopyFactsOf(const json& body) {
  CopyOutFacts f;
  if (auto rel = body.find("relation"); rel != body.end()) {
    f.relation = Relation{rel->value("schemaname", ""), rel->value("relname", "")};
  }
  f.query = body.contains("query");
  for (const auto& item : body.value("attlist", json::array())) {
    f.columns.push_back(item.value("/String/sval"_json_pointer, std::string()));
  }
  std::optional<std::string> delimiter, null_string, quote, escape;
  for (const auto& o : body.value("options", json::array())) {
    const json& elem = o.value("DefElem", json::object());
    std::string name = elem.value("defname", "");
    std::string arg = OptionText(elem);
    if (name == "format") {
      f.binary = arg == "binary";
      f.csv = arg == "csv";
      if (arg != "binary" && arg != "csv" && arg != "text") f.problem = "format " + arg;
    } else if (name == "header") {
      std::string l = absl::AsciiStrToLower(arg);
      f.header = !(l == "false" || l == "off" || l == "0");
    } else if (name == "delimiter") {
      delimiter = arg;
    } else if (name == "null") {
      null_string = arg;
    } else if (name == "quote") {
      quote = arg;
    } else if (name == "escape") {
      escape = arg;
    }
  }
  if (f.csv) {
    f.delimiter = ',';
    f.null_string = "";
  }
  auto one_byte = [&](const std::optional<std::string>& v, char* out, const char* what) {
    if (!v) return;
    if (v->size() != 1) {
      f.problem = absl::StrCat(what, " '", *v, "'");
      return;
    }
    *out = (*v)[0];
  };
  one_byte(delimiter, &f.delimiter, "delimiter");
  one_byte(quote, &f.quote, "quote");
  f.escape = f.quote;
  one_byte(escape, &f.escape, "escape");
  if (null_string) f.null_string = *null_string;
  return f;
}

}  // namespace

std::vector<CopyOutFacts> CopyOutputs(absl::string_view sql) {
  std::vector<CopyOutFacts> out;
  if (sql.size() > kMaxParseBytes) return out;
  std::string text(sql);
  PgQueryParseResult result = pg_query_parse(text.c_str());
  if (result.error != nullptr) {
    pg_query_free_parse_result(result);
    return out;
  }
  json tree = json::parse(result.parse_tree != nullptr ? result.parse_tree : "{}", nullptr, false);
  pg_query_free_parse_result(result);
  if (!tree.is_object() || !tree.contains("stmts") || !tree["stmts"].is_array()) return out;
  for (const auto& raw : tree["stmts"]) {
    const json* body = nullptr;
    if (auto stmt = raw.find("stmt"); stmt != raw.end() && stmt->is_object()) {
      if (auto copy = stmt->find("CopyStmt"); copy != stmt->end()) body = &*copy;
    }
    if (body == nullptr || body->value("is_from", false) || body->value("is_program", false) ||
        body->contains("filename")) {
      continue;
    }
    try {
      out.push_back(CopyFactsOf(*body));
    } catch (const json::exception& e) {
      CopyOutFacts f;
      f.problem = "parse tree not understood";
      out.push_back(std::move(f));
    }
  }
  return out;
}

const StatementInfo& StatementCache::Get(absl::string_view sql) {
  constexpr size_t kMaxKeyBytes = 8192;
  sql::Normalize(sql, &scratch_);
  if (scratch_.size() <= kMaxKeyBytes && sql.size() <= sql::kMaxLexBytes) {
    auto it = cache_.find(scratch_);
    if (it != cache_.end()) return it->second;
  }
  StatementInfo info = AnalyzeStatement(sql);
  // What the parser refused is never cached: whether a text parses can depend on its literals,
  // and one caller's malformed text must not decide how another's same-shaped one is treated.
  // Nor is an analysis that looked at a literal (the shape does not have it), nor one of a text
  // longer than the lexer reads (its shape is of a prefix).
  if (!info.parse_error.empty() || info.literal_sensitive || sql.size() > sql::kMaxLexBytes ||
      scratch_.size() > kMaxKeyBytes || cache_.size() >= max_entries_) {
    uncached_ = std::move(info);
    return uncached_;
  }
  return cache_.emplace(scratch_, std::move(info)).first->second;
}

}  // namespace sluice::agent::postgres
