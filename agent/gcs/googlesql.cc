#include "agent/gcs/googlesql.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sluice::agent::gcs {
namespace {

using session::StatementClass;

enum class Tok { kWord, kQuoted, kString, kNumber, kParam, kPunct };

struct Token {
  Tok kind;
  std::string text;  // kWord: lower-case; kQuoted: the identifier's content; kPunct: the char
  size_t begin = 0;
  size_t end = 0;
};

bool WordStart(char c) { return absl::ascii_isalpha(c) || c == '_'; }
bool WordChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

// The text's tokens, split into statements at `;`; false (with `*error`) when it cannot be lexed.
bool Lex(absl::string_view s, std::vector<std::vector<Token>>* statements, std::string* error) {
  statements->emplace_back();
  size_t i = 0;
  const size_t n = s.size();
  auto fail = [&](absl::string_view what) {
    *error = absl::StrCat(what, " at byte ", i);
    return false;
  };
  while (i < n) {
    const char c = s[i];
    if (absl::ascii_isspace(c)) {
      ++i;
      continue;
    }
    if (c == '#' || (c == '-' && i + 1 < n && s[i + 1] == '-')) {
      while (i < n && s[i] != '\n') ++i;
      continue;
    }
    if (c == '/' && i + 1 < n && s[i + 1] == '*') {
      const size_t close = s.find("*/", i + 2);
      if (close == absl::string_view::npos) return fail("an unterminated comment");
      i = close + 2;
      continue;
    }
    const size_t begin = i;
    // String prefixes: r, b, rb, br (any case) right before a quote.
    size_t prefix = 0;
    while (
        prefix < 2 && i + prefix < n &&
        (absl::ascii_tolower(s[i + prefix]) == 'r' || absl::ascii_tolower(s[i + prefix]) == 'b')) {
      ++prefix;
    }
    if (i + prefix < n && (s[i + prefix] == '\'' || s[i + prefix] == '"')) {
      i += prefix;
      const char q = s[i];
      const bool triple = i + 2 < n && s[i + 1] == q && s[i + 2] == q;
      const size_t open = triple ? 3 : 1;
      i += open;
      bool closed = false;
      while (i < n) {
        if (s[i] == '\\') {  // an escape; in a raw string the quote after it still does not end it
          i += 2;
          continue;
        }
        if (!triple && s[i] == '\n') return fail("a line break in a quoted string");
        if (s[i] == q && (!triple || (i + 2 < n && s[i + 1] == q && s[i + 2] == q))) {
          i += open;
          closed = true;
          break;
        }
        ++i;
      }
      if (!closed) return fail("an unterminated string");
      statements->back().push_back({Tok::kString, "", begin, i});
      continue;
    }
    if (c == '`') {
      std::string name;
      ++i;
      bool closed = false;
      while (i < n) {
        if (s[i] == '\\' && i + 1 < n) {
          name.push_back(s[i + 1]);
          i += 2;
          continue;
        }
        if (s[i] == '`') {
          ++i;
          closed = true;
          break;
        }
        name.push_back(s[i++]);
      }
      if (!closed) return fail("an unterminated quoted identifier");
      if (name.empty()) return fail("an empty quoted identifier");
      statements->back().push_back({Tok::kQuoted, absl::AsciiStrToLower(name), begin, i});
      continue;
    }
    if (WordStart(c)) {
      while (i < n && WordChar(s[i])) ++i;
      statements->back().push_back(
          {Tok::kWord, absl::AsciiStrToLower(s.substr(begin, i - begin)), begin, i});
      continue;
    }
    if (absl::ascii_isdigit(c) || (c == '.' && i + 1 < n && absl::ascii_isdigit(s[i + 1]))) {
      while (i < n && (absl::ascii_isalnum(s[i]) || s[i] == '.' ||
                       ((s[i] == '+' || s[i] == '-') && absl::ascii_tolower(s[i - 1]) == 'e'))) {
        ++i;
      }
      statements->back().push_back(
          {Tok::kNumber, std::string(s.substr(begin, i - begin)), begin, i});
      continue;
    }
    if (c == '@' || c == '?') {
      ++i;
      while (i < n && (WordChar(s[i]) || s[i] == '@')) ++i;
      statements->back().push_back(
          {Tok::kParam, std::string(s.substr(begin, i - begin)), begin, i});
      continue;
    }
    if (c == ';') {
      ++i;
      statements->emplace_back();
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x80) {
      return fail("a character outside the language");
    }
    ++i;
    statements->back().push_back({Tok::kPunct, std::string(1, c), begin, i});
  }
  return true;
}

bool IsWord(const std::vector<Token>& t, size_t i, absl::string_view w) {
  return i < t.size() && t[i].kind == Tok::kWord && t[i].text == w;
}
bool IsPunct(const std::vector<Token>& t, size_t i, char c) {
  return i < t.size() && t[i].kind == Tok::kPunct && t[i].text.size() == 1 && t[i].text[0] == c;
}

// Words that can follow a table in FROM / JOIN and are not its alias.
bool EndsTableReference(absl::string_view w) {
  static const char* const kWords[] = {
      "where",     "join",    "inner",   "left",    "right",   "full",        "cross",
      "on",        "using",   "group",   "order",   "limit",   "union",       "except",
      "intersect", "having",  "window",  "qualify", "for",     "tablesample", "pivot",
      "unpivot",   "set",     "when",    "as",      "natural", "select",      "values",
      "partition", "cluster", "options", "with",    "default", "not",         "if"};
  for (const char* k : kWords) {
    if (w == k) return true;
  }
  return false;
}

class Classifier {
 public:
  Classifier(const std::vector<Token>& t, absl::string_view default_dataset,
             std::vector<std::string>* projects)
      : t_(t), default_dataset_(default_dataset), projects_(projects) {}

