#include "common/sql/lexer.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::sql {
namespace {

bool IdentStart(char c) {
  return absl::ascii_isalpha(c) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}
bool IdentChar(char c) { return IdentStart(c) || absl::ascii_isdigit(c) || c == '$'; }

// True when `word` occurs in `text` as a whole word.
bool HasWord(absl::string_view text, absl::string_view word) {
  for (size_t pos = text.find(word); pos != absl::string_view::npos;
       pos = text.find(word, pos + 1)) {
    bool left = pos == 0 || !IdentChar(text[pos - 1]);
    size_t end = pos + word.size();
    bool right = end == text.size() || !IdentChar(text[end]);
    if (left && right) return true;
  }
  return false;
}

absl::string_view Classify(absl::string_view first, absl::string_view normalized) {
  if (first.empty()) return "empty";
  if (first == "select" || first == "show" || first == "explain" || first == "values" ||
      first == "table" || first == "fetch" || first == "declare" || first == "listen" ||
      first == "unlisten") {
    return "read";
  }
  if (first == "with") {
    // A data-modifying CTE is a write.
    for (const char* kw : {"insert", "update", "delete", "merge"}) {
      if (HasWord(normalized, kw)) return "write";
    }
    return "read";
  }
  if (first == "insert" || first == "update" || first == "delete" || first == "merge" ||
      first == "copy" || first == "call" || first == "do" || first == "notify" || first == "lock") {
    return "write";
  }
  if (first == "create" || first == "alter" || first == "drop" || first == "truncate" ||
      first == "comment" || first == "reindex" || first == "cluster" || first == "vacuum" ||
      first == "analyze" || first == "refresh" || first == "security" || first == "import") {
    return "ddl";
  }
  if (first == "grant" || first == "revoke" || first == "reassign") return "dcl";
  if (first == "begin" || first == "start" || first == "commit" || first == "end" ||
      first == "rollback" || first == "abort" || first == "savepoint" || first == "release" ||
      first == "prepare" || first == "set" || first == "reset") {
    return "transaction";
  }
  return "other";
}

// Skips the block comment starting at sql[*i] ("/*"); PostgreSQL's block comments nest. Returns
// false when it is not closed (the text ends inside it).
bool SkipBlockComment(absl::string_view sql, size_t* i) {
  int depth = 0;
  while (*i < sql.size()) {
    if (sql[*i] == '/' && *i + 1 < sql.size() && sql[*i + 1] == '*') {
      ++depth;
      *i += 2;
    } else if (sql[*i] == '*' && *i + 1 < sql.size() && sql[*i + 1] == '/') {
      *i += 2;
      if (--depth == 0) return true;
    } else {
      ++*i;
    }
  }
  return false;
}

// Skips a '...' constant's body, from sql[*i] (just past its opening quote) to just past its
// closing quote; `escape`: an E'...' constant, where a backslash escapes the next byte. Returns
// whether it was closed; `*backslash` is set when a plain constant holds a backslash.
bool SkipQuoted(absl::string_view sql, size_t* i, bool escape, bool* backslash) {
  while (*i < sql.size()) {
    if (sql[*i] == '\\') {
      if (!escape) {
        *backslash = true;
        ++*i;
        continue;
      }
      *i += 2;
    } else if (sql[*i] == '\'') {
      if (*i + 1 < sql.size() && sql[*i + 1] == '\'') {
        *i += 2;
      } else {
        ++*i;
        return true;
      }
    } else {
      ++*i;
    }
  }
  *i = sql.size();
  return false;
}

}  // namespace

