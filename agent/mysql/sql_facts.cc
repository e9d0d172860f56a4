// Reading a MySQL statement's tokens, and the facts guardrails match on: the tables it names,
// the functions it calls, and whether an UPDATE or DELETE has a WHERE that limits it.
#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/mysql/sql_analysis_internal.h"
#include "agent/mysql/sql_builtin_functions.h"

namespace sluice::agent::mysql::sql_analysis_internal {
namespace {

bool OneOf(const Token& t, std::initializer_list<absl::string_view> words) {
  if (t.kind != TokenKind::kWord) return false;
  return std::find(words.begin(), words.end(), t.text) != words.end();
}

// Words after a table name that are not its alias.
bool NotAnAlias(const Token& t) {
  return OneOf(t, {"where",         "join",      "inner",   "left",     "right",
                   "cross",         "natural",   "outer",   "full",     "on",
                   "using",         "set",       "values",  "value",    "select",
                   "group",         "order",     "limit",   "having",   "union",
                   "except",        "intersect", "for",     "lock",     "into",
                   "partition",     "use",       "ignore",  "force",    "window",
                   "returning",     "procedure", "read",    "write",    "low_priority",
                   "local",         "to",        "with",    "from",     "default",
                   "straight_join", "character", "charset", "collate",  "engine",
                   "like",          "if",        "wait",    "nowait",   "as",
                   "quick",         "fast",      "medium",  "extended", "changed",
                   "for",           "minus",     "semi",    "anti",     "add",
                   "drop",          "modify",    "change",  "alter",    "rename"});
}

// Words that cannot be an unquoted table name: a table list ends at one.
bool Reserved(const Token& t) {
  return NotAnAlias(t) || OneOf(t, {"table", "into", "references", "straight_join", "dual",
                                    "lateral", "select", "update", "delete", "insert"});
}

// Words that are followed by `(` without being a function's name.
bool NotAFunction(const Token& t) {
  return OneOf(
      t, {"in",       "values",   "value",    "exists",     "as",      "on",         "using",
          "and",      "or",       "not",      "xor",        "table",   "key",        "index",
          "unique",   "primary",  "foreign",  "references", "check",   "constraint", "partition",
          "over",     "into",     "from",     "join",       "where",   "select",     "when",
          "then",     "else",     "any",      "some",       "all",     "row",        "set",
          "with",     "by",       "is",       "like",       "regexp",  "rlike",      "between",
          "case",     "interval", "distinct", "union",      "lateral", "returns",    "procedure",
          "function", "trigger",  "view",     "event",      "each",    "do",         "call",
          "limit",    "having",   "group",    "order",      "window",  "rows",       "range",
          "columns",  "fields",   "lines",    "keys",       "indexes"});
}

// Reads `name[.name]` at t[*i]; false when there is no name there.
bool ReadName(Tokens t, size_t* i, Relation* out) {
  if (!NameAt(t, *i)) return false;
  std::vector<std::string> parts{absl::AsciiStrToLower(t[*i].text)};
  size_t k = *i + 1;
  while (PunctAt(t, k, ".") && NameAt(t, k + 1)) {
    parts.push_back(absl::AsciiStrToLower(t[k + 1].text));
    k += 2;
  }
  *i = k;
  *out = Relation{parts.size() >= 2 ? parts[parts.size() - 2] : "", parts.back()};
  return true;
}

// Skips what may follow a table reference: an alias, index hints, PARTITION (...).
size_t SkipReferenceTail(Tokens t, size_t i) {
  if (WordAt(t, i, "partition") && PunctAt(t, i + 1, "(")) i = SkipParens(t, i + 1);
  if (WordAt(t, i, "as") && NameAt(t, i + 1)) {
    i += 2;
  } else if (NameAt(t, i) && !(t[i].kind == TokenKind::kWord && NotAnAlias(t[i]))) {
    i += 1;
  }
  auto hint = [&](size_t k) {
    return (WordAt(t, k, "use") || WordAt(t, k, "force") || WordAt(t, k, "ignore")) &&
           (WordAt(t, k + 1, "index") || WordAt(t, k + 1, "key"));
  };
  while (hint(i)) {
    i += 2;
    if (WordAt(t, i, "for")) i += WordAt(t, i + 1, "join") ? 2 : 3;  // FOR JOIN / ORDER BY
    if (PunctAt(t, i, "(")) i = SkipParens(t, i);
    if (PunctAt(t, i, ",") && hint(i + 1)) ++i;
  }
  return i;
}

std::optional<double> Number(const Token& t) {
  double v = 0;
  if (t.kind == TokenKind::kNumber && absl::SimpleAtod(t.text, &v)) return v;
  if (t.kind == TokenKind::kWord && t.text == "true") return 1;
  if (t.kind == TokenKind::kWord && t.text == "false") return 0;
  if (t.kind == TokenKind::kString) {
    // A string compared as a number: its leading numeric prefix (MySQL's conversion).
    absl::string_view s = absl::StripLeadingAsciiWhitespace(t.text);
    size_t n = 0;
    while (n < s.size() && (absl::ascii_isdigit(s[n]) || s[n] == '.' || (n == 0 && s[n] == '-'))) {
      ++n;
    }
    return absl::SimpleAtod(s.substr(0, n), &v) ? v : 0;
  }
  return std::nullopt;
}

bool Literal(const Token& t) {
  return t.kind == TokenKind::kNumber || t.kind == TokenKind::kString ||
         (t.kind == TokenKind::kWord && (t.text == "true" || t.text == "false"));
}

// `L op R` over two literals, or a name compared with itself; nullopt when it is not one.
std::optional<bool> Comparison(Tokens t, bool* sensitive) {
  if (t.size() != 3 || t[1].kind != TokenKind::kPunct) return std::nullopt;
  const std::string& op = t[1].text;
  if (NameAt(t, 0) && t[0].kind == t[2].kind && t[0].text == t[2].text && !Literal(t[0])) {
    return op == "=" || op == "<=>" || op == "<=" || op == ">=";
  }
  if (!Literal(t[0]) || !Literal(t[2])) return std::nullopt;
  *sensitive = true;
  if (t[0].kind == TokenKind::kString && t[2].kind == TokenKind::kString &&
      (op == "=" || op == "<=>" || op == "!=" || op == "<>")) {
    bool equal = absl::EqualsIgnoreCase(absl::StripTrailingAsciiWhitespace(t[0].text),
                                        absl::StripTrailingAsciiWhitespace(t[2].text));
    return (op == "=" || op == "<=>") ? equal : !equal;
  }
  std::optional<double> left = Number(t[0]), right = Number(t[2]);
  if (!left || !right) return std::nullopt;  // 0x41, X'41': not evaluated
  double a = *left, b = *right;
  if (op == "=" || op == "<=>") return a == b;
  if (op == "!=" || op == "<>") return a != b;
  if (op == "<") return a < b;
  if (op == ">") return a > b;
  if (op == "<=") return a <= b;
  if (op == ">=") return a >= b;
  return std::nullopt;
}

// Whether a condition with no AND / OR at its top level holds for every row.
bool TermTrue(Tokens t, bool* sensitive) {
  while (t.size() >= 2 && PunctAt(t, 0, "(") && SkipParens(t, 0) == t.size()) {
    t = t.subspan(1, t.size() - 2);
  }
  if (t.empty()) return false;
  if (WordAt(t, 0, "not") || PunctAt(t, 0, "!")) {
    if (t.size() == 2 && Literal(t[1])) {
      *sensitive = true;
      return Number(t[1]) == 0.0;
    }
    return false;
  }
  if (t.size() == 1 && Literal(t[0])) {
    *sensitive = true;
    std::optional<double> v = Number(t[0]);
    return v.has_value() && *v != 0;
  }
  if (t.size() == 3 && WordAt(t, 1, "like") && NameAt(t, 0) && t[2].kind == TokenKind::kString) {
    *sensitive = true;
    return !t[2].text.empty() && t[2].text.find_first_not_of('%') == std::string::npos;
  }
  return Comparison(t, sensitive).value_or(false);
}

}  // namespace

bool WordAt(Tokens t, size_t i, absl::string_view w) { return i < t.size() && t[i].IsWord(w); }
bool PunctAt(Tokens t, size_t i, absl::string_view p) { return i < t.size() && t[i].IsPunct(p); }
bool NameAt(Tokens t, size_t i) {
  return i < t.size() && (t[i].kind == TokenKind::kWord || t[i].kind == TokenKind::kQuoted);
}

size_t SkipParens(Tokens t, size_t i) {
  if (!PunctAt(t, i, "(")) return i + 1;
  if (t[i].pair == 0 || i + t[i].pair >= t.size()) return t.size();
  return i + t[i].pair + 1;
}

size_t FindTopLevel(Tokens t, absl::string_view w, size_t from) {
  for (size_t i = from; i < t.size();) {
    if (t[i].IsPunct("(")) {
      i = SkipParens(t, i);
      continue;
    }
    if (t[i].IsWord(w) || t[i].IsPunct(w)) return i;
    ++i;
  }
  return t.size();
}

std::vector<Tokens> SplitTopLevel(Tokens t, absl::string_view separator) {
  std::vector<Tokens> parts;
  size_t start = 0;
  while (start <= t.size()) {
    size_t at = FindTopLevel(t, separator, start);
    parts.push_back(t.subspan(start, at - start));
    start = at + 1;
  }
  return parts;
}

bool ParensBalanced(Tokens t) {
  int depth = 0;
  for (const Token& k : t) {
    if (k.IsPunct("(")) ++depth;
    if (k.IsPunct(")") && --depth < 0) return false;
  }
  return depth == 0;
}

std::string Upper(absl::string_view s) { return absl::AsciiStrToUpper(s); }

bool ConstantValue(Tokens t, std::string* value) {
  if (t.size() == 1 && t[0].kind != TokenKind::kPunct) {
    *value = t[0].text;
    return true;
  }
  if (t.size() == 2 && t[0].kind == TokenKind::kWord && absl::StartsWith(t[0].text, "_") &&
      t[1].kind == TokenKind::kString) {
    *value = t[1].text;  // _utf8mb4'...'
    return true;
  }
  if (t.size() == 2 && (t[0].IsPunct("-") || t[0].IsPunct("+")) &&
      t[1].kind == TokenKind::kNumber) {
    *value = t[0].text == "-" ? "-" + t[1].text : t[1].text;
    return true;
  }
  return false;
}

namespace {

// ReadTableList, `depth` parenthesized join lists deep; the index of each table function's name
// (JSON_TABLE) goes to `table_functions` when it is not null.
size_t ReadTableListAt(Tokens t, size_t i, std::vector<Relation>* out,
                       std::vector<size_t>* table_functions, int depth) {
  while (i < t.size()) {
    if (WordAt(t, i, "if") && WordAt(t, i + 1, "not") && WordAt(t, i + 2, "exists")) i += 3;
    if (WordAt(t, i, "if") && WordAt(t, i + 1, "exists")) i += 2;
    if (PunctAt(t, i, "(")) {
      size_t end = SkipParens(t, i);
      bool query = WordAt(t, i + 1, "select") || WordAt(t, i + 1, "with") ||
                   WordAt(t, i + 1, "values") || WordAt(t, i + 1, "table") ||
                   PunctAt(t, i + 1, "(");
      if (!query && depth < 8) {
        ReadTableListAt(t.subspan(0, end > 0 ? end - 1 : 0), i + 1, out, table_functions,
                        depth + 1);
      }
      i = SkipReferenceTail(t, end);
    } else {
      Relation r;
      const size_t name_at = i;
      if ((t[i].kind == TokenKind::kWord && Reserved(t[i])) || !ReadName(t, &i, &r)) return i;
      if (r.schema.empty() && r.table == "json_table" && PunctAt(t, i, "(")) {
        if (table_functions != nullptr) table_functions->push_back(name_at);
        i = SkipReferenceTail(t, SkipParens(t, i));  // a table function, not a table
      } else {
        AddUnique(out, std::move(r));
        i = SkipReferenceTail(t, i);
      }
    }
    if (!PunctAt(t, i, ",")) return i;
    ++i;
  }
  return i;
}

}  // namespace

size_t ReadTableList(Tokens t, size_t i, std::vector<Relation>* out) {
  return ReadTableListAt(t, i, out, nullptr, 0);
}

void CollectRelations(Tokens t, std::vector<Relation>* out) {
  for (size_t i = 0; i < t.size(); ++i) {
    if (!OneOf(t[i], {"from", "join", "straight_join", "into", "table", "references"})) continue;
    if (t[i].text == "into" && (WordAt(t, i + 1, "outfile") || WordAt(t, i + 1, "dumpfile"))) {
      continue;
    }
    ReadTableList(t, i + 1, out);
  }
}

void CollectDefinedNames(Tokens t, std::vector<std::string>* out) {
  // Where each parenthesis closes, found in one pass (texts can be long: no scan per name).
  std::vector<size_t> closing(t.size(), t.size());
  std::vector<size_t> open;
  for (size_t i = 0; i < t.size(); ++i) {
    if (PunctAt(t, i, "(")) open.push_back(i);
    if (PunctAt(t, i, ")") && !open.empty()) {
      closing[open.back()] = i;
      open.pop_back();
    }
  }
  absl::flat_hash_set<std::string> seen(out->begin(), out->end());
  auto add = [&](const Token& name) {
    std::string lower = absl::AsciiStrToLower(name.text);
    if (seen.insert(lower).second) out->push_back(std::move(lower));
  };
  for (size_t i = 0; i < t.size(); ++i) {
    // WITH [RECURSIVE] name [(columns)] AS (, and each `, name [(columns)] AS (` after it: a
    // name followed, past an optional column list, by AS and a parenthesis.
    if (NameAt(t, i) && !t[i].IsWord("as")) {
      size_t k = i + 1;
      if (PunctAt(t, k, "(")) k = closing[k] + 1;
      if (WordAt(t, k, "as") && PunctAt(t, k + 1, "(")) add(t[i]);
    }
    // ) [AS] alias
    if (PunctAt(t, i, ")")) {
      size_t k = WordAt(t, i + 1, "as") ? i + 2 : i + 1;
      if (NameAt(t, k)) add(t[k]);
    }
  }
}

bool AssignsUserVariables(Tokens t) {
  const bool set = WordAt(t, 0, "set");
  for (size_t i = 0; i < t.size(); ++i) {
    if (WordAt(t, i, "into") && PunctAt(t, i + 1, "@")) return true;
    if (!PunctAt(t, i, "@") || i + 1 >= t.size() || t[i + 1].kind == TokenKind::kPunct) continue;
    if (PunctAt(t, i + 2, ":=") || (set && PunctAt(t, i + 2, "="))) return true;
  }
  return false;
}

namespace {

// Where a name followed by `(` is not a call: a table with a column list (INSERT [INTO] t (a),
// REFERENCES t (a), [CREATE] TABLE t (a), LOAD DATA ... INTO TABLE t (a)), JSON_TABLE ( in a FROM
// list, and what a definition names (CREATE FUNCTION f (, CREATE VIEW v (, CREATE INDEX i ON t (,
// SELECT ... PROCEDURE ANALYSE (). Only these places: in TRIM(x FROM f()) or SELECT HIGH_PRIORITY
// f() the name is a call.
absl::flat_hash_set<size_t> NotCalls(Tokens t) {
  absl::flat_hash_set<size_t> out;
  auto name_then_paren = [&](size_t k) {
    if (WordAt(t, k, "if")) {
      while (WordAt(t, k, "if") || WordAt(t, k, "not") || WordAt(t, k, "exists")) ++k;
    }
    if (!NameAt(t, k)) return;
    while (PunctAt(t, k + 1, ".") && NameAt(t, k + 2)) k += 2;
    if (PunctAt(t, k + 1, "(")) out.insert(k);
  };
  std::vector<Relation> ignored;
  std::vector<size_t> table_functions;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].kind != TokenKind::kWord) continue;
    if (OneOf(t[i], {"from", "join", "straight_join"})) {
      ReadTableListAt(t, i + 1, &ignored, &table_functions, 0);
    } else if (OneOf(t[i], {"into", "table", "references", "function", "view"})) {
      name_then_paren(i + 1);
    } else if (OneOf(t[i], {"insert", "replace"})) {
      size_t k = i + 1;
      while (k < t.size() && OneOf(t[k], {"low_priority", "delayed", "high_priority", "ignore"})) {
        ++k;
      }
      if (!WordAt(t, k, "into")) name_then_paren(k);  // INSERT t (a); INTO is seen by itself
    } else if (t[i].text == "on" && i >= 2 && WordAt(t, i - 2, "index")) {
      name_then_paren(i + 1);  // CREATE INDEX i ON t (a)
    } else if (t[i].text == "procedure" && WordAt(t, i + 1, "analyse")) {
      out.insert(i + 1);
    }
  }
  out.insert(table_functions.begin(), table_functions.end());
  return out;
}

}  // namespace