  GoogleSqlStatement Run() {
    Facts();
    Decide();
    return std::move(out_);
  }

 private:
  // A table path at `*i` (words, quoted parts, `-` inside a project name, `*` at the end of a
  // wildcard table), advanced past it; false when there is none there.
  bool Path(size_t* i, session::Relation* rel) {
    std::vector<std::string> parts;
    std::string current;
    size_t j = *i;
    size_t last_end = 0;
    bool any = false;
    while (j < t_.size()) {
      const Token& tok = t_[j];
      const bool adjacent = !any || tok.begin == last_end;
      if (!adjacent) break;
      if (tok.kind == Tok::kWord || tok.kind == Tok::kNumber) {
        current += tok.text;
      } else if (tok.kind == Tok::kQuoted) {
        std::vector<std::string> pieces = absl::StrSplit(tok.text, '.');
        for (size_t k = 0; k + 1 < pieces.size(); ++k) {
          current += pieces[k];
          parts.push_back(std::move(current));
          current.clear();
        }
        current += pieces.back();
      } else if (tok.kind == Tok::kPunct && tok.text == "." && any) {
        parts.push_back(std::move(current));
        current.clear();
      } else if (tok.kind == Tok::kPunct && (tok.text == "-" || tok.text == "*") && any) {
        current += tok.text;
      } else {
        break;
      }
      any = true;
      last_end = tok.end;
      ++j;
    }
    if (!any || current.empty()) return false;
    parts.push_back(std::move(current));
    rel->table = parts.back();
    if (parts.size() >= 2) rel->schema = parts[parts.size() - 2];
    if (parts.size() == 1) rel->schema = std::string(default_dataset_);
    if (parts.size() >= 3) {
      const std::string& project = parts[parts.size() - 3];
      if (std::find(projects_->begin(), projects_->end(), project) == projects_->end())
        projects_->push_back(project);
    }
    *i = j;
    return true;
  }

