// Internal to the column-lineage module: nothing but agent/postgres/lineage*.cc includes this
// header; everyone else uses agent/postgres/lineage.h. It holds what the module's files share:
//   - the parse-tree access helpers (inline, here);
//   - the function and relation lists, and the relations in scope with the lookups in them
//     (lineage_internal.cc);
//   - the Analyzer, whose statement-level methods (Top, Stmt, Select, Modify, FROM, WITH, target
//     lists) are in lineage_statements.cc and whose expression-level methods (Eval, column
//     references, functions, casts) are in lineage.cc, with ComputeLineage and DescribeLineage.
#pragma once

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "agent/postgres/lineage.h"

namespace sluice::agent::postgres::lineage_internal {

using nlohmann::json;
using Sources = std::vector<SourceColumn>;

// Nesting deeper than this (expressions, subqueries) is not followed: the statement is opaque.
inline constexpr int kMaxDepth = 500;

// ---- Safe access to the parse tree: a missing or mistyped field reads as empty. ----
// Defined here, inline: every step of the analysis reads fields through them.

inline const json& EmptyArray() {
  static const json* empty = new json(json::array());
  return *empty;
}

// Field `key` of object `o`, or nullptr. A linear scan: parse-tree objects have a handful of
// fields, and comparing lengths first beats the map's string comparisons.
inline const json* Get(const json& o, absl::string_view key) {
  if (!o.is_object()) return nullptr;
  for (const auto& [k, v] : o.get_ref<const json::object_t&>()) {
    if (k.size() == key.size() && absl::string_view(k) == key) return &v;
  }
  return nullptr;
}

inline const json& List(const json& o, absl::string_view key) {
  const json* v = Get(o, key);
  return v != nullptr && v->is_array() ? *v : EmptyArray();
}

inline std::string Str(const json& o, absl::string_view key) {
  const json* v = Get(o, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

inline bool Bool(const json& o, absl::string_view key) {
  const json* v = Get(o, key);
  return v != nullptr && v->is_boolean() && v->get<bool>();
}

// A node {"Kind": body}: its kind ("" when `n` is not one) and body.
struct Node {
  absl::string_view kind;
  const json* body = nullptr;
};

inline Node Unwrap(const json& n) {
  if (!n.is_object()) return {};
  const auto& fields = n.get_ref<const json::object_t&>();
  if (fields.size() != 1) return {};
  auto it = fields.begin();
  return {it->first, &it->second};
}

// {"String": {"sval": s}} -> s ("" otherwise).
inline std::string StringVal(const json& n) {
  Node x = Unwrap(n);
  return x.kind == "String" ? Str(*x.body, "sval") : std::string();
}

// The last String of a name list (funcname, typeName.names), lower-case.
inline std::string LastName(const json& names) {
  if (!names.is_array() || names.empty()) return "";
  return absl::AsciiStrToLower(StringVal(names.back()));
}

template <typename T>
void AddUnique(std::vector<T>* v, const T& item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(item);
}

inline void AddAll(Sources* s, const Sources& more) {
  for (const auto& c : more) AddUnique(s, c);
}

// ---- Function and relation lists (lineage_internal.cc) ----

// Functions whose arguments leave the statement other than as its result.
bool EscapeFunction(absl::string_view f);

// Functions that read table data the analysis cannot follow, and why (nullptr for any other).
const char* OpaqueFunction(absl::string_view f);

// Function-style casts and parsers: an error can quote their argument.
bool CastFunction(absl::string_view f);

// Casting to these never fails on a text value (so no error can quote it).
bool TextType(absl::string_view t);

// Catalog relations that hold values of table columns (planner statistics).
bool StatsRelation(absl::string_view r);

// INSERT, UPDATE, DELETE, MERGE.
bool ModifyKind(absl::string_view k);

// ---- Relations in scope ----

struct Rel;
using RelPtr = std::shared_ptr<const Rel>;
using RelList = absl::InlinedVector<RelPtr, 2>;

// One output column of a derived relation (subquery, CTE, set operation).
struct Col {
  std::string name;  // "" when not known: matches any name
  Sources sources;   // what its value is computed from (for a star: every column it stands for)
  bool plain = false;
  bool star = false;  // stands for an unknown number of columns
  RelList star_rels;  // a star's relations (names are looked up in them); may be empty
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

// Adds to `out` what every column of `r` is computed from (of a table: its whole row, column "").
void WholeRow(const Rel& r, Sources* out);

// Whether every column of `r` is a plain table column (a function's never is).
bool AllPlain(const Rel& r);

// What LookupCol found, over the relations it was given.
struct Lookup {
  Sources* out;
  bool plain = true;      // every contribution was a plain column
  bool definite = false;  // a relation certainly has the column (a named subquery output)
  bool any = false;       // some relation may have it
};

// Column `col` of relation `r`.
void LookupCol(const Rel& r, const std::string& col, Lookup* l);

// The relations named `name` in the innermost level that has one.
RelList FindRel(const std::string& name, const Level* lv);

// The CTE named `name` visible from `lv` (nullptr when none is).
RelPtr FindCte(const std::string& name, const Level* lv);

// The sources of window `name` (WINDOW name AS ...) visible from `lv` (nullptr when none is).
const Sources* FindWindow(const std::string& name, const Level* lv);

// True when a RangeVar without schema named `name` occurs under `node` (a CTE referring to itself).
bool MentionsRelation(const json& node, const std::string& name);

// The label PostgreSQL gives a result column computed by `val` (FigureColname), "" when not known
// here (such a column then matches any name a query looks up).
std::string FigureColname(const json& val);

// ---- The analysis ----

// Statement-level methods: lineage_statements.cc; expression-level ones (from StarTarget on):
// lineage.cc.
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
  void EscapeCols(const std::vector<Col>& cols, const std::string& how,
                  bool only_computed = false) {
    for (const auto& c : cols) {
      if (!only_computed || !c.plain) EscapeAll(c.sources, how);
    }
  }

  std::vector<Col> Stmt(const json& wrapped, const Level* parent);
  std::vector<Col> Select(const json& body, const Level* parent);
  ABSL_ATTRIBUTE_NOINLINE std::vector<Col> SetOp(const std::string& op, const json* larg,
                                                 const json* rarg, const json* sort,
                                                 const std::vector<const json*>& others,
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
  ABSL_ATTRIBUTE_NOINLINE void ColumnRef(const json& ref, const Level* lv, Sources* out,
                                         bool* plain);
  void ResolveName(const std::string& col, const Level* lv, Sources* out, bool* plain,
                   bool whole_row = false);
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

}  // namespace sluice::agent::postgres::lineage_internal