void CollectFunctions(Tokens t, std::vector<std::string>* out, std::vector<std::string>* stored) {
  const absl::flat_hash_set<size_t> not_calls = NotCalls(t);
  for (size_t i = 0; i < t.size(); ++i) {
    if (WordAt(t, i, "value") && WordAt(t, i + 1, "for") && i >= 1) {
      if (WordAt(t, i - 1, "next")) AddUnique<std::string>(out, "nextval");
      if (WordAt(t, i - 1, "previous")) AddUnique<std::string>(out, "lastval");
    }
    if (!NameAt(t, i) || !PunctAt(t, i + 1, "(") || not_calls.contains(i)) continue;
    // A common table expression's column list: `c (a, b) AS (`.
    const size_t after = SkipParens(t, i + 1);
    if (WordAt(t, after, "as") && PunctAt(t, after + 1, "(")) continue;
    std::string name = absl::AsciiStrToLower(t[i].text);
    if (!(t[i].kind == TokenKind::kWord && NotAFunction(t[i]))) AddUnique(out, name);
    if (stored == nullptr) continue;
    if (i >= 2 && PunctAt(t, i - 1, ".") && NameAt(t, i - 2)) {  // db.f(: a stored function
      AddUnique(stored, absl::StrCat(absl::AsciiStrToLower(t[i - 2].text), ".", name));
      continue;
    }
    // Keywords in syntax rather than calls: right after a literal or `)` (MATCH (a) AGAINST (,
    // JSON_TABLE's '$' COLUMNS (, ... WITHIN GROUP (), where a call cannot start; AS OF (.
    if (i >= 1 && (t[i - 1].kind == TokenKind::kString || t[i - 1].kind == TokenKind::kNumber ||
                   PunctAt(t, i - 1, ")"))) {
      continue;
    }
    if (name == "of" && i >= 1 && (WordAt(t, i - 1, "as") || WordAt(t, i - 1, "member"))) continue;
    size_t arguments = 0;
    if (!PunctAt(t, i + 2, ")")) {
      arguments = 1;
      const size_t close = after > 0 ? after - 1 : 0;
      for (size_t k = i + 2; k < close; k = PunctAt(t, k, "(") ? SkipParens(t, k) : k + 1) {
        if (PunctAt(t, k, ",")) ++arguments;
      }
    }
    CallSpelling spelling = t[i].kind == TokenKind::kQuoted ? CallSpelling::kQuoted
                            : t[i + 1].space_before         ? CallSpelling::kSpaced
                                                            : CallSpelling::kBare;
    if (MayCallStoredFunction(name, arguments, spelling)) AddUnique(stored, std::move(name));
  }
}

bool WithoutWhere(Tokens t, size_t from, bool* sensitive) {
  size_t where = FindTopLevel(t, "where", from);
  if (where == t.size()) return true;
  Tokens cond = t.subspan(where + 1);
  for (absl::string_view end : {"order", "limit", "returning"}) {
    cond = cond.subspan(0, FindTopLevel(cond, end));
  }
  // OR (also `||`, which is OR unless PIPES_AS_CONCAT: then a concatenation is taken for an OR,
  // which only errs towards the guard) of ANDs: true when one disjunct has only true terms.
  for (Tokens disjunct : SplitTopLevel(cond, "or")) {
    for (Tokens d : SplitTopLevel(disjunct, "||")) {
      bool all = true;
      for (Tokens c : SplitTopLevel(d, "and")) {
        for (Tokens term : SplitTopLevel(c, "&&")) all = all && TermTrue(term, sensitive);
      }
      if (all) return true;
    }
  }
  return false;
}

}  // namespace sluice::agent::mysql::sql_analysis_internal