  // `front`: the statement's target, named first. Returns the table's name ("" when none).
  std::string AddRelation(size_t* i, bool front = false) {
    session::Relation rel;
    if (!Path(i, &rel)) return "";
    std::string table = rel.table;
    auto at = std::find(out_.relations.begin(), out_.relations.end(), rel);
    if (at != out_.relations.end()) {
      if (!front) return table;
      out_.relations.erase(at);
    }
    out_.relations.insert(front ? out_.relations.begin() : out_.relations.end(), std::move(rel));
    return table;
  }

  // Every table named in a place that names tables, and every function called.
  void Facts() {
    for (size_t i = 0; i < t_.size(); ++i) {
      const Token& tok = t_[i];
      if (tok.kind != Tok::kWord) continue;
      if (IsPunct(t_, i + 1, '(') && t_[i + 1].begin == tok.end) {
        // A call: its name, with a dotted prefix when there is one (ML.PREDICT, ds.fn).
        std::string name = tok.text;
        if (i >= 2 && IsPunct(t_, i - 1, '.') && t_[i - 2].kind != Tok::kPunct)
          name = absl::StrCat(t_[i - 2].text, ".", name);
        out_.functions.push_back(std::move(name));
        continue;
      }
      const bool names_table = tok.text == "from" || tok.text == "join" || tok.text == "into" ||
                               tok.text == "using" || tok.text == "overwrite";
      if (!names_table) continue;
      size_t j = i + 1;
      if (tok.text == "using" && IsPunct(t_, j, '(')) continue;  // JOIN ... USING (columns)
      for (;;) {
        if (IsPunct(t_, j, '(') || IsWord(t_, j, "unnest")) break;
        const size_t before = j;
        const std::string table = AddRelation(&j);
        if (j == before) break;
        out_.aliases.emplace_back(table, table);
        // An alias, then a comma for the next table of a FROM list.
        if (IsWord(t_, j, "as")) ++j;
        if (j < t_.size() && (t_[j].kind == Tok::kWord || t_[j].kind == Tok::kQuoted) &&
            !(t_[j].kind == Tok::kWord && EndsTableReference(t_[j].text))) {
          out_.aliases.emplace_back(t_[j].text, table);
          ++j;
        }
        if (tok.text == "from" && IsPunct(t_, j, ',') && !IsPunct(t_, j + 1, '(') &&
            !IsWord(t_, j + 1, "unnest")) {
          ++j;
          continue;
        }
        break;
      }
    }
  }

  // The position after leading words `words` (each optional one in `optional`), or npos.
  size_t After(size_t i, std::initializer_list<absl::string_view> optional) {
    bool moved = true;
    while (moved) {
      moved = false;
      for (absl::string_view w : optional) {
        if (IsWord(t_, i, w)) {
          ++i;
          moved = true;
        }
      }
    }
    return i;
  }

  // The output columns of a plain SELECT (no set operation, no AS STRUCT / AS VALUE): each a
  // column, a star, or an expression with the names it uses.
  void SelectList() {
    size_t i = 1;
    if (IsWord(t_, i, "distinct") || IsWord(t_, i, "all")) ++i;
    if (IsWord(t_, i, "as")) return;  // AS STRUCT, AS VALUE: one column of everything
    int depth = 0;
    for (size_t k = i; k < t_.size(); ++k) {
      if (IsPunct(t_, k, '(')) ++depth;
      if (IsPunct(t_, k, ')')) --depth;
      if (depth == 0 &&
          (IsWord(t_, k, "union") || IsWord(t_, k, "except") || IsWord(t_, k, "intersect"))) {
        // EXCEPT right after a star is a column list, not a set operation.
        if (IsWord(t_, k, "except") && k > 0 && IsPunct(t_, k - 1, '*')) continue;
        return;
      }
    }
    std::vector<SelectItem> items;
    size_t begin = i;
    depth = 0;
    for (size_t k = i; k <= t_.size(); ++k) {
      const bool end = k == t_.size() || (depth == 0 && IsWord(t_, k, "from"));
      if (k < t_.size() && IsPunct(t_, k, '(')) ++depth;
      if (k < t_.size() && IsPunct(t_, k, ')')) --depth;
      if (!end && !(depth == 0 && IsPunct(t_, k, ','))) continue;
      if (k == begin) return;  // an empty item: not a select list this reads
      items.push_back(Item(begin, k));
      begin = k + 1;
      if (end) break;
    }
    out_.simple_select = true;
    out_.select = std::move(items);
  }