absl::string_view Normalize(absl::string_view sql, std::string* normalized) {
  if (sql.size() > kMaxLexBytes) sql = sql.substr(0, kMaxLexBytes);
  std::string& n = *normalized;
  n.clear();
  n.reserve(sql.size());
  size_t first_at = 0;
  size_t first_len = 0;
  auto space = [&n] {
    if (!n.empty() && n.back() != ' ') n.push_back(' ');
  };
  size_t i = 0;
  while (i < sql.size()) {
    char c = sql[i];
    if (absl::ascii_isspace(c)) {
      space();
      ++i;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
      space();
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      SkipBlockComment(sql, &i);
      space();
    } else if (c == '\'' ||
               ((c == 'E' || c == 'e' || c == 'B' || c == 'b' || c == 'X' || c == 'x' || c == 'N' ||
                 c == 'n') &&
                i + 1 < sql.size() && sql[i + 1] == '\'' && (n.empty() || !IdentChar(n.back())))) {
      bool escape = (c == 'E' || c == 'e');
      i += (c == '\'') ? 1 : 2;
      bool ignored = false;
      SkipQuoted(sql, &i, escape, &ignored);
      n.push_back('?');
    } else if (c == '$' && i + 1 < sql.size() && (sql[i + 1] == '$' || IdentStart(sql[i + 1]))) {
      // Dollar quoting: $tag$ ... $tag$.
      size_t end_tag = sql.find('$', i + 1);
      if (end_tag == absl::string_view::npos) {
        absl::StrAppend(&n, sql.substr(i));
        break;
      }
      absl::string_view tag = sql.substr(i, end_tag - i + 1);
      size_t close = sql.find(tag, end_tag + 1);
      i = close == absl::string_view::npos ? sql.size() : close + tag.size();
      n.push_back('?');
    } else if (c == '$' && i + 1 < sql.size() && absl::ascii_isdigit(sql[i + 1])) {
      ++i;  // $1 parameters are placeholders already
      while (i < sql.size() && absl::ascii_isdigit(sql[i])) ++i;
      n.push_back('?');
    } else if (absl::ascii_isdigit(c) ||
               (c == '.' && i + 1 < sql.size() && absl::ascii_isdigit(sql[i + 1]))) {
      if (!n.empty() && IdentChar(n.back())) {  // part of an identifier like t1
        n.push_back(c);
        ++i;
        continue;
      }
      // Exactly PostgreSQL 15's number tokens (digits, one '.', an exponent with digits): what
      // follows, letters included (`1or`, `0x1F`), is another token, as the server reads it.
      // Normalized texts are cache keys, so the two must end a literal at the same byte.
      auto digits = [&] {
        while (i < sql.size() && absl::ascii_isdigit(sql[i])) ++i;
      };
      digits();
      if (i < sql.size() && sql[i] == '.' && !(i + 1 < sql.size() && sql[i + 1] == '.')) {
        ++i;
        digits();
      }
      if (i < sql.size() && (sql[i] == 'e' || sql[i] == 'E')) {
        size_t e = i + 1;
        if (e < sql.size() && (sql[e] == '+' || sql[e] == '-')) ++e;
        if (e < sql.size() && absl::ascii_isdigit(sql[e])) {
          i = e;
          digits();
        }
      }
      n.push_back('?');
    } else if (c == '"') {
      size_t start = i++;
      while (i < sql.size()) {
        if (sql[i] == '"' && i + 1 < sql.size() && sql[i + 1] == '"') {
          i += 2;
        } else if (sql[i++] == '"') {
          break;
        }
      }
      absl::StrAppend(&n, sql.substr(start, i - start));  // quoted identifiers keep their case
    } else if (IdentStart(c)) {
      size_t start = i;
      while (i < sql.size() && IdentChar(sql[i])) ++i;
      size_t at = n.size();
      n.append(sql.data() + start, i - start);
      for (size_t k = at; k < n.size(); ++k)
        n[k] = absl::ascii_tolower(static_cast<unsigned char>(n[k]));
      if (first_len == 0) {
        first_at = at;
        first_len = i - start;
      }
    } else {
      n.push_back(c);
      ++i;
    }
  }
  while (!n.empty() && (n.back() == ' ' || n.back() == ';')) n.pop_back();
  size_t lead = 0;
  while (lead < n.size() && n[lead] == ' ') ++lead;
  if (lead > 0) {
    n.erase(0, lead);
    first_at -= std::min(first_at, lead);
  }
  if (first_len == 0 || first_at + first_len > n.size()) return absl::string_view();
  return absl::string_view(n).substr(first_at, first_len);
}

bool DependsOnStandardConformingStrings(absl::string_view sql) {
  if (sql.find('\\') == absl::string_view::npos)
    return false;  // the common case: no backslash at all
  size_t i = 0;
  bool after_ident = false;  // the previous token was an identifier or keyword (E'' needs none)
  while (i < sql.size()) {
    char c = sql[i];
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
      after_ident = false;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      if (!SkipBlockComment(sql, &i)) return true;
      after_ident = false;
    } else if (c == '\'' || ((c == 'E' || c == 'e') && !after_ident && i + 1 < sql.size() &&
                             sql[i + 1] == '\'')) {
      bool escape = c != '\'';
      i += escape ? 2 : 1;
      bool backslash = false;
      if (!SkipQuoted(sql, &i, escape, &backslash) || backslash) return true;
      after_ident = false;
    } else if (c == '$' && i + 1 < sql.size() && (sql[i + 1] == '$' || IdentStart(sql[i + 1])) &&
               !after_ident) {
      size_t end_tag = sql.find('$', i + 1);
      if (end_tag == absl::string_view::npos) return true;
      absl::string_view tag = sql.substr(i, end_tag - i + 1);
      size_t close = sql.find(tag, end_tag + 1);
      if (close == absl::string_view::npos) return true;
      i = close + tag.size();
      after_ident = false;
    } else if (c == '"') {
      ++i;
      while (i < sql.size()) {
        if (sql[i] == '"' && i + 1 < sql.size() && sql[i + 1] == '"') {
          i += 2;
        } else if (sql[i++] == '"') {
          break;
        }
      }
      after_ident = true;
    } else if (IdentStart(c)) {
      while (i < sql.size() && IdentChar(sql[i])) ++i;
      after_ident = true;
    } else {
      after_ident = absl::ascii_isdigit(c) && after_ident;
      ++i;
    }
  }
  return false;
}

Shape Analyze(absl::string_view sql) {
  Shape out;
  absl::string_view first = Normalize(sql, &out.normalized);
  out.classification = std::string(Classify(first, out.normalized));
  out.fingerprint = Sha256Hex(out.normalized).substr(0, 16);
  return out;
}

}  // namespace sluice::sql
