#include "agent/postgres/lineage.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/attributes.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::postgres {
namespace {

using nlohmann::json;
using Sources = std::vector<SourceColumn>;

// Nesting deeper than this (expressions, subqueries) is not followed: the statement is opaque.
constexpr int kMaxDepth = 500;

// ---- Safe access to the parse tree: a missing or mistyped field reads as empty. ----

const json& EmptyArray() {
  static const json* empty = new json(json::array());
  return *empty;
}

// Field `key` of object `o`, or nullptr. A linear scan: parse-tree objects have a handful of
// fields, and comparing lengths first beats the map's string comparisons.
const json* Get(const json& o, absl::string_view key) {
  if (!o.is_object()) return nullptr;
  for (const auto& [k, v] : o.get_ref<const json::object_t&>()) {
    if (k.size() == key.size() && absl::string_view(k) == key) return &v;
  }
  return nullptr;
}

const json& List(const json& o, absl::string_view key) {
  const json* v = Get(o, key);
  return v != nullptr && v->is_array() ? *v : EmptyArray();
}

std::string Str(const json& o, absl::string_view key) {
  const json* v = Get(o, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

bool Bool(const json& o, absl::string_view key) {
  const json* v = Get(o, key);
  return v != nullptr && v->is_boolean() && v->get<bool>();
}

// A node {"Kind": body}: its kind ("" when `n` is not one) and body.
struct Node {
  absl::string_view kind;
  const json* body = nullptr;
};

Node Unwrap(const json& n) {
  if (!n.is_object()) return {};
  const auto& fields = n.get_ref<const json::object_t&>();
  if (fields.size() != 1) return {};
  auto it = fields.begin();
  return {it->first, &it->second};
}

// {"String": {"sval": s}} -> s ("" otherwise).
std::string StringVal(const json& n) {
  Node x = Unwrap(n);
  return x.kind == "String" ? Str(*x.body, "sval") : std::string();
}

// The last String of a name list (funcname, typeName.names), lower-case.
std::string LastName(const json& names) {
  if (!names.is_array() || names.empty()) return "";
  return absl::AsciiStrToLower(StringVal(names.back()));
}

template <typename T>
void AddUnique(std::vector<T>* v, const T& item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(item);
}

void AddAll(Sources* s, const Sources& more) {
  for (const auto& c : more) AddUnique(s, c);
}

// ---- Function and relation lists ----

// Functions whose arguments leave the statement other than as its result.
bool EscapeFunction(absl::string_view f) {
  static const auto* exact = new absl::flat_hash_set<absl::string_view>{
      "pg_notify", "set_config", "pg_logical_emit_message", "lo_from_bytea", "lo_put", "lowrite",
      "setval", "pg_file_write", "pg_create_restore_point"};
  return exact->contains(f) || absl::StartsWith(f, "pg_advisory") || absl::StartsWith(f, "pg_try_advisory") ||
         absl::StartsWith(f, "pg_sleep") || absl::StartsWith(f, "dblink");
}

// Functions that read table data the analysis cannot follow, and why.
const char* OpaqueFunction(absl::string_view f) {
  static const auto* from_string = new absl::flat_hash_set<absl::string_view>{
      "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
      "connectby"};
  static const auto* by_name = new absl::flat_hash_set<absl::string_view>{
      "table_to_xml", "table_to_xml_and_xmlschema", "table_to_xmlschema", "schema_to_xml",
      "schema_to_xml_and_xmlschema", "schema_to_xmlschema", "database_to_xml",
      "database_to_xml_and_xmlschema", "database_to_xmlschema", "cursor_to_xml", "cursor_to_xmlschema"};
  static const auto* raw = new absl::flat_hash_set<absl::string_view>{
      "pg_read_file", "pg_read_binary_file", "get_raw_page", "bt_page_items", "brin_page_items",
      "gist_page_items", "hash_page_items", "gin_leafpage_items"};
  if (from_string->contains(f) || absl::StartsWith(f, "crosstab") || absl::StartsWith(f, "dblink")) {
    return "runs SQL from a string";
  }
  if (by_name->contains(f)) return "reads a whole table, schema, database or cursor by name";
  if (raw->contains(f)) return "reads table storage";
  return nullptr;
}

// Function-style casts and parsers: an error can quote their argument.
bool CastFunction(absl::string_view f) {
  static const auto* k = new absl::flat_hash_set<absl::string_view>{
      "int2", "int4", "int8", "float4", "float8", "numeric", "date", "timestamp", "timestamptz", "time",
      "timetz", "interval", "json", "jsonb", "inet", "cidr", "uuid", "bool", "macaddr", "regclass",
      "to_number", "to_date", "to_timestamp"};
  return k->contains(f);
}

// Casting to these never fails on a text value (so no error can quote it).
bool TextType(absl::string_view t) {
  return t == "text" || t == "varchar" || t == "bpchar" || t == "char" || t == "name" || t == "citext";
}

// Catalog relations that hold values of table columns (planner statistics).
bool StatsRelation(absl::string_view r) {
  return r == "pg_stats" || r == "pg_stats_ext" || r == "pg_stats_ext_exprs" || r == "pg_statistic" ||
         r == "pg_statistic_ext_data";
}

bool ModifyKind(absl::string_view k) {
  return k == "InsertStmt" || k == "UpdateStmt" || k == "DeleteStmt" || k == "MergeStmt";
}

// ---- Relations in scope ----

struct Rel;
using RelPtr = std::shared_ptr<const Rel>;
using RelList = absl::InlinedVector<RelPtr, 2>;

// One output column of a derived relation (subquery, CTE, set operation).
struct Col {
  std::string name;  // "" when not known: matches any name
  Sources sources;   // what its value is computed from (for a star: every column it stands for)
  bool plain = false;
  bool star = false;             // stands for an unknown number of columns
  RelList star_rels;             // a star's relations (names are looked up in them); may be empty
};

struct Rel {
  enum class Kind { kTable, kDerived, kFunction, kJoin };
  Kind kind = Kind::kTable;
  std::string name;                  // how the statement names it: alias, else relation name
  std::string table;                 // kTable: the relation
  std::vector<std::string> renamed;  // kTable: alias column names (they rename its first columns)
  std::vector<Col> cols;             // kDerived
  Sources sources;                   // kFunction: every column derives from these
  std::vector<RelPtr> members;       // kJoin: the relations of an aliased join
};

// One query level: its FROM items, or the CTEs of a WITH.
struct Level {
  const Level* parent = nullptr;
  absl::InlinedVector<RelPtr, 4> rels;
  std::vector<std::pair<std::string, RelPtr>> ctes;
  std::vector<std::pair<std::string, Sources>> windows;  // WINDOW w AS (...)
  bool merged = false;  // a join with USING or NATURAL (`*` merges columns)
};

void WholeRow(const Rel& r, Sources* out) {
  switch (r.kind) {
    case Rel::Kind::kTable: AddUnique(out, SourceColumn{r.table, ""}); break;
    case Rel::Kind::kDerived:
      for (const auto& c : r.cols) AddAll(out, c.sources);
      break;
    case Rel::Kind::kFunction: AddAll(out, r.sources); break;
    case Rel::Kind::kJoin:
      for (const auto& m : r.members) WholeRow(*m, out);
      break;
  }
}

bool AllPlain(const Rel& r) {
  switch (r.kind) {
    case Rel::Kind::kTable: return true;
    case Rel::Kind::kDerived:
      return std::all_of(r.cols.begin(), r.cols.end(), [](const Col& c) { return c.plain; });
    case Rel::Kind::kFunction: return false;
    case Rel::Kind::kJoin:
      return std::all_of(r.members.begin(), r.members.end(), [](const RelPtr& m) { return AllPlain(*m); });
  }
  return false;
}

struct Lookup {
  Sources* out;
  bool plain = true;      // every contribution was a plain column
  bool definite = false;  // a relation certainly has the column (a named subquery output)
  bool any = false;       // some relation may have it
};

// Column `col` of relation `r`.
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

// The relations named `name` in the innermost level that has one.
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

// True when a RangeVar without schema named `name` occurs under `node` (a CTE referring to itself).
bool MentionsRelation(const json& node, const std::string& name) {
  if (node.is_array()) {
    for (const auto& v : node) {
      if (MentionsRelation(v, name)) return true;
    }
    return false;
  }
  if (!node.is_object()) return false;
  if (auto r = node.find("relname"); r != node.end() && r->is_string() && r->get<std::string>() == name &&
                                     !node.contains("schemaname")) {
    return true;
  }
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (MentionsRelation(it.value(), name)) return true;
  }
  return false;
}

// The label PostgreSQL gives a result column computed by `val` (FigureColname), "" when not known
// here (such a column then matches any name a query looks up).
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

// ---- The analysis ----

class Analyzer {
 public:
  explicit Analyzer(StatementLineage* out) : out_(out) {}

  // A statement at the top (or under EXPLAIN): the rows it returns.
  std::vector<Col> Top(const json& stmt);

  void Opaque(absl::string_view why) {
    if (absl::StrContains(out_->opaque, why)) return;
    if (!out_->opaque.empty()) out_->opaque += "; ";
    out_->opaque.append(why.data(), why.size());
  }

 private:
  struct Depth {
    explicit Depth(Analyzer* a) : a(a) {
      ok = ++a->depth_ <= kMaxDepth;
      if (!ok) a->Opaque("statement nested too deeply to analyse");
    }
    ~Depth() { --a->depth_; }
    Analyzer* a;
    bool ok;
  };

  void Read(const Sources& s) { AddAll(&out_->reads, s); }
  void Table(const std::string& t) { AddUnique(&out_->tables, t); }
  void EscapeAll(const Sources& s, const std::string& how) {
    for (const auto& c : s) AddUnique(&out_->escapes, Escape{c, how});
  }
  void EscapeCols(const std::vector<Col>& cols, const std::string& how, bool only_computed = false) {
    for (const auto& c : cols) {
      if (!only_computed || !c.plain) EscapeAll(c.sources, how);
    }
  }

  std::vector<Col> Stmt(const json& wrapped, const Level* parent);
  std::vector<Col> Select(const json& body, const Level* parent);
  ABSL_ATTRIBUTE_NOINLINE std::vector<Col> SetOp(const std::string& op, const json* larg, const json* rarg,
                                                 const json* sort, const std::vector<const json*>& others,
                                                 const Level* base);
  std::vector<Col> Modify(absl::string_view kind, const json& body, const Level* parent);
  void BindCtes(const json& with, Level* lv);
  RelPtr Derived(std::string name, std::vector<Col> cols, const json& colnames);
  void AddFrom(const json& item, Level* lv);
  void AddRangeVar(const json& body, Level* lv);
  std::vector<Col> Targets(const json& list, const Level* lv);
  void StarTarget(const json& ref, const Level* lv, std::vector<Col>* cols);
  void Eval(const json& n, const Level* lv, Sources* out);
  void EvalField(const json& body, absl::string_view key, const Level* lv, Sources* out) {
    if (const json* v = Get(body, key)) Eval(*v, lv, out);
  }
  void ReadField(const json& body, absl::string_view key, const Level* lv) {
    Sources ignored;
    EvalField(body, key, lv, &ignored);
  }
  // Called from Eval, which recurses: kept out of its frame.
  ABSL_ATTRIBUTE_NOINLINE void ColumnRef(const json& ref, const Level* lv, Sources* out, bool* plain);
  void ResolveName(const std::string& col, const Level* lv, Sources* out, bool* plain, bool whole_row = false);
  ABSL_ATTRIBUTE_NOINLINE void Func(const json& b, const Level* lv, Sources* out);
  ABSL_ATTRIBUTE_NOINLINE void Cast(const json& b, const Level* lv, Sources* out);
  ABSL_ATTRIBUTE_NOINLINE void Indirection(const json& b, const Level* lv, Sources* out);
  ABSL_ATTRIBUTE_NOINLINE void SubLink(const json& b, const Level* lv, Sources* out);
  ABSL_ATTRIBUTE_NOINLINE void Subquery(const json& n, const Level* lv, Sources* out);
  ABSL_ATTRIBUTE_NOINLINE void Misplaced(absl::string_view kind);
  void Utility(absl::string_view kind, const json& body);

  StatementLineage* out_;
  int depth_ = 0;
};

std::vector<Col> Analyzer::Top(const json& stmt) {
  Node x = Unwrap(stmt);
  if (x.kind.empty()) {
    Opaque("statement node not understood");
    return {};
  }
  const json& b = *x.body;
  absl::string_view k = x.kind;
  if (k == "SelectStmt") {
    std::vector<Col> cols = Select(b, nullptr);
    if (const json* into = Get(b, "intoClause")) {
      const json* rel = Get(*into, "rel");
      std::string name = rel != nullptr ? Str(*rel, "relname") : "";
      if (!name.empty()) Table(name);
      EscapeCols(cols, absl::StrCat("SELECT INTO ", name));
      return {};
    }
    return cols;
  }
  if (ModifyKind(k)) return Modify(k, b, nullptr);
  if (k == "CreateTableAsStmt") {
    const json* into = Get(b, "into");
    const json* rel = into != nullptr ? Get(*into, "rel") : nullptr;
    std::string name = rel != nullptr ? Str(*rel, "relname") : "";
    if (!name.empty()) Table(name);
    const json* q = Get(b, "query");
    if (q == nullptr) {
      Opaque("CREATE TABLE AS without a query");
      return {};
    }
    if (Unwrap(*q).kind == "ExecuteStmt") {
      Top(*q);
      Opaque("CREATE TABLE AS EXECUTE: the prepared statement's columns are not known");
      return {};
    }
    std::vector<Col> cols = Stmt(*q, nullptr);
    EscapeCols(cols, Str(b, "objtype") == "OBJECT_MATVIEW" ? absl::StrCat("CREATE MATERIALIZED VIEW ", name)
                                                           : absl::StrCat("CREATE TABLE ", name, " AS"));
    return {};
  }
  if (k == "ViewStmt") {
    const json* view = Get(b, "view");
    std::string name = view != nullptr ? Str(*view, "relname") : "";
    if (const json* q = Get(b, "query")) EscapeCols(Stmt(*q, nullptr), absl::StrCat("CREATE VIEW ", name));
    return {};
  }
  if (k == "DeclareCursorStmt" || k == "PrepareStmt") {
    // The rows come later (FETCH, EXECUTE), where plain columns are still named by the wire.
    std::string how = k == "DeclareCursorStmt" ? absl::StrCat("DECLARE CURSOR ", Str(b, "portalname"))
                                               : absl::StrCat("PREPARE ", Str(b, "name"));
    if (const json* q = Get(b, "query")) EscapeCols(Stmt(*q, nullptr), how, /*only_computed=*/true);
    return {};
  }
  if (k == "ExplainStmt") {
    if (const json* q = Get(b, "query")) Top(*q);  // its rows are not returned
    return {};
  }
  if (k == "CopyStmt") {
    bool program = Bool(b, "is_program");
    bool file = Get(b, "filename") != nullptr;
    const char* to = program ? "TO PROGRAM" : file ? "TO file" : "TO STDOUT";
    if (const json* q = Get(b, "query")) {
      EscapeCols(Stmt(*q, nullptr), absl::StrCat("COPY (query) ", to));
      return {};
    }
    const json* rel = Get(b, "relation");
    std::string table = rel != nullptr ? Str(*rel, "relname") : "";
    if (table.empty()) {
      Opaque("COPY without a table or query");
      return {};
    }
    Table(table);
    if (Bool(b, "is_from")) return {};
    Sources s;
    for (const auto& a : List(b, "attlist")) AddUnique(&s, SourceColumn{table, StringVal(a)});
    if (s.empty()) s.push_back(SourceColumn{table, ""});
    Read(s);
    if (program || file) EscapeAll(s, absl::StrCat("COPY ", table, " ", to));
    return {};
  }
  if (k == "ExecuteStmt") {
    // A parameter becomes a value of the prepared statement, which may return or store it.
    Sources s;
    EvalField(b, "params", nullptr, &s);
    EscapeAll(s, absl::StrCat("EXECUTE ", Str(b, "name")));
    return {};
  }
  if (k == "DoStmt") {
    Opaque("DO block");
    return {};
  }
  if (k == "CallStmt") {
    const json* call = Get(b, "funccall");
    Opaque(absl::StrCat("CALL ", call != nullptr ? LastName(List(*call, "funcname")) : ""));
    if (call != nullptr) ReadField(*call, "args", nullptr);
    return {};
  }
  if (k == "NotifyStmt") return {};  // its payload is a literal
  Utility(k, b);
  return {};
}

// Statements with no query of their own: only what they name, unless they hold expressions
// (ALTER TABLE ... USING, index expressions, rules), which are not followed.
void Analyzer::Utility(absl::string_view kind, const json& body) {
  bool column_ref = false, query = false;
  std::string opaque_fn;
  auto scan = [&](auto&& self, const json& n) -> void {
    if (n.is_array()) {
      for (const auto& v : n) self(self, v);
      return;
    }
    if (!n.is_object()) return;
    if (auto r = n.find("relname"); r != n.end() && r->is_string()) Table(r->get<std::string>());
    for (auto it = n.begin(); it != n.end(); ++it) {
      const std::string& key = it.key();
      if (key == "ColumnRef") column_ref = true;
      if (key == "SubLink" || key == "SelectStmt" || ModifyKind(key)) query = true;
      if (key == "FuncCall") {
        std::string f = LastName(List(it.value(), "funcname"));
        if (OpaqueFunction(f) != nullptr) opaque_fn = f;
      }
      self(self, it.value());
    }
  };
  scan(scan, body);
  if (kind == "CreateFunctionStmt") return;  // its body runs later, when called
  if (query || !opaque_fn.empty() || (column_ref && kind != "CreateStmt")) {
    Opaque(absl::StrCat(kind, " evaluates expressions that are not followed"));
  }
}

std::vector<Col> Analyzer::Stmt(const json& wrapped, const Level* parent) {
  Node x = Unwrap(wrapped);
  if (x.kind == "SelectStmt") return Select(*x.body, parent);
  if (ModifyKind(x.kind)) return Modify(x.kind, *x.body, parent);
  Opaque(absl::StrCat(x.kind.empty() ? "a query" : x.kind, " not understood inside a statement"));
  return {};
}

std::vector<Col> Analyzer::Select(const json& body, const Level* parent) {
  Depth depth(this);
  if (!depth.ok || !body.is_object()) return {};
  // One pass over the fields: looking each one up costs more than the rest of a small query.
  const json *with = nullptr, *values = nullptr, *windows = nullptr, *targets = nullptr, *sort = nullptr;
  const json *from = nullptr, *larg = nullptr, *rarg = nullptr;
  std::string op;
  std::vector<const json*> others;  // WHERE, GROUP BY, HAVING, DISTINCT ON, LIMIT, ...: only read
  for (const auto& [key, v] : body.get_ref<const json::object_t&>()) {
    absl::string_view k = key;
    if (k == "targetList") {
      targets = &v;
    } else if (k == "fromClause") {
      from = &v;
    } else if (k == "op") {
      if (v.is_string()) op = v.get<std::string>();
    } else if (k == "withClause") {
      with = &v;
    } else if (k == "valuesLists") {
      values = &v;
    } else if (k == "windowClause") {
      windows = &v;
    } else if (k == "sortClause") {
      sort = &v;
    } else if (k == "larg") {
      larg = &v;
    } else if (k == "rarg") {
      rarg = &v;
    } else if (k == "intoClause" || k == "lockingClause") {
      // SELECT INTO: at the top (Top); FOR UPDATE OF names relations only.
    } else if (v.is_object() || v.is_array()) {
      others.push_back(&v);
    }
  }
  Level with_lv;
  with_lv.parent = parent;
  const Level* base = parent;
  if (with != nullptr) {
    BindCtes(*with, &with_lv);
    base = &with_lv;
  }
  if (!op.empty() && op != "SETOP_NONE") return SetOp(op, larg, rarg, sort, others, base);

  Level lv;
  lv.parent = base;
  std::vector<Col> cols;
  if (values != nullptr) {
    if (!values->is_array()) Opaque("VALUES not understood");
    for (const auto& row : values->is_array() ? *values : EmptyArray()) {
      Node list = Unwrap(row);
      const json& items = list.kind == "List" ? List(*list.body, "items") : EmptyArray();
      if (list.kind != "List") Opaque("VALUES row not understood");
      for (size_t i = 0; i < items.size(); ++i) {
        if (cols.size() <= i) {
          cols.emplace_back();
          cols.back().name = absl::StrCat("column", i + 1);
        }
        Eval(items[i], &lv, &cols[i].sources);
      }
    }
  }
  if (from != nullptr) {
    if (!from->is_array()) Opaque("FROM not understood");
    for (const auto& item : from->is_array() ? *from : EmptyArray()) AddFrom(item, &lv);
  }
  if (windows != nullptr) {
    for (const auto& w : windows->is_array() ? *windows : EmptyArray()) {
      Node def = Unwrap(w);
      Sources s;
      if (def.kind == "WindowDef") Eval(*def.body, &lv, &s);
      lv.windows.emplace_back(def.kind == "WindowDef" ? Str(*def.body, "name") : "", std::move(s));
    }
  }
  if (targets != nullptr) {
    std::vector<Col> t = Targets(*targets, &lv);
    if (cols.empty()) {
      cols = std::move(t);
    } else {
      Opaque("SELECT with both VALUES and a target list");
    }
  }
  Sources ignored;
  for (const json* o : others) Eval(*o, &lv, &ignored);
  // ORDER BY may name a result column by its label.
  for (const auto& s : sort != nullptr && sort->is_array() ? *sort : EmptyArray()) {
    Node by = Unwrap(s);
    const json* expr = by.kind == "SortBy" ? Get(*by.body, "node") : nullptr;
    Node ref = expr != nullptr ? Unwrap(*expr) : Node{};
    if (ref.kind == "ColumnRef" && List(*ref.body, "fields").size() == 1) {
      std::string name = StringVal(List(*ref.body, "fields")[0]);
      auto it = std::find_if(cols.begin(), cols.end(), [&](const Col& c) { return !name.empty() && c.name == name; });
      if (it != cols.end()) {
        Read(it->sources);
        continue;
      }
    }
    Eval(s, &lv, &ignored);
  }
  return cols;
}

// A set operation: column i is column i of one of the arms, so no column has a table on the wire.
std::vector<Col> Analyzer::SetOp(const std::string& op, const json* larg, const json* rarg, const json* sort,
                                 const std::vector<const json*>& others, const Level* base) {
  if (op != "SETOP_UNION" && op != "SETOP_INTERSECT" && op != "SETOP_EXCEPT") Opaque("set operation " + op);
  if (larg == nullptr || rarg == nullptr) {
    Opaque("set operation without two queries");
    return {};
  }
  std::vector<Col> left = Select(*larg, base);
  std::vector<Col> right = Select(*rarg, base);
  bool aligned = left.size() == right.size();
  for (const auto& c : left) aligned = aligned && !c.star;
  for (const auto& c : right) aligned = aligned && !c.star;
  std::vector<Col> cols;
  if (aligned) {
    for (size_t i = 0; i < left.size(); ++i) {
      Col c;
      c.name = left[i].name;
      c.sources = std::move(left[i].sources);
      AddAll(&c.sources, right[i].sources);
      cols.push_back(std::move(c));
    }
  } else {
    Col c;
    c.star = true;
    for (const auto& a : left) AddAll(&c.sources, a.sources);
    for (const auto& a : right) AddAll(&c.sources, a.sources);
    cols.push_back(std::move(c));
  }
  Level sort_lv;
  sort_lv.parent = base;
  sort_lv.rels.push_back(Derived("", cols, EmptyArray()));
  Sources ignored;
  if (sort != nullptr) Eval(*sort, &sort_lv, &ignored);
  for (const json* o : others) Eval(*o, &sort_lv, &ignored);
  return cols;
}

std::vector<Col> Analyzer::Modify(absl::string_view kind, const json& body, const Level* parent) {
  Depth depth(this);
  if (!depth.ok) return {};
  Level with_lv;
  with_lv.parent = parent;
  const Level* base = parent;
  if (const json* with = Get(body, "withClause")) {
    BindCtes(*with, &with_lv);
    base = &with_lv;
  }
  const json* relation = Get(body, "relation");
  std::string table = relation != nullptr ? Str(*relation, "relname") : "";
  if (table.empty()) {
    Opaque(absl::StrCat(kind, " without a table"));
    return {};
  }
  Table(table);
  const json* alias = Get(*relation, "alias");
  std::string alias_name = alias != nullptr ? Str(*alias, "aliasname") : "";
  auto target = std::make_shared<Rel>();
  target->kind = Rel::Kind::kTable;
  target->name = alias_name.empty() ? table : alias_name;
  target->table = table;
  Level lv;
  lv.parent = base;
  lv.rels.push_back(target);

  // SET column = value: a value that stays in its own column is still masked there.
  auto assignments = [&](const json& list, const std::string& how) {
    for (const auto& t : list) {
      Node rt = Unwrap(t);
      if (rt.kind != "ResTarget") {
        Opaque(absl::StrCat("assignment ", rt.kind, " not understood"));
        continue;
      }
      Sources s;
      EvalField(*rt.body, "val", &lv, &s);
      SourceColumn self{table, Str(*rt.body, "name")};
      s.erase(std::remove(s.begin(), s.end(), self), s.end());
      EscapeAll(s, how);
    }
  };

  if (kind == "InsertStmt") {
    std::string how = absl::StrCat("INSERT INTO ", table);
    std::vector<Col> rows;
    if (const json* sel = Get(body, "selectStmt")) {
      rows = Stmt(*sel, base);
      EscapeCols(rows, how);
    }
    if (const json* conflict = Get(body, "onConflictClause")) {
      // `excluded` is the row proposed for insertion.
      auto excluded = std::make_shared<Rel>();
      excluded->kind = Rel::Kind::kDerived;
      excluded->name = "excluded";
      Col all;
      all.star = true;
      for (const auto& c : rows) AddAll(&all.sources, c.sources);
      excluded->cols.push_back(std::move(all));
      Level conflict_lv;
      conflict_lv.parent = &lv;
      conflict_lv.rels.push_back(excluded);
      ReadField(*conflict, "infer", &lv);
      for (const auto& t : List(*conflict, "targetList")) {
        Node rt = Unwrap(t);
        Sources s;
        if (rt.kind == "ResTarget") EvalField(*rt.body, "val", &conflict_lv, &s);
        SourceColumn self{table, rt.kind == "ResTarget" ? Str(*rt.body, "name") : ""};
        s.erase(std::remove(s.begin(), s.end(), self), s.end());
        EscapeAll(s, how + " ON CONFLICT DO UPDATE");
      }
      ReadField(*conflict, "whereClause", &conflict_lv);
    }
  } else if (kind == "UpdateStmt") {
    for (const auto& item : List(body, "fromClause")) AddFrom(item, &lv);
    assignments(List(body, "targetList"), absl::StrCat("UPDATE ", table));
    ReadField(body, "whereClause", &lv);
  } else if (kind == "DeleteStmt") {
    for (const auto& item : List(body, "usingClause")) AddFrom(item, &lv);
    ReadField(body, "whereClause", &lv);
  } else {  // MergeStmt
    std::string how = absl::StrCat("MERGE INTO ", table);
    if (const json* source = Get(body, "sourceRelation")) AddFrom(*source, &lv);
    ReadField(body, "joinCondition", &lv);
    for (const auto& w : List(body, "mergeWhenClauses")) {
      Node clause = Unwrap(w);
      if (clause.kind != "MergeWhenClause") {
        Opaque("MERGE clause not understood");
        continue;
      }
      ReadField(*clause.body, "condition", &lv);
      assignments(List(*clause.body, "targetList"), how);
      Sources s;
      EvalField(*clause.body, "values", &lv, &s);
      EscapeAll(s, how);
    }
  }
  if (const json* returning = Get(body, "returningList")) return Targets(*returning, &lv);
  return {};
}

void Analyzer::BindCtes(const json& with, Level* lv) {
  struct Cte {
    std::string name;
    const json* query;
    const json* colnames;
    bool self;
  };
  std::vector<Cte> ctes;
  for (const auto& c : List(with, "ctes")) {
    Node cte = Unwrap(c);
    const json* q = cte.kind == "CommonTableExpr" ? Get(*cte.body, "ctequery") : nullptr;
    if (q == nullptr) {
      Opaque("WITH entry not understood");
      continue;
    }
    std::string name = Str(*cte.body, "ctename");
    // SEARCH and CYCLE add columns computed from the CTE's: treated as a recursive CTE's, whose
    // every column may hold any of its values.
    bool extra = Get(*cte.body, "search_clause") != nullptr || Get(*cte.body, "cycle_clause") != nullptr;
    ctes.push_back(Cte{name, q, &List(*cte.body, "aliascolnames"), extra});
  }
  auto bind = [&](const Cte& c) {
    std::vector<Col> cols = Stmt(*c.query, lv);
    if (c.self) {
      // A recursive CTE: any column may carry any arm's values into any other column.
      Col all;
      all.star = true;
      for (const auto& col : cols) AddAll(&all.sources, col.sources);
      cols.assign(1, std::move(all));
    }
    return Derived(c.name, std::move(cols), *c.colnames);
  };
  if (!Bool(with, "recursive")) {
    for (const auto& c : ctes) lv->ctes.emplace_back(c.name, bind(c));
    return;
  }
  // WITH RECURSIVE: any CTE may refer to itself or to a later one. Every name is bound to an
  // empty relation first, then all are analysed again until what they derive from stops growing
  // (it only grows, and is bounded by the columns the statement names).
  for (auto& c : ctes) {
    c.self = c.self || MentionsRelation(*c.query, c.name);
    auto open = std::make_shared<Rel>();
    open->kind = Rel::Kind::kDerived;
    open->name = c.name;
    Col any;
    any.star = true;
    open->cols.push_back(std::move(any));
    lv->ctes.emplace_back(c.name, std::move(open));
  }
  auto measure = [](const Rel& r) {
    size_t n = r.cols.size();
    for (const auto& c : r.cols) n += c.sources.size();
    return n;
  };
  std::vector<size_t> sizes(ctes.size(), 0);
  bool changed = true;
  for (size_t round = 0; changed && round < ctes.size() + 3; ++round) {
    changed = false;
    for (size_t i = 0; i < ctes.size(); ++i) {
      RelPtr rel = bind(ctes[i]);
      size_t m = measure(*rel);
      if (m != sizes[i]) changed = true;
      sizes[i] = m;
      lv->ctes[i].second = std::move(rel);
    }
  }
  if (changed) Opaque("recursive WITH not resolved");
}

RelPtr Analyzer::Derived(std::string name, std::vector<Col> cols, const json& colnames) {
  auto rel = std::make_shared<Rel>();
  rel->kind = Rel::Kind::kDerived;
  rel->name = std::move(name);
  bool stars = std::any_of(cols.begin(), cols.end(), [](const Col& c) { return c.star; });
  if (!colnames.empty() && stars) {
    // Renamed columns of a `*`: which is which is not known.
    Col all;
    all.star = true;
    all.plain = true;
    for (const auto& c : cols) {
      AddAll(&all.sources, c.sources);
      all.plain = all.plain && c.plain;
    }
    cols.assign(1, std::move(all));
  } else {
    for (size_t i = 0; i < colnames.size() && i < cols.size(); ++i) cols[i].name = StringVal(colnames[i]);
  }
  rel->cols = std::move(cols);
  return rel;
}

void Analyzer::AddFrom(const json& item, Level* lv) {
  Depth depth(this);
  if (!depth.ok) return;
  Node x = Unwrap(item);
  if (x.kind.empty()) {
    Opaque("FROM item not understood");
    return;
  }
  const json& b = *x.body;
  const json* alias = Get(b, "alias");
  std::string alias_name = alias != nullptr ? Str(*alias, "aliasname") : "";
  if (x.kind == "RangeVar") {
    AddRangeVar(b, lv);
  } else if (x.kind == "RangeSubselect") {
    const json* sub = Get(b, "subquery");
    if (sub == nullptr) {
      Opaque("subquery in FROM not understood");
      return;
    }
    // A LATERAL subquery sees the FROM items before it; any other only the enclosing queries.
    std::vector<Col> cols = Stmt(*sub, Bool(b, "lateral") ? lv : lv->parent);
    lv->rels.push_back(Derived(alias_name, std::move(cols), alias != nullptr ? List(*alias, "colnames") : EmptyArray()));
  } else if (x.kind == "JoinExpr") {
    size_t first = lv->rels.size();
    const json* l = Get(b, "larg");
    const json* r = Get(b, "rarg");
    if (l == nullptr || r == nullptr) {
      Opaque("JOIN not understood");
      return;
    }
    AddFrom(*l, lv);
    AddFrom(*r, lv);
    if (Bool(b, "isNatural") || !List(b, "usingClause").empty()) lv->merged = true;
    ReadField(b, "quals", lv);
    // `(a JOIN b) AS j`, and `a JOIN b USING (id) AS j` (j.id: the merged column).
    const json* using_alias = Get(b, "join_using_alias");
    for (std::string name : {alias_name, using_alias != nullptr ? Str(*using_alias, "aliasname") : ""}) {
      if (name.empty()) continue;
      auto join = std::make_shared<Rel>();
      join->kind = Rel::Kind::kJoin;
      join->name = std::move(name);
      for (size_t i = first; i < lv->rels.size(); ++i) {
        if (lv->rels[i]->kind != Rel::Kind::kJoin) join->members.push_back(lv->rels[i]);
      }
      lv->rels.push_back(std::move(join));
    }
  } else if (x.kind == "RangeFunction" || x.kind == "RangeTableFunc") {
    // Functions in FROM see the items before them. Each output column may derive from any argument.
    auto fn = std::make_shared<Rel>();
    fn->kind = Rel::Kind::kFunction;
    if (x.kind == "RangeFunction") {
      EvalField(b, "functions", lv, &fn->sources);
    } else {
      EvalField(b, "docexpr", lv, &fn->sources);
      EvalField(b, "rowexpr", lv, &fn->sources);
      EvalField(b, "namespaces", lv, &fn->sources);
      EvalField(b, "columns", lv, &fn->sources);
    }
    fn->name = alias_name;
    if (fn->name.empty() && x.kind == "RangeFunction") {
      // Unaliased: named after its (first) function.
      const json& fns = List(b, "functions");
      if (!fns.empty()) {
        Node list = Unwrap(fns[0]);
        const json& items = list.kind == "List" ? List(*list.body, "items") : EmptyArray();
        if (!items.empty()) {
          Node call = Unwrap(items[0]);
          if (call.kind == "FuncCall") fn->name = LastName(List(*call.body, "funcname"));
        }
      }
    }
    lv->rels.push_back(std::move(fn));
  } else if (x.kind == "RangeTableSample") {
    const json* rel = Get(b, "relation");
    if (rel == nullptr) {
      Opaque("TABLESAMPLE not understood");
      return;
    }
    AddFrom(*rel, lv);
    ReadField(b, "args", lv);
    ReadField(b, "repeatable", lv);
  } else {
    Opaque(absl::StrCat("FROM item ", x.kind, " not understood"));
  }
}

void Analyzer::AddRangeVar(const json& body, Level* lv) {
  std::string relname = Str(body, "relname");
  const json* alias = Get(body, "alias");
  std::string alias_name = alias != nullptr ? Str(*alias, "aliasname") : "";
  if (relname.empty()) {
    Opaque("relation without a name");
    return;
  }
  if (Get(body, "schemaname") == nullptr) {
    if (RelPtr cte = FindCte(relname, lv)) {
      auto rel = std::make_shared<Rel>(*cte);
      rel->name = alias_name.empty() ? relname : alias_name;
      const json& colnames = alias != nullptr ? List(*alias, "colnames") : EmptyArray();
      if (!colnames.empty()) {
        lv->rels.push_back(Derived(rel->name, std::move(rel->cols), colnames));
      } else {
        lv->rels.push_back(std::move(rel));
      }
      return;
    }
  }
  if (StatsRelation(relname)) Opaque(absl::StrCat(relname, " holds values of table columns (planner statistics)"));
  Table(relname);
  auto rel = std::make_shared<Rel>();
  rel->kind = Rel::Kind::kTable;
  rel->name = alias_name.empty() ? relname : alias_name;
  rel->table = relname;
  if (alias != nullptr) {
    for (const auto& n : List(*alias, "colnames")) rel->renamed.push_back(StringVal(n));
  }
  lv->rels.push_back(std::move(rel));
}

std::vector<Col> Analyzer::Targets(const json& list, const Level* lv) {
  std::vector<Col> cols;
  if (!list.is_array()) {
    Opaque("target list not understood");
    return cols;
  }
  for (const auto& t : list) {
    Node rt = Unwrap(t);
    if (rt.kind != "ResTarget") {
      Opaque(absl::StrCat("target ", rt.kind, " not understood"));
      continue;
    }
    const json* val = Get(*rt.body, "val");
    if (val == nullptr) continue;
    Node v = Unwrap(*val);
    if (v.kind == "ColumnRef") {
      const json& fields = List(*v.body, "fields");
      if (!fields.empty() && Unwrap(fields.back()).kind == "A_Star") {
        StarTarget(*v.body, lv, &cols);
        continue;
      }
    }
    Col c;
    c.name = Str(*rt.body, "name");
    if (c.name.empty()) c.name = FigureColname(*val);
    if (v.kind == "ColumnRef") {
      ColumnRef(*v.body, lv, &c.sources, &c.plain);
    } else {
      Eval(*val, lv, &c.sources);
    }
    cols.push_back(std::move(c));
  }
  return cols;
}

void Analyzer::StarTarget(const json& ref, const Level* lv, std::vector<Col>* cols) {
  const json& fields = List(ref, "fields");
  std::string qualifier = fields.size() >= 2 ? StringVal(fields[fields.size() - 2]) : "";
  RelList rels;
  if (fields.size() == 1) {
    if (lv != nullptr) {
      for (const auto& r : lv->rels) {
        if (r->kind != Rel::Kind::kJoin) rels.push_back(r);
      }
    }
  } else {
    rels = FindRel(qualifier, lv);
  }
  if (rels.empty()) {
    Col c;
    c.star = true;
    c.sources.push_back(SourceColumn{"", ""});
    Read(c.sources);
    cols->push_back(std::move(c));
    return;
  }
  // Subqueries whose columns are all known expand into them (unless USING/NATURAL merges some).
  bool expand = !(fields.size() == 1 && lv->merged);
  for (const auto& r : rels) {
    expand = expand && r->kind == Rel::Kind::kDerived &&
             std::none_of(r->cols.begin(), r->cols.end(), [](const Col& c) { return c.star; });
  }
  if (expand) {
    for (const auto& r : rels) {
      for (const auto& c : r->cols) {
        Read(c.sources);
        cols->push_back(c);
      }
    }
    return;
  }
  Col c;
  c.star = true;
  c.plain = true;
  for (const auto& r : rels) {
    WholeRow(*r, &c.sources);
    c.plain = c.plain && AllPlain(*r);
  }
  c.star_rels = std::move(rels);
  Read(c.sources);
  cols->push_back(std::move(c));
}

void Analyzer::Eval(const json& n, const Level* lv, Sources* out) {
  if (n.is_array()) {
    for (const auto& v : n.get_ref<const json::array_t&>()) Eval(v, lv, out);
    return;
  }
  if (!n.is_object()) return;
  Node x = Unwrap(n);
  if (x.kind.empty()) {  // a node's fields
    for (const auto& [key, v] : n.get_ref<const json::object_t&>()) Eval(v, lv, out);
    return;
  }
  absl::string_view k = x.kind;
  if (k == "A_Const" || k == "String" || k == "ParamRef" || k == "Integer" || k == "Float" || k == "Boolean") {
    return;
  }
  Depth depth(this);
  if (!depth.ok) return;
  const json& b = *x.body;
  if (k == "ColumnRef") {
    bool plain;
    return ColumnRef(b, lv, out, &plain);
  }
  if (k == "FuncCall") return Func(b, lv, out);
  if (k == "TypeCast") return Cast(b, lv, out);
  if (k == "A_Indirection") return Indirection(b, lv, out);
  if (k == "SubLink") return SubLink(b, lv, out);
  if (k == "SelectStmt" || ModifyKind(k)) return Subquery(n, lv, out);
  if (k == "RangeVar" || k == "RangeSubselect" || k == "JoinExpr" || k == "RangeFunction") return Misplaced(k);
  // Any other node: its value derives from everything under it.
  Eval(b, lv, out);
}

// Conservative for every kind (EXISTS, IN, ANY too): the value derives from the subquery's columns
// and the tested expression.
void Analyzer::SubLink(const json& b, const Level* lv, Sources* out) {
  EvalField(b, "testexpr", lv, out);
  if (const json* sub = Get(b, "subselect")) Subquery(*sub, lv, out);
}

void Analyzer::Subquery(const json& n, const Level* lv, Sources* out) {
  for (const auto& c : Stmt(n, lv)) AddAll(out, c.sources);
}

void Analyzer::Misplaced(absl::string_view kind) { Opaque(absl::StrCat(kind, " inside an expression")); }

void Analyzer::ColumnRef(const json& ref, const Level* lv, Sources* out, bool* plain) {
  absl::InlinedVector<std::string, 3> names;
  bool star = false;
  for (const auto& f : List(ref, "fields")) {
    Node x = Unwrap(f);
    if (x.kind == "String") {
      names.push_back(Str(*x.body, "sval"));
    } else if (x.kind == "A_Star") {
      star = true;
    } else {
      Opaque("column reference not understood");
    }
  }
  Sources s;
  *plain = !star && !names.empty();
  if (star) {
    // t.* (or *) inside an expression: whole rows.
    RelList rels;
    if (names.empty()) {
      for (const Level* l = lv; l != nullptr && rels.empty(); l = l->parent) {
        for (const auto& r : l->rels) {
          if (r->kind != Rel::Kind::kJoin) rels.push_back(r);
        }
      }
    } else {
      rels = FindRel(names.back(), lv);
    }
    for (const auto& r : rels) WholeRow(*r, &s);
    if (rels.empty()) s.push_back(SourceColumn{"", ""});
  } else if (names.size() == 1) {
    // `c`: a column named c, or the whole row of relation c.
    RelList rels = FindRel(names[0], lv);
    ResolveName(names[0], lv, &s, plain, !rels.empty());
    for (const auto& r : rels) WholeRow(*r, &s);
    if (!rels.empty()) *plain = false;
  } else if (!names.empty()) {
    // [schema.]table.column, or column.field of a composite column.
    bool found = false;
    for (size_t i = names.size() - 1; i-- > 0;) {
      RelList rels = FindRel(names[i], lv);
      if (rels.empty()) continue;
      Lookup l{&s};
      for (const auto& r : rels) LookupCol(*r, names[i + 1], &l);
      *plain = l.plain && i + 2 == names.size();
      found = true;
      break;
    }
    if (!found) {
      ResolveName(names[0], lv, &s, plain);
      *plain = false;
    }
  }
  Read(s);
  if (out->empty()) {
    *out = std::move(s);
  } else {
    AddAll(out, s);
  }
}

// An unqualified column: every relation in scope that could have it, innermost query first; a
// query level where a subquery certainly has it ends the search. Found nowhere, it is a column of
// some table of the statement ("" table), unless `whole_row` (it names a relation).
void Analyzer::ResolveName(const std::string& col, const Level* lv, Sources* out, bool* plain, bool whole_row) {
  Lookup l{out};
  for (const Level* level = lv; level != nullptr && !l.definite; level = level->parent) {
    for (const auto& r : level->rels) {
      if (r->kind != Rel::Kind::kJoin) LookupCol(*r, col, &l);
    }
  }
  *plain = *plain && l.plain;
  if (!l.any) {
    if (!whole_row) AddUnique(out, SourceColumn{"", col});
    *plain = false;
  }
}

void Analyzer::Func(const json& b, const Level* lv, Sources* out) {
  std::string name = LastName(List(b, "funcname"));
  Sources args;
  EvalField(b, "args", lv, &args);
  if (const char* why = OpaqueFunction(name)) Opaque(absl::StrCat(name, " ", why));
  if (EscapeFunction(name)) EscapeAll(args, name);
  if (CastFunction(name)) EscapeAll(args, "cast to " + name);
  AddAll(out, args);
  EvalField(b, "agg_order", lv, out);
  EvalField(b, "agg_filter", lv, out);
  if (const json* over = Get(b, "over")) {
    Eval(*over, lv, out);
    for (const char* key : {"name", "refname"}) {
      std::string w = Str(*over, key);
      if (const Sources* s = w.empty() ? nullptr : FindWindow(w, lv)) AddAll(out, *s);
    }
  }
}

void Analyzer::Cast(const json& b, const Level* lv, Sources* out) {
  Sources s;
  EvalField(b, "arg", lv, &s);
  if (!s.empty()) {
    const json* type = Get(b, "typeName");
    std::string name = type != nullptr ? LastName(List(*type, "names")) : "";
    bool array = type != nullptr && !List(*type, "arrayBounds").empty();
    if (array || !TextType(name)) EscapeAll(s, absl::StrCat("cast to ", name, array ? "[]" : ""));
  }
  AddAll(out, s);
}

// (c).field: the field of relation c when c names one (and column c's field otherwise).
void Analyzer::Indirection(const json& b, const Level* lv, Sources* out) {
  const json* arg = Get(b, "arg");
  const json& ind = List(b, "indirection");
  Node ref = arg != nullptr ? Unwrap(*arg) : Node{};
  if (ref.kind == "ColumnRef" && !ind.empty() && Unwrap(ind[0]).kind == "String") {
    const json& fields = List(*ref.body, "fields");
    std::string name = fields.size() == 1 ? StringVal(fields[0]) : "";
    RelList rels = name.empty() ? RelList{} : FindRel(name, lv);
    if (!rels.empty()) {
      Sources s;
      bool plain = true;
      ResolveName(name, lv, &s, &plain, /*whole_row=*/true);
      Lookup l{&s};
      for (const auto& r : rels) LookupCol(*r, StringVal(ind[0]), &l);
      Read(s);
      AddAll(out, s);
      for (size_t i = 1; i < ind.size(); ++i) Eval(ind[i], lv, out);
      return;
    }
  }
  if (arg != nullptr) Eval(*arg, lv, out);
  Eval(ind, lv, out);
}

std::string Describe(const SourceColumn& c) {
  return absl::StrCat(c.table.empty() ? "?" : c.table, ".", c.column.empty() ? "*" : c.column);
}

}  // namespace

StatementLineage ComputeLineage(const nlohmann::json& stmt) {
  StatementLineage out;
  out.reads.reserve(4);
  Analyzer a(&out);
  try {
    for (auto& c : a.Top(stmt)) {
      out.outputs.push_back(OutputLineage{std::move(c.name), std::move(c.sources), c.star, c.plain});
    }
  } catch (const std::exception& e) {
    a.Opaque(absl::StrCat("parse tree not understood: ", e.what()));
  } catch (...) {
    a.Opaque("parse tree not understood");
  }
  return out;
}

std::string DescribeLineage(const StatementLineage& l) {
  std::string s = "outputs [";
  for (size_t i = 0; i < l.outputs.size(); ++i) {
    const auto& o = l.outputs[i];
    absl::StrAppend(&s, i > 0 ? ", " : "", o.star ? "*" : o.name, o.plain ? " plain" : "", " <-");
    for (const auto& c : o.sources) absl::StrAppend(&s, " ", Describe(c));
  }
  s += "] escapes [";
  for (size_t i = 0; i < l.escapes.size(); ++i) {
    absl::StrAppend(&s, i > 0 ? ", " : "", Describe(l.escapes[i].source), " -> ", l.escapes[i].how);
  }
  s += "] reads [";
  for (size_t i = 0; i < l.reads.size(); ++i) absl::StrAppend(&s, i > 0 ? " " : "", Describe(l.reads[i]));
  s += "] tables [";
  for (size_t i = 0; i < l.tables.size(); ++i) absl::StrAppend(&s, i > 0 ? " " : "", l.tables[i]);
  s += "]";
  if (!l.opaque.empty()) absl::StrAppend(&s, " opaque: ", l.opaque);
  return s;
}

}  // namespace sluice::agent::postgres
