// Statement analysis (sql_analysis.h): classification, the facts guardrails match on, COPY output
// options and the shape cache. Constant expressions are evaluated in sql_analysis_constants.cc.
#include "agent/postgres/sql_analysis.h"

#include <pg_query.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/postgres/sql_analysis_internal.h"

namespace sluice::agent::postgres {
namespace {

using nlohmann::json;
using sql_analysis_internal::AlwaysTrue;
using sql_analysis_internal::ConstantText;
using sql_analysis_internal::Contains;
using sql_analysis_internal::t_text;

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

template <typename T>
void AddUnique(std::vector<T>* v, T item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(std::move(item));
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
      std::optional<std::string> value =
          arg == def.end() ? std::nullopt : ConstantText(*arg, sensitive);
      facts->settings.push_back(
          SettingChange{option, value.value_or(""), false, value.has_value()});
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
    std::optional<std::string> value =
        arg == def.end() ? std::nullopt : ConstantText(*arg, sensitive);
    facts->settings.push_back(SettingChange{option, value.value_or(""), false, value.has_value()});
  }
}

// set_config(name, value, is_local): the setting, when its name is a constant.
void CollectSetConfig(const json& call, StatementFacts* facts, bool* sensitive) {
  auto args = call.value("args", json::array());
  SettingChange change;
  change.value_known = false;
  if (args.is_array() && !args.empty()) {
    if (auto n = ConstantText(args[0], sensitive))
      change.name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*n));
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
    if (key == "CopyStmt" && body.value("is_program", false))
      AddUnique<std::string>(&facts->guarded, "copy_program");
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
    if (key == "CallStmt" && facts->runs_hidden_code.empty())
      facts->runs_hidden_code = "CALL of a procedure";
    if (key == "DropStmt" && body.value("removeType", "") == "OBJECT_TABLE") {
      AddUnique<std::string>(&facts->guarded, "drop_table");
      // objects: [{"List": {"items": [{"String": {"sval": schema}}, {"String": {"sval": table}}]}}]
      for (const auto& o : body.value("objects", json::array())) {
        std::vector<std::string> parts;
        for (const auto& item : o.value("/List/items"_json_pointer, json::array())) {
          parts.push_back(item.value("/String/sval"_json_pointer, std::string()));
        }
        if (parts.empty()) continue;
        AddUnique(&facts->relations,
                  Relation{parts.size() >= 2 ? parts[parts.size() - 2] : "", parts.back()});
      }
    }
    if (key == "FuncCall") {
      auto name = body.find("funcname");
      if (name != body.end() && name->is_array() && !name->empty()) {
        std::string f =
            absl::AsciiStrToLower(name->back().value("/String/sval"_json_pointer, std::string()));
        if (f == "set_config") CollectSetConfig(body, facts, sensitive);
        const auto& from_string = SqlFromStringFunctions();
        if (facts->runs_hidden_code.empty() &&
            std::find(from_string.begin(), from_string.end(), f) != from_string.end()) {
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
  static const auto* read =
      new absl::flat_hash_set<absl::string_view>{"VariableShowStmt", "FetchStmt"};
  static const auto* other = new absl::flat_hash_set<absl::string_view>{
      "TransactionStmt", "VariableSetStmt", "DiscardStmt", "DeallocateStmt", "ListenStmt",
      "UnlistenStmt",    "ClosePortalStmt", "ExecuteStmt", "CheckPointStmt", "ConstraintsSetStmt"};
  static const auto* write = new absl::flat_hash_set<absl::string_view>{
      "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "CallStmt", "LockStmt", "NotifyStmt"};
  static const auto* dcl = new absl::flat_hash_set<absl::string_view>{
      "GrantStmt",         "GrantRoleStmt",    "CreateRoleStmt",
      "AlterRoleStmt",     "AlterRoleSetStmt", "DropRoleStmt",
      "ReassignOwnedStmt", "DropOwnedStmt",    "AlterDefaultPrivilegesStmt",
      "AlterOwnerStmt",    "CreatePolicyStmt", "AlterPolicyStmt"};
  static const auto* ddl = new absl::flat_hash_set<absl::string_view>{"TruncateStmt",
                                                                      "RenameStmt",
                                                                      "CommentStmt",
                                                                      "IndexStmt",
                                                                      "ViewStmt",
                                                                      "VacuumStmt",
                                                                      "ClusterStmt",
                                                                      "ReindexStmt",
                                                                      "RefreshMatViewStmt",
                                                                      "SecLabelStmt",
                                                                      "ImportForeignSchemaStmt",
                                                                      "DefineStmt",
                                                                      "CompositeTypeStmt",
                                                                      "RuleStmt",
                                                                      "AlterSystemStmt"};
  static const auto* unknown = new absl::flat_hash_set<absl::string_view>{"DoStmt", "LoadStmt"};

  if (kind == "SelectStmt") {
    if (body.contains("intoClause")) return C::kDdl;  // SELECT INTO creates a table
    return Contains(body, WriteKinds()) ? C::kWrite : C::kRead;
  }
  if (kind == "ExplainStmt") {
    if (!ExplainExecutes(body, sensitive)) return C::kRead;
    auto query = body.find("query");
    return query == body.end() ? C::kUnknown
                               : std::max(C::kRead, ClassOfWrapped(*query, sensitive));
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
  static const auto* f = new std::vector<std::string>{"lo_from_bytea",
                                                      "lo_create",
                                                      "lo_creat",
                                                      "lo_put",
                                                      "lo_import",
                                                      "lo_export",
                                                      "lo_unlink",
                                                      "lowrite",
                                                      "lo_truncate",
                                                      "lo_truncate64",
                                                      "pg_terminate_backend",
                                                      "pg_cancel_backend",
                                                      "pg_reload_conf",
                                                      "pg_rotate_logfile",
                                                      "pg_file_write",
                                                      "pg_file_rename",
                                                      "pg_file_unlink",
                                                      "pg_logical_emit_message",
                                                      "dblink_exec",
                                                      "dblink",
                                                      "dblink_send_query",
                                                      "dblink_open"};
  return *f;
}

const std::vector<std::string>& SqlFromStringFunctions() {
  static const auto* f =
      new std::vector<std::string>{"query_to_xml",       "query_to_xml_and_xmlschema",
                                   "query_to_xmlschema", "ts_stat",
                                   "ts_rewrite",         "dblink",
                                   "dblink_exec",        "dblink_open",
                                   "dblink_send_query",  "dblink_build_sql_insert"};
  return *f;
}

absl::string_view StatementInfo::deciding_kind() const {
  return session::DecidingKind(statements, overall);
}

StatementInfo AnalyzeStatement(absl::string_view sql) {
  StatementInfo info;
  info.shape = sql::Analyze(sql);
  if (sql.size() > kMaxParseBytes) {
    info.overall = StatementClass::kUnknown;
    info.parse_error =
        absl::StrCat("statement longer than ", kMaxParseBytes, " bytes is not parsed");
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
  if (auto b = arg->find("Boolean"); b != arg->end())
    return b->value("boolval", false) ? "true" : "false";
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