  // One select item, tokens [b, e).
  SelectItem Item(size_t b, size_t e) {
    SelectItem item;
    // A star with a modifier: `* EXCEPT (a, b)` only leaves columns out (they keep their names);
    // `* REPLACE (expr AS c)` puts anything under a column's name.
    for (size_t k = b; k + 1 < e; ++k) {
      if (!IsPunct(t_, k, '*') || !(k == b || IsPunct(t_, k - 1, '.'))) continue;
      if (IsWord(t_, k + 1, "except")) {
        item.kind = SelectItem::kStar;
        return item;
      }
      if (IsWord(t_, k + 1, "replace")) {
        item.kind = SelectItem::kExpression;
        item.star_replace = true;
        return item;
      }
    }
    // A trailing alias: `expr AS name` or `expr name`.
    std::string alias;
    if (e - b >= 2 && (t_[e - 1].kind == Tok::kWord || t_[e - 1].kind == Tok::kQuoted) &&
        (IsWord(t_, e - 2, "as") || t_[e - 2].kind == Tok::kWord ||
         t_[e - 2].kind == Tok::kQuoted || IsPunct(t_, e - 2, ')'))) {
      alias = t_[e - 1].text;
      e -= IsWord(t_, e - 2, "as") ? 2 : 1;
    }
    // A path of names: a column (`c`, `t.c`), or a whole row (`t`).
    bool path = true;
    for (size_t k = b; k < e; ++k) {
      const bool name = t_[k].kind == Tok::kWord || t_[k].kind == Tok::kQuoted;
      if ((k - b) % 2 == 0 ? !name : !IsPunct(t_, k, '.')) path = false;
    }
    if (e > b && IsPunct(t_, e - 1, '*') && (e - b == 1 || IsPunct(t_, e - 2, '.'))) {
      item.kind = SelectItem::kStar;
      return item;
    }
    if (path && (e - b) % 2 == 1) {
      std::string last = t_[e - 1].text;
      const size_t dot = last.rfind('.');  // a quoted path holds its dots
      if (dot != std::string::npos) last = last.substr(dot + 1);
      item.kind = SelectItem::kColumn;
      item.column = last;
      item.name = alias.empty() ? last : alias;
      item.identifiers.push_back(last);
      return item;
    }
    item.kind = SelectItem::kExpression;
    item.name = alias;
    for (size_t k = b; k < e; ++k) {
      if (t_[k].kind != Tok::kWord && t_[k].kind != Tok::kQuoted) continue;
      if (IsPunct(t_, k + 1, '(')) continue;  // a function's name
      std::string w = t_[k].text;
      const size_t dot = w.rfind('.');
      if (dot != std::string::npos) w = w.substr(dot + 1);
      if (std::find(item.identifiers.begin(), item.identifiers.end(), w) == item.identifiers.end())
        item.identifiers.push_back(std::move(w));
    }
    return item;
  }

  void Unknown(std::string why) {
    out_.cls = StatementClass::kUnknown;
    out_.parse_error = std::move(why);
  }

