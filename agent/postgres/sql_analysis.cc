#include "agent/postgres/sql_analysis.h"

#include <pg_query.h>

#include <algorithm>
#include <optional>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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
// it (the conservative reading).
bool ExplainExecutes(const json& explain) {
  auto options = explain.find("options");
  if (options == explain.end() || !options->is_array()) return false;
  for (const auto& o : *options) {
    auto def = o.find("DefElem");
    if (def == o.end() || !def->is_object() || def->value("defname", "") != "analyze") continue;
    auto arg = def->find("arg");
    if (arg == def->end()) return true;  // ANALYZE
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

StatementClass ClassOf(const json& stmt);

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

// A WHERE that holds for every row: absent, `true`, or a comparison of two equal constants
// (`1 = 1`, `'a' = 'a'`).
bool AlwaysTrue(const json& body) {
  auto where = body.find("whereClause");
  if (where == body.end()) return true;
  if (auto c = where->find("A_Const"); c != where->end()) {
    auto b = c->find("boolval");
    return b != c->end() && b->is_object() && b->value("boolval", false);
  }
  if (auto e = where->find("A_Expr"); e != where->end() && e->is_object()) {
    std::string op;
    if (auto name = e->find("name"); name != e->end() && name->is_array() && name->size() == 1) {
      op = (*name)[0].value("/String/sval"_json_pointer, std::string());
    }
    auto l = e->find("lexpr");
    auto r = e->find("rexpr");
    return op == "=" && l != e->end() && r != e->end() && l->contains("A_Const") && r->contains("A_Const") &&
           WithoutLocations(*l) == WithoutLocations(*r);
  }
  return false;
}

template <typename T>
void AddUnique(std::vector<T>* v, T item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(std::move(item));
}

// Walks one statement's tree for what guardrails match on.
void CollectFacts(const json& node, StatementFacts* facts) {
  if (node.is_array()) {
    for (const auto& v : node) CollectFacts(v, facts);
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
      CollectFacts(body, facts);
      continue;
    }
    if (key == "DropdbStmt") AddUnique<std::string>(&facts->guarded, "drop_database");
    if (key == "TruncateStmt") AddUnique<std::string>(&facts->guarded, "truncate");
    if (key == "AlterSystemStmt") AddUnique<std::string>(&facts->guarded, "alter_system");
    if (key == "CopyStmt" && body.value("is_program", false)) AddUnique<std::string>(&facts->guarded, "copy_program");
    if (key == "DeleteStmt" && AlwaysTrue(body)) AddUnique<std::string>(&facts->guarded, "delete_without_where");
    if (key == "UpdateStmt" && AlwaysTrue(body)) AddUnique<std::string>(&facts->guarded, "update_without_where");
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
        AddUnique<std::string>(&facts->functions,
                  absl::AsciiStrToLower(name->back().value("/String/sval"_json_pointer, std::string())));
      }
    }
    CollectFacts(body, facts);
  }
}

// A statement node wrapped as {"Kind": {...}}.
StatementClass ClassOfWrapped(const json& wrapped) {
  if (!wrapped.is_object() || wrapped.size() != 1) return StatementClass::kUnknown;
  return ClassOf(wrapped);
}

StatementClass ClassOf(const json& stmt) {
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
    if (!ExplainExecutes(body)) return C::kRead;
    auto query = body.find("query");
    return query == body.end() ? C::kUnknown : std::max(C::kRead, ClassOfWrapped(*query));
  }
  if (kind == "DeclareCursorStmt" || kind == "PrepareStmt") {
    auto query = body.find("query");
    if (query == body.end()) return C::kUnknown;
    C inner = ClassOfWrapped(*query);
    return kind == "PrepareStmt" && inner == C::kRead ? C::kOther : inner;
  }
  if (kind == "CopyStmt") {
    if (body.value("is_program", false) || body.value("is_from", false)) return C::kWrite;
    if (body.contains("filename")) return C::kWrite;  // the server writes a file
    auto query = body.find("query");
    return query == body.end() ? C::kRead : std::max(C::kRead, ClassOfWrapped(*query));
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
  PgQueryParseResult result = pg_query_parse(text.c_str());
  if (result.error != nullptr) {
    info.overall = StatementClass::kUnknown;
    info.parse_error = result.error->message != nullptr ? result.error->message : "parse error";
    info.statements.emplace_back();  // one unclassifiable statement
    pg_query_free_parse_result(result);
    return info;
  }
  json tree = json::parse(result.parse_tree != nullptr ? result.parse_tree : "{}", nullptr, false);
  pg_query_free_parse_result(result);
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
        facts.cls = ClassOf(*stmt);
        CollectFacts(*stmt, &facts);
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
  if (scratch_.size() <= kMaxKeyBytes) {
    auto it = cache_.find(scratch_);
    if (it != cache_.end()) return it->second;
  }
  StatementInfo info = AnalyzeStatement(sql);
  // What the parser refused is never cached: whether a text parses can depend on its literals,
  // and one caller's malformed text must not decide how another's same-shaped one is treated.
  if (!info.parse_error.empty() || scratch_.size() > kMaxKeyBytes || cache_.size() >= max_entries_) {
    uncached_ = std::move(info);
    return uncached_;
  }
  return cache_.emplace(scratch_, std::move(info)).first->second;
}

}  // namespace sluice::agent::postgres
