// The function and relation lists of the column-lineage analysis, and the relations in scope
// with the lookups in them. Internal to the lineage module: described in lineage_internal.h.
#include "agent/postgres/lineage_internal.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::postgres::lineage_internal {

// ---- Function and relation lists ----

bool EscapeFunction(absl::string_view f) {
  static const auto* exact = new absl::flat_hash_set<absl::string_view>{
      "pg_notify", "set_config", "pg_logical_emit_message", "lo_from_bytea",          "lo_put",
      "lowrite",   "setval",     "pg_file_write",           "pg_create_restore_point"};
  return exact->contains(f) || absl::StartsWith(f, "pg_advisory") ||
         absl::StartsWith(f, "pg_try_advisory") || absl::StartsWith(f, "pg_sleep") ||
         absl::StartsWith(f, "dblink");
}

const char* OpaqueFunction(absl::string_view f) {
  static const auto* from_string = new absl::flat_hash_set<absl::string_view>{
      "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
      "connectby"};
  static const auto* by_name =
      new absl::flat_hash_set<absl::string_view>{"table_to_xml",
                                                 "table_to_xml_and_xmlschema",
                                                 "table_to_xmlschema",
                                                 "schema_to_xml",
                                                 "schema_to_xml_and_xmlschema",
                                                 "schema_to_xmlschema",
                                                 "database_to_xml",
                                                 "database_to_xml_and_xmlschema",
                                                 "database_to_xmlschema",
                                                 "cursor_to_xml",
                                                 "cursor_to_xmlschema"};
  static const auto* raw = new absl::flat_hash_set<absl::string_view>{
      "pg_read_file",    "pg_read_binary_file", "get_raw_page",    "bt_page_items",
      "brin_page_items", "gist_page_items",     "hash_page_items", "gin_leafpage_items"};
  if (from_string->contains(f) || absl::StartsWith(f, "crosstab") ||
      absl::StartsWith(f, "dblink")) {
    return "runs SQL from a string";
  }
  if (by_name->contains(f)) return "reads a whole table, schema, database or cursor by name";
  if (raw->contains(f)) return "reads table storage";
  return nullptr;
}

bool CastFunction(absl::string_view f) {
  static const auto* k = new absl::flat_hash_set<absl::string_view>{
      "int2",    "int4",      "int8",        "float4",  "float8",      "numeric",
      "date",    "timestamp", "timestamptz", "time",    "timetz",      "interval",
      "json",    "jsonb",     "inet",        "cidr",    "uuid",        "bool",
      "macaddr", "regclass",  "to_number",   "to_date", "to_timestamp"};
  return k->contains(f);
}

bool TextType(absl::string_view t) {
  return t == "text" || t == "varchar" || t == "bpchar" || t == "char" || t == "name" ||
         t == "citext";
}

bool StatsRelation(absl::string_view r) {
  return r == "pg_stats" || r == "pg_stats_ext" || r == "pg_stats_ext_exprs" ||
         r == "pg_statistic" || r == "pg_statistic_ext_data";
}

bool ModifyKind(absl::string_view k) {
  return k == "InsertStmt" || k == "UpdateStmt" || k == "DeleteStmt" || k == "MergeStmt";
}

// ---- Relations in scope ----

void WholeRow(const Rel& r, Sources* out) {
  switch (r.kind) {
    case Rel::Kind::kTable:
      AddUnique(out, SourceColumn{r.table, ""});
      break;
    case Rel::Kind::kDerived:
      for (const auto& c : r.cols) AddAll(out, c.sources);
      break;
    case Rel::Kind::kFunction:
      AddAll(out, r.sources);
      break;
    case Rel::Kind::kJoin:
      for (const auto& m : r.members) WholeRow(*m, out);
      break;
  }
}

bool AllPlain(const Rel& r) {
  switch (r.kind) {
    case Rel::Kind::kTable:
      return true;
    case Rel::Kind::kDerived:
      return std::all_of(r.cols.begin(), r.cols.end(), [](const Col& c) { return c.plain; });
    case Rel::Kind::kFunction:
      return false;
    case Rel::Kind::kJoin:
      return std::all_of(r.members.begin(), r.members.end(),
                         [](const RelPtr& m) { return AllPlain(*m); });
  }
  return false;
}