  // Whether the top-level WHERE is missing or constant true.
  bool WithoutWhere() {
    int depth = 0;
    for (size_t i = 0; i < t_.size(); ++i) {
      if (IsPunct(t_, i, '(')) ++depth;
      if (IsPunct(t_, i, ')')) --depth;
      if (depth != 0 || !IsWord(t_, i, "where")) continue;
      const size_t rest = t_.size() - i - 1;
      if (rest == 1 && IsWord(t_, i + 1, "true")) return true;
      if (rest == 3 && IsPunct(t_, i + 2, '=') && t_[i + 1].kind == t_[i + 3].kind &&
          t_[i + 1].kind != Tok::kPunct && t_[i + 1].text == t_[i + 3].text &&
          t_[i + 1].kind != Tok::kString) {
        return true;
      }
      return false;
    }
    return true;
  }

  void Decide() {
    if (t_.empty()) {
      out_.cls = StatementClass::kEmpty;
      return;
    }
    for (const std::string& f : out_.functions) {
      if (f == "external_query") {
        out_.kind = "EXTERNAL_QUERY";
        return Unknown("EXTERNAL_QUERY runs SQL of its own on another database");
      }
    }
    const Token& first = t_[0];
    if (IsPunct(t_, 0, '(')) {
      out_.kind = "SELECT";
      out_.cls = StatementClass::kRead;
      return;
    }
    if (first.kind != Tok::kWord) return Unknown("the statement does not begin with a keyword");
    const std::string& w = first.text;
    if (w == "select") {
      out_.kind = "SELECT";
      out_.cls = StatementClass::kRead;
      SelectList();
      return;
    }
    if (w == "with") {
      int depth = 0;
      for (size_t i = 1; i < t_.size(); ++i) {
        if (IsPunct(t_, i, '(')) ++depth;
        if (IsPunct(t_, i, ')')) --depth;
        if (depth == 0 && (IsWord(t_, i, "insert") || IsWord(t_, i, "update") ||
                           IsWord(t_, i, "delete") || IsWord(t_, i, "merge"))) {
          out_.kind = "WITH";
          return Unknown("a WITH whose statement is not a query");
        }
      }
      out_.kind = "SELECT";
      out_.cls = StatementClass::kRead;
      return;
    }
    if (w == "insert" || w == "merge" || w == "update" || w == "delete") {
      out_.kind = absl::AsciiStrToUpper(w);
      out_.cls = StatementClass::kWrite;
      size_t i = After(1, {"into", "from"});
      AddRelation(&i, true);
      if (w == "delete" && WithoutWhere()) out_.guarded.push_back("delete_without_where");
      if (w == "update" && WithoutWhere()) out_.guarded.push_back("update_without_where");
      return;
    }
    if (w == "truncate" && IsWord(t_, 1, "table")) {
      out_.kind = "TRUNCATE TABLE";
      out_.cls = StatementClass::kDdl;
      out_.guarded.push_back("truncate");
      size_t i = 2;
      AddRelation(&i, true);
      return;
    }
    if (w == "load" && IsWord(t_, 1, "data")) {
      out_.kind = "LOAD DATA";
      out_.cls = StatementClass::kWrite;
      out_.guarded.push_back("load_data");
      return;
    }
    if (w == "export" && IsWord(t_, 1, "data")) {
      out_.kind = "EXPORT DATA";
      out_.cls = StatementClass::kWrite;
      out_.guarded.push_back("export_data");
      return;
    }
    if (w == "call") {
      out_.kind = "CALL";
      out_.cls = StatementClass::kWrite;
      return;
    }
    if (w == "grant" || w == "revoke") {
      out_.kind = absl::AsciiStrToUpper(w);
      out_.cls = StatementClass::kDcl;
      return;
    }
    if ((w == "begin" || w == "commit" || w == "rollback") &&
        (t_.size() == 1 || (t_.size() == 2 && IsWord(t_, 1, "transaction")))) {
      out_.kind = absl::AsciiStrToUpper(w);
      out_.cls = StatementClass::kOther;
      return;
    }
    if (w == "create" || w == "alter" || w == "drop" || w == "undrop") {
      size_t i = After(1, {"or",           "replace",  "temp",        "temporary",  "external",
                           "materialized", "snapshot", "search",      "vector",     "row",
                           "access",       "all",      "table",       "function",   "procedure",
                           "view",         "schema",   "model",       "index",      "policy",
                           "policies",     "capacity", "reservation", "assignment", "aggregate"});
      std::string object;
      for (size_t k = 1; k < i; ++k)
        absl::StrAppend(&object, object.empty() ? "" : " ", t_[k].text);
      out_.kind = absl::AsciiStrToUpper(absl::StrCat(w, " ", object));
      if (object.find("row access") != std::string::npos) {
        out_.cls = StatementClass::kDcl;
        return;
      }
      if (object.empty()) return Unknown(absl::StrCat("an unknown ", absl::AsciiStrToUpper(w)));
      out_.cls = StatementClass::kDdl;
      i = After(i, {"if", "not", "exists"});
      const bool schema = object == "schema";
      if (schema) {
        session::Relation rel;
        size_t j = i;
        if (Path(&j, &rel)) {
          // A schema on its own is {dataset, ""}: `project.dataset` or `dataset`.
          session::Relation ds{rel.table, ""};
          out_.relations.insert(out_.relations.begin(), ds);
        }
      } else {
        size_t j = i;
        session::Relation rel;
        if (Path(&j, &rel) &&
            std::find(out_.relations.begin(), out_.relations.end(), rel) == out_.relations.end())
          out_.relations.insert(out_.relations.begin(), rel);
      }
      if (w == "drop" && schema) out_.guarded.push_back("drop_database");
      if (w == "drop" &&
          (object.find("table") != std::string::npos || object.find("view") != std::string::npos)) {
        out_.guarded.push_back("drop_table");
      }
      return;
    }
    out_.kind = absl::AsciiStrToUpper(w);
    static const char* const kScripting[] = {"declare", "set",    "if",       "loop",    "while",
                                             "repeat",  "for",    "break",    "leave",   "continue",
                                             "iterate", "return", "raise",    "execute", "assert",
                                             "begin",   "case",   "exception"};
    for (const char* k : kScripting) {
      if (w == k) {
        return Unknown(absl::StrCat("procedural language (", out_.kind,
                                    ") is not let through: the agent cannot see what it runs"));
      }
    }
    Unknown(absl::StrCat("an unknown statement (", out_.kind, ")"));
  }

