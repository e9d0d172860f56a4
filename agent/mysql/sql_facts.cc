// Reading a MySQL statement's tokens, and the facts guardrails match on: the tables it names,
// the functions it calls, and whether an UPDATE or DELETE has a WHERE that limits it.
#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "agent/mysql/sql_analysis_internal.h"

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

// ReadTableList, `depth` parenthesized join lists deep.
size_t ReadTableListAt(Tokens t, size_t i, std::vector<Relation>* out, int depth) {
  while (i < t.size()) {
    if (WordAt(t, i, "if") && WordAt(t, i + 1, "not") && WordAt(t, i + 2, "exists")) i += 3;
    if (WordAt(t, i, "if") && WordAt(t, i + 1, "exists")) i += 2;
    if (PunctAt(t, i, "(")) {
      size_t end = SkipParens(t, i);
      bool query = WordAt(t, i + 1, "select") || WordAt(t, i + 1, "with") ||
                   WordAt(t, i + 1, "values") || WordAt(t, i + 1, "table") ||
                   PunctAt(t, i + 1, "(");
      if (!query && depth < 8) {
        ReadTableListAt(t.subspan(0, end > 0 ? end - 1 : 0), i + 1, out, depth + 1);
      }
      i = SkipReferenceTail(t, end);
    } else {
      Relation r;
      if ((t[i].kind == TokenKind::kWord && Reserved(t[i])) || !ReadName(t, &i, &r)) return i;
      if (r.schema.empty() && r.table == "json_table" && PunctAt(t, i, "(")) {
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
  return ReadTableListAt(t, i, out, 0);
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

void CollectFunctions(Tokens t, std::vector<std::string>* out) {
  auto after_table_word = [&](size_t i) {
    auto table_word = [&](size_t k) {
      return OneOf(t[k],
                   {"into", "table", "references", "exists", "update", "join", "from", "insert",
                    "replace", "low_priority", "delayed", "high_priority", "ignore"});
    };
    if (i >= 1 && table_word(i - 1)) return true;
    return i >= 3 && PunctAt(t, i - 1, ".") && table_word(i - 3);
  };
  for (size_t i = 0; i < t.size(); ++i) {
    if (WordAt(t, i, "value") && WordAt(t, i + 1, "for") && i >= 1) {
      if (WordAt(t, i - 1, "next")) AddUnique<std::string>(out, "nextval");
      if (WordAt(t, i - 1, "previous")) AddUnique<std::string>(out, "lastval");
    }
    if (!NameAt(t, i) || !PunctAt(t, i + 1, "(")) continue;
    if (t[i].kind == TokenKind::kWord && NotAFunction(t[i])) continue;
    if (after_table_word(i)) continue;
    AddUnique(out, absl::AsciiStrToLower(t[i].text));
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