void LookupCol(const Rel& r, const std::string& col, Lookup* l) {
  switch (r.kind) {
    case Rel::Kind::kTable:
      AddUnique(l->out, SourceColumn{r.table, col});
      if (std::find(r.renamed.begin(), r.renamed.end(), col) != r.renamed.end()) {
        AddUnique(l->out, SourceColumn{r.table, ""});  // a renamed column: which one is not known
      }
      l->any = true;
      break;
    case Rel::Kind::kDerived:
      for (const auto& c : r.cols) {
        if (c.star && !c.star_rels.empty()) {
          for (const auto& s : c.star_rels) LookupCol(*s, col, l);
        } else if (c.star || c.name.empty() || c.name == col) {
          AddAll(l->out, c.sources);
          l->plain = l->plain && c.plain;
          l->any = true;
          if (!c.star && c.name == col) l->definite = true;
        }
      }
      break;
    case Rel::Kind::kFunction:
      AddAll(l->out, r.sources);
      l->plain = false;
      l->any = true;
      break;
    case Rel::Kind::kJoin:
      for (const auto& m : r.members) LookupCol(*m, col, l);
      break;
  }
}

RelList FindRel(const std::string& name, const Level* lv) {
  RelList found;
  for (const Level* l = lv; l != nullptr; l = l->parent) {
    for (const auto& r : l->rels) {
      if (r->name == name || (r->kind == Rel::Kind::kTable && r->table == name)) found.push_back(r);
    }
    if (!found.empty()) break;
  }
  return found;
}

RelPtr FindCte(const std::string& name, const Level* lv) {
  for (const Level* l = lv; l != nullptr; l = l->parent) {
    for (const auto& [n, r] : l->ctes) {
      if (n == name) return r;
    }
  }
  return nullptr;
}

const Sources* FindWindow(const std::string& name, const Level* lv) {
  for (const Level* l = lv; l != nullptr; l = l->parent) {
    for (const auto& [n, s] : l->windows) {
      if (n == name) return &s;
    }
  }
  return nullptr;
}

bool MentionsRelation(const json& node, const std::string& name) {
  if (node.is_array()) {
    for (const auto& v : node) {
      if (MentionsRelation(v, name)) return true;
    }
    return false;
  }
  if (!node.is_object()) return false;
  if (auto r = node.find("relname"); r != node.end() && r->is_string() &&
                                     r->get<std::string>() == name &&
                                     !node.contains("schemaname")) {
    return true;
  }
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (MentionsRelation(it.value(), name)) return true;
  }
  return false;
}

std::string FigureColname(const json& val) {
  Node v = Unwrap(val);
  if (v.kind.empty()) return "";
  const json& b = *v.body;
  if (v.kind == "ColumnRef") {
    const json& f = List(b, "fields");
    return f.empty() ? "" : StringVal(f.back());
  }
  if (v.kind == "FuncCall") return LastName(List(b, "funcname"));
  if (v.kind == "A_Indirection") {
    const json& ind = List(b, "indirection");
    for (auto it = ind.rbegin(); it != ind.rend(); ++it) {
      if (std::string s = StringVal(*it); !s.empty()) return s;
    }
    const json* arg = Get(b, "arg");
    return arg != nullptr ? FigureColname(*arg) : "";
  }
  if (v.kind == "TypeCast" || v.kind == "CollateClause") {
    const json* arg = Get(b, "arg");
    std::string n = arg != nullptr ? FigureColname(*arg) : "";
    if (!n.empty() && n != "?column?") return n;
    if (v.kind == "CollateClause") return n;
    const json* type = Get(b, "typeName");
    return type != nullptr ? LastName(List(*type, "names")) : "";
  }
  if (v.kind == "CaseExpr") return "case";
  if (v.kind == "A_ArrayExpr") return "array";
  if (v.kind == "RowExpr") return "row";
  if (v.kind == "CoalesceExpr") return "coalesce";
  if (v.kind == "MinMaxExpr") return Str(b, "op") == "IS_GREATEST" ? "greatest" : "least";
  if (v.kind == "A_Expr") return Str(b, "kind") == "AEXPR_NULLIF" ? "nullif" : "?column?";
  if (v.kind == "A_Const" || v.kind == "BoolExpr" || v.kind == "NullTest" || v.kind == "ParamRef") {
    return "?column?";
  }
  if (v.kind == "SubLink") {
    std::string type = Str(b, "subLinkType");
    if (type == "EXISTS_SUBLINK") return "exists";
    if (type == "ARRAY_SUBLINK") return "array";
  }
  return "";
}

}  // namespace sluice::agent::postgres::lineage_internal