  const std::vector<Token>& t_;
  absl::string_view default_dataset_;
  std::vector<std::string>* projects_;
  GoogleSqlStatement out_;
};

}  // namespace

GoogleSqlAnalysis AnalyzeGoogleSql(absl::string_view sql, absl::string_view default_dataset) {
  GoogleSqlAnalysis out;
  auto unknown = [&](std::string why) {
    GoogleSqlStatement s;
    s.cls = StatementClass::kUnknown;
    s.parse_error = why;
    out.statements.push_back(std::move(s));
    out.overall = StatementClass::kUnknown;
    out.parse_error = std::move(why);
    return out;
  };
  if (sql.size() > kMaxGoogleSqlBytes)
    return unknown(absl::StrCat("the SQL is over ", kMaxGoogleSqlBytes, " bytes"));
  std::vector<std::vector<Token>> statements;
  std::string error;
  if (!Lex(sql, &statements, &error)) return unknown(absl::StrCat("cannot read the SQL: ", error));
  for (const auto& tokens : statements) {
    if (tokens.empty()) continue;
    GoogleSqlStatement s =
        Classifier(tokens, absl::AsciiStrToLower(default_dataset), &out.projects).Run();
    out.overall =
        std::max(out.overall, s.cls);  // the order of StatementClass: most privileged last
    if (s.cls == StatementClass::kUnknown && out.parse_error.empty())
      out.parse_error = s.parse_error;
    out.statements.push_back(std::move(s));
  }
  return out;
}

}  // namespace sluice::agent::gcs
