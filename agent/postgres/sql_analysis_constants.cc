// The statement analysis' evaluation of constant expressions in the parse tree: the WHERE that
// holds for every row (AlwaysTrue), a setting's value (ConstantText), and BoolText. Internal to
// the statement analysis (see sql_analysis_internal.h).
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/postgres/sql_analysis.h"
#include "agent/postgres/sql_analysis_internal.h"

namespace sluice::agent::postgres {

namespace sql_analysis_internal {

thread_local absl::string_view t_text;

}  // namespace sql_analysis_internal

namespace {

using nlohmann::json;
using sql_analysis_internal::Contains;
using sql_analysis_internal::t_text;

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
  if (n == 0 || (n < rest.size() && (absl::ascii_isalnum(rest[n]) || rest[n] == '.')))
    return std::nullopt;
  double v = 0;
  for (size_t i = 0; i < n; ++i) v = v * 10 + (rest[i] - '0');
  return negative ? -v : v;
}

std::optional<Constant> ConstantOf(const json& node, bool* sensitive) {
  if (!node.is_object()) return std::nullopt;
  if (auto cast = node.find("TypeCast"); cast != node.end() && cast->is_object()) {
    std::string type;
    auto names = cast->value("/typeName/names"_json_pointer, json::array());
    if (names.is_array() && !names.empty())
      type = names.back().value("/String/sval"_json_pointer, std::string());
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
  if (l == "t" || l == "tr" || l == "tru" || l == "true" || l == "y" || l == "ye" || l == "yes" ||
      l == "on" || l == "1") {
    return true;
  }
  if (l == "f" || l == "fa" || l == "fal" || l == "fals" || l == "false" || l == "n" || l == "no" ||
      l == "of" || l == "off" || l == "0") {
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

std::optional<bool> Compare(const std::string& op, const Constant& given_l,
                            const Constant& given_r) {
  Constant l = Coerced(given_l, given_r);
  Constant r = Coerced(given_r, given_l);
  if (l.kind == Constant::kNull || r.kind == Constant::kNull)
    return std::nullopt;  // NULL: never true
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
  static const auto* kinds =
      new absl::flat_hash_set<absl::string_view>{"ColumnRef", "ParamRef", "SubLink", "FuncCall"};
  return Contains(node, *kinds);
}

// `*sensitive` is set only where a literal's value decided the answer (a column compared with a
// constant decides nothing: `aid = 1` is cached by shape).
std::optional<bool> Truth(const json& node, bool* sensitive, int depth = 0) {
  if (!node.is_object() || depth > 64) return std::nullopt;
  if (auto v = ConstantOf(node, sensitive)) {
    if (v->kind == Constant::kBool) return v->b;
    if (v->kind == Constant::kString) return BoolText(v->str);  // WHERE 't'
    if (v->kind == Constant::kUnreadable) return true;          // fail closed, as Compare does
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

}  // namespace

namespace sql_analysis_internal {

bool AlwaysTrue(const json& body, const char* key, bool* sensitive) {
  auto where = body.find(key);
  if (where == body.end()) return true;
  auto v = Truth(*where, sensitive);
  return v.has_value() && *v;
}

std::optional<std::string> ConstantText(const json& node, bool* sensitive) {
  auto v = ConstantOf(node, sensitive);
  if (!v) return std::nullopt;
  switch (v->kind) {
    case Constant::kString:
      return v->str;
    case Constant::kBool:
      return std::string(v->b ? "on" : "off");
    case Constant::kNumber: {
      if (auto c = node.find("A_Const"); c != node.end()) {
        if (auto f = c->find("fval"); f != c->end()) return f->value("fval", "");
      }
      return std::to_string(static_cast<int64_t>(v->number));
    }
    case Constant::kNull:
    case Constant::kUnreadable:
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace sql_analysis_internal

}  // namespace sluice::agent::postgres
