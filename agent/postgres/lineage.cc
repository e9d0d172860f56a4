// Column lineage (lineage.h): the Analyzer's expression-level methods, and the entry points. The
// statement level is in lineage_statements.cc; what both use is in lineage_internal.h.
#include "agent/postgres/lineage.h"

#include <algorithm>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/postgres/lineage_internal.h"

namespace sluice::agent::postgres {
namespace lineage_internal {

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
  if (k == "A_Const" || k == "String" || k == "ParamRef" || k == "Integer" || k == "Float" ||
      k == "Boolean") {
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
  if (k == "RangeVar" || k == "RangeSubselect" || k == "JoinExpr" || k == "RangeFunction")
    return Misplaced(k);
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

void Analyzer::Misplaced(absl::string_view kind) {
  Opaque(absl::StrCat(kind, " inside an expression"));
}

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
void Analyzer::ResolveName(const std::string& col, const Level* lv, Sources* out, bool* plain,
                           bool whole_row) {
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

}  // namespace lineage_internal

namespace {

std::string Describe(const SourceColumn& c) {
  return absl::StrCat(c.table.empty() ? "?" : c.table, ".", c.column.empty() ? "*" : c.column);
}

}  // namespace

using lineage_internal::Analyzer;

StatementLineage ComputeLineage(const nlohmann::json& stmt) {
  StatementLineage out;
  out.reads.reserve(4);
  Analyzer a(&out);
  try {
    for (auto& c : a.Top(stmt)) {
      out.outputs.push_back(
          OutputLineage{std::move(c.name), std::move(c.sources), c.star, c.plain});
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
  for (size_t i = 0; i < l.reads.size(); ++i)
    absl::StrAppend(&s, i > 0 ? " " : "", Describe(l.reads[i]));
  s += "] tables [";
  for (size_t i = 0; i < l.tables.size(); ++i) absl::StrAppend(&s, i > 0 ? " " : "", l.tables[i]);
  s += "]";
  if (!l.opaque.empty()) absl::StrAppend(&s, " opaque: ", l.opaque);
  return s;
}

}  // namespace sluice::agent::postgres
