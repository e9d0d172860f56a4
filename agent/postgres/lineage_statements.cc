// The column-lineage Analyzer, statement level: a statement at the top, queries (SELECT, set
// operations, INSERT/UPDATE/DELETE/MERGE), WITH, FROM items and target lists. Expressions are
// in lineage.cc; what both use is in lineage_internal.h.
#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/postgres/lineage_internal.h"

namespace sluice::agent::postgres::lineage_internal {

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
    EscapeCols(cols, Str(b, "objtype") == "OBJECT_MATVIEW"
                         ? absl::StrCat("CREATE MATERIALIZED VIEW ", name)
                         : absl::StrCat("CREATE TABLE ", name, " AS"));
    return {};
  }
  if (k == "ViewStmt") {
    const json* view = Get(b, "view");
    std::string name = view != nullptr ? Str(*view, "relname") : "";
    if (const json* q = Get(b, "query"))
      EscapeCols(Stmt(*q, nullptr), absl::StrCat("CREATE VIEW ", name));
    return {};
  }
  if (k == "DeclareCursorStmt" || k == "PrepareStmt") {
    // The rows come later (FETCH, EXECUTE), where plain columns are still named by the wire.
    std::string how = k == "DeclareCursorStmt"
                          ? absl::StrCat("DECLARE CURSOR ", Str(b, "portalname"))
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
  const json *with = nullptr, *values = nullptr, *windows = nullptr, *targets = nullptr,
             *sort = nullptr;
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
      auto it = std::find_if(cols.begin(), cols.end(),
                             [&](const Col& c) { return !name.empty() && c.name == name; });
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
std::vector<Col> Analyzer::SetOp(const std::string& op, const json* larg, const json* rarg,
                                 const json* sort, const std::vector<const json*>& others,
                                 const Level* base) {
  if (op != "SETOP_UNION" && op != "SETOP_INTERSECT" && op != "SETOP_EXCEPT")
    Opaque("set operation " + op);
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
    bool extra =
        Get(*cte.body, "search_clause") != nullptr || Get(*cte.body, "cycle_clause") != nullptr;
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
    for (size_t i = 0; i < colnames.size() && i < cols.size(); ++i)
      cols[i].name = StringVal(colnames[i]);
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
    lv->rels.push_back(Derived(alias_name, std::move(cols),
                               alias != nullptr ? List(*alias, "colnames") : EmptyArray()));
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
    for (std::string name :
         {alias_name, using_alias != nullptr ? Str(*using_alias, "aliasname") : ""}) {
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
  if (StatsRelation(relname))
    Opaque(absl::StrCat(relname, " holds values of table columns (planner statistics)"));
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

}  // namespace sluice::agent::postgres::lineage_internal
