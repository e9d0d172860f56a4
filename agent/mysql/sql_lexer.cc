// The MySQL / MariaDB lexer (sql_lexer.h). Each rule mirrors a state of MariaDB 10.11's
// Lex_input_stream::lex_one_token; where the server's reading depends on something the agent
// does not know (the character set's tables, the server's version), the text is refused.
#include "agent/mysql/sql_lexer.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sluice::agent::mysql {
namespace {

bool NameByte(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return absl::ascii_isalnum(u) || c == '_' || c == '$' || u >= 0x80;
}

// The server's my_isspace for the ASCII range.
bool SpaceByte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

bool AllOf(absl::string_view s, bool (*pred)(unsigned char)) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!pred(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool IsDigit(unsigned char c) { return absl::ascii_isdigit(c); }
bool IsHex(unsigned char c) { return absl::ascii_isxdigit(c); }
bool IsBin(unsigned char c) { return c == '0' || c == '1'; }

// What the server does with a versioned or MariaDB executable comment.
enum class CommentRun { kCode, kSkip, kUnknown };

CommentRun VersionedComment(bool maria, bool has_version, uint32_t version, uint32_t server) {
  if (maria) {  // MySQL reads /*M! as a plain comment; MariaDB runs it by version
    if (server == 0) return CommentRun::kUnknown;
    if (!has_version) return CommentRun::kCode;
    return version <= server ? CommentRun::kCode : CommentRun::kSkip;
  }
  if (!has_version) return CommentRun::kCode;
  // MariaDB skips MySQL 5.7+ versions (50700-99999); every server runs what is older.
  if (server == 0) return version < 50700 ? CommentRun::kCode : CommentRun::kUnknown;
  return version <= server && (version < 50700 || version > 99999) ? CommentRun::kCode
                                                                   : CommentRun::kSkip;
}

char Unescaped(char c) {
  switch (c) {
    case '0':
      return '\0';
    case 'b':
      return '\b';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    case 'Z':
      return '\x1a';
    default:
      return c;
  }
}

class Lexer {
 public:
  Lexer(absl::string_view sql, const LexMode& mode, LexResult* out)
      : sql_(sql), mode_(mode), out_(out) {}

  void Run() {
    if (!mode_.supported) {
      Fail("the session's sql_mode is one the agent cannot lex");
      return;
    }
    if (sql_.find('\0') != absl::string_view::npos) {
      Fail("a NUL byte in the text");
      return;
    }
    while (i_ < sql_.size()) {
      if (!Step()) return;
    }
    if (in_exec_) Fail("an executable comment is not closed");
    std::string& n = out_->normalized;
    while (!n.empty() && (n.back() == ' ' || n.back() == ';')) n.pop_back();
  }

 private:
  bool Fail(absl::string_view why) {
    if (out_->error.empty()) out_->error = std::string(why);
    return false;
  }
  char At(size_t k) const { return k < sql_.size() ? sql_[k] : '\0'; }

  void Emit(TokenKind kind, std::string text) {
    std::string& n = out_->normalized;
    if (space_ && !n.empty()) n.push_back(' ');
    switch (kind) {
      case TokenKind::kString:
      case TokenKind::kNumber:
        n.push_back('?');
        break;
      case TokenKind::kQuoted:
        n.push_back('`');
        for (char c : text) {
          n.push_back(c);
          if (c == '`') n.push_back('`');
        }
        n.push_back('`');
        break;
      default:
        n.append(text);
    }
    out_->tokens.push_back(Token{kind, std::move(text), space_});
    space_ = false;
  }

  bool Step();
  bool LineComment(size_t from);
  bool SlashStar();
  bool String(char quote);
  bool QuotedName(char quote);
  bool DigitsConstant(bool (*digit)(unsigned char));
  void WordOrNumber();
  void Fraction(size_t start);
  void Punct();

  absl::string_view sql_;
  LexMode mode_;
  LexResult* out_;
  size_t i_ = 0;
  bool in_exec_ = false;  // inside an executable comment's code
  bool space_ = false;
};

bool Lexer::Step() {
  char c = sql_[i_];
  char next = At(i_ + 1);
  if (SpaceByte(c)) {
    space_ = true;
    ++i_;
    return true;
  }
  if (c == '#') return LineComment(i_ + 1);
  if (c == '-' && next == '-') {
    if (i_ + 2 >= sql_.size()) return LineComment(i_ + 2);
    unsigned char after = static_cast<unsigned char>(sql_[i_ + 2]);
    if (after <= 0x20 || after == 0x7f) return LineComment(i_ + 2);
    if (after >= 0x80) return Fail("'--' followed by a non-ASCII byte");
  }
  if (c == '/' && next == '*') return SlashStar();
  if (c == '*' && next == '/' && in_exec_) {
    in_exec_ = false;
    i_ += 2;
    space_ = true;
    return true;
  }
  if (c == ';' && in_exec_) return Fail("';' inside an executable comment");
  if (c == '\'') return String('\'');
  if (c == '"') return mode_.ansi_quotes ? QuotedName('"') : String('"');
  if (c == '`') return QuotedName('`');
  char lower = absl::ascii_tolower(static_cast<unsigned char>(c));
  if (next == '\'' && lower == 'n') {
    ++i_;  // N'...': a string in the national character set
    return String('\'');
  }
  if (next == '\'' && lower == 'x') return DigitsConstant(IsHex);
  if (next == '\'' && lower == 'b') return DigitsConstant(IsBin);
  if (NameByte(c)) {
    WordOrNumber();
    return true;
  }
  if (c == '.' && absl::ascii_isdigit(static_cast<unsigned char>(next))) {
    const bool after_word =
        !out_->tokens.empty() && !space_ && out_->tokens.back().kind == TokenKind::kWord;
    if (!after_word) {
      Fraction(i_);
      return true;
    }
  }
  Punct();
  return true;
}

// `#` and `-- ` comments run to the end of the line.
bool Lexer::LineComment(size_t from) {
  size_t end = sql_.find('\n', from);
  i_ = end == absl::string_view::npos ? sql_.size() : end;
  space_ = true;
  return true;
}

bool Lexer::SlashStar() {
  size_t p = i_ + 2;
  bool maria = false;
  if (At(p) == '!') {
    ++p;
  } else if (At(p) == 'M' && At(p + 1) == '!') {
    maria = true;
    p += 2;
  } else {
    if (in_exec_) return Fail("a comment inside an executable comment");
    size_t end = sql_.find("*/", i_ + 2);
    if (end == absl::string_view::npos) return Fail("a comment is not closed");
    i_ = end + 2;
    space_ = true;
    return true;
  }
  if (in_exec_) return Fail("an executable comment inside an executable comment");
  size_t digits = 0;
  while (digits < 6 && absl::ascii_isdigit(static_cast<unsigned char>(At(p + digits)))) ++digits;
  const bool has_version = digits >= 5;
  uint32_t version = 0;
  if (has_version && !absl::SimpleAtoi(sql_.substr(p, digits), &version)) {
    return Fail("an executable comment's version cannot be read");
  }
  switch (VersionedComment(maria, has_version, version, mode_.mariadb_version)) {
    case CommentRun::kUnknown:
      return Fail("an executable comment whose running depends on the server's version");
    case CommentRun::kCode:
      i_ = has_version ? p + digits : p;
      in_exec_ = true;
      space_ = true;
      return true;
    case CommentRun::kSkip:
      break;
  }
  // Skipped: the server drops everything to the first "*/" (one nested comment allowed, which
  // this lexer refuses rather than follow).
  size_t end = sql_.find("*/", p);
  if (end == absl::string_view::npos) return Fail("a comment is not closed");
  size_t nested = sql_.find("/*", p);
  if (nested != absl::string_view::npos && nested < end) {
    return Fail("a comment inside a skipped versioned comment");
  }
  i_ = end + 2;
  space_ = true;
  return true;
}

bool Lexer::String(char quote) {
  std::string value;
  for (size_t k = i_ + 1; k < sql_.size(); ++k) {
    char c = sql_[k];
    if (c == '\\' && !mode_.no_backslash_escapes) {
      if (k + 1 >= sql_.size()) break;
      char e = sql_[++k];
      if (e == '%' || e == '_') value.push_back('\\');  // kept for LIKE patterns
      value.push_back(Unescaped(e));
      continue;
    }
    if (c == quote) {
      if (At(k + 1) == quote) {
        value.push_back(quote);
        ++k;
        continue;
      }
      i_ = k + 1;
      Emit(TokenKind::kString, std::move(value));
      return true;
    }
    value.push_back(c);
  }
  return Fail("a string is not closed");
}

bool Lexer::QuotedName(char quote) {
  std::string name;
  for (size_t k = i_ + 1; k < sql_.size(); ++k) {
    if (sql_[k] != quote) {
      name.push_back(sql_[k]);
      continue;
    }
    if (At(k + 1) == quote) {
      name.push_back(quote);
      ++k;
      continue;
    }
    i_ = k + 1;
    Emit(TokenKind::kQuoted, std::move(name));
    return true;
  }
  return Fail("a quoted identifier is not closed");
}

// X'...' and B'...': the server ends the constant at the first byte that is not a digit of its
// base, which must be the closing quote.
bool Lexer::DigitsConstant(bool (*digit)(unsigned char)) {
  size_t k = i_ + 2;
  while (k < sql_.size() && digit(static_cast<unsigned char>(sql_[k]))) ++k;
  if (At(k) != '\'' || k >= sql_.size()) return Fail("a malformed X'..' or B'..' constant");
  std::string text(sql_.substr(i_, k + 1 - i_));
  i_ = k + 1;
  Emit(TokenKind::kNumber, std::move(text));
  return true;
}

void Lexer::WordOrNumber() {
  size_t start = i_;
  while (i_ < sql_.size() && NameByte(sql_[i_])) ++i_;
  absl::string_view run = sql_.substr(start, i_ - start);
  size_t digits = 0;
  while (digits < run.size() && absl::ascii_isdigit(static_cast<unsigned char>(run[digits]))) {
    ++digits;
  }
  if (digits == run.size()) {
    Fraction(start);
    return;
  }
  bool number = (run.size() > 2 && run[0] == '0' && run[1] == 'x' && AllOf(run.substr(2), IsHex)) ||
                (run.size() > 2 && run[0] == '0' && run[1] == 'b' && AllOf(run.substr(2), IsBin));
  if (digits > 0 && (run[digits] == 'e' || run[digits] == 'E')) {
    if (digits + 1 < run.size()) {
      number = AllOf(run.substr(digits + 1), IsDigit);
    } else if ((At(i_) == '+' || At(i_) == '-') &&
               absl::ascii_isdigit(static_cast<unsigned char>(At(i_ + 1)))) {
      i_ += 1;
      while (absl::ascii_isdigit(static_cast<unsigned char>(At(i_)))) ++i_;
      number = true;
    }
  }
  if (number) {
    Emit(TokenKind::kNumber, std::string(sql_.substr(start, i_ - start)));
    return;
  }
  Emit(TokenKind::kWord, absl::AsciiStrToLower(run));
}

// A decimal number from `start` (digits already passed up to i_, or a leading '.'): a fraction
// and an exponent with digits.
void Lexer::Fraction(size_t start) {
  auto digit = [this](size_t k) { return absl::ascii_isdigit(static_cast<unsigned char>(At(k))); };
  if (At(i_) == '.' && digit(i_ + 1)) {
    i_ += 1;
    while (digit(i_)) ++i_;
  }
  if (At(i_) == 'e' || At(i_) == 'E') {
    size_t e = i_ + 1;
    if (At(e) == '+' || At(e) == '-') ++e;
    if (digit(e)) {
      i_ = e;
      while (digit(i_)) ++i_;
    }
  }
  Emit(TokenKind::kNumber, std::string(sql_.substr(start, i_ - start)));
}

void Lexer::Punct() {
  static constexpr std::array<absl::string_view, 10> kTwo = {":=", "@@", "<=", ">=", "<>",
                                                             "!=", "||", "&&", "<<", ">>"};
  absl::string_view rest = sql_.substr(i_);
  size_t len = 1;
  if (absl::StartsWith(rest, "<=>")) {
    len = 3;
  } else {
    for (absl::string_view two : kTwo) {
      if (absl::StartsWith(rest, two)) len = 2;
    }
  }
  std::string text(rest.substr(0, len));
  i_ += len;
  Emit(TokenKind::kPunct, std::move(text));
}

}  // namespace

LexResult Lex(absl::string_view sql, const LexMode& mode) {
  LexResult out;
  Lexer(sql, mode, &out).Run();
  // Matching parentheses, so that skipping one costs nothing (the classifier skips them often).
  std::vector<size_t> open;
  for (size_t i = 0; i < out.tokens.size(); ++i) {
    if (out.tokens[i].IsPunct("(")) open.push_back(i);
    if (out.tokens[i].IsPunct(")") && !open.empty()) {
      out.tokens[open.back()].pair = i - open.back();
      open.pop_back();
    }
  }
  return out;
}

LexMode LexModeFromSqlMode(absl::string_view sql_mode, uint32_t mariadb_version) {
  static const auto* known = new std::vector<absl::string_view>{"REAL_AS_FLOAT",
                                                                "PIPES_AS_CONCAT",
                                                                "IGNORE_SPACE",
                                                                "IGNORE_BAD_TABLE_OPTIONS",
                                                                "ONLY_FULL_GROUP_BY",
                                                                "NO_UNSIGNED_SUBTRACTION",
                                                                "NO_DIR_IN_CREATE",
                                                                "NO_KEY_OPTIONS",
                                                                "NO_TABLE_OPTIONS",
                                                                "NO_FIELD_OPTIONS",
                                                                "MYSQL323",
                                                                "MYSQL40",
                                                                "NO_AUTO_VALUE_ON_ZERO",
                                                                "STRICT_TRANS_TABLES",
                                                                "STRICT_ALL_TABLES",
                                                                "NO_ZERO_IN_DATE",
                                                                "NO_ZERO_DATE",
                                                                "ALLOW_INVALID_DATES",
                                                                "ERROR_FOR_DIVISION_BY_ZERO",
                                                                "TRADITIONAL",
                                                                "NO_AUTO_CREATE_USER",
                                                                "HIGH_NOT_PRECEDENCE",
                                                                "NO_ENGINE_SUBSTITUTION",
                                                                "PAD_CHAR_TO_FULL_LENGTH",
                                                                "EMPTY_STRING_IS_NULL",
                                                                "SIMULTANEOUS_ASSIGNMENT",
                                                                "TIME_ROUND_FRACTIONAL",
                                                                "TIME_TRUNCATE_FRACTIONAL"};
  static const auto* with_ansi_quotes = new std::vector<absl::string_view>{
      "ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "POSTGRESQL"};
  LexMode mode;
  mode.mariadb_version = mariadb_version;
  for (absl::string_view part : absl::StrSplit(sql_mode, ',')) {
    std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(part));
    if (name.empty()) continue;
    auto in = [&name](const std::vector<absl::string_view>* list) {
      return std::find(list->begin(), list->end(), name) != list->end();
    };
    if (name == "NO_BACKSLASH_ESCAPES") {
      mode.no_backslash_escapes = true;
    } else if (in(with_ansi_quotes)) {
      mode.ansi_quotes = true;
    } else if (!in(known)) {  // ORACLE (another grammar), or a name MariaDB does not have
      mode.supported = false;
    }
  }
  return mode;
}

uint32_t MariaDbVersion(absl::string_view server_version) {
  if (server_version.find("MariaDB") == absl::string_view::npos) return 0;
  absl::ConsumePrefix(&server_version, "5.5.5-");  // the greeting's prefix for old clients
  std::vector<absl::string_view> parts = absl::StrSplit(server_version, absl::MaxSplits('.', 2));
  if (parts.size() != 3) return 0;
  size_t patch_len = 0;
  while (patch_len < parts[2].size() && absl::ascii_isdigit(parts[2][patch_len])) ++patch_len;
  uint32_t major = 0, minor = 0, patch = 0;
  if (!absl::SimpleAtoi(parts[0], &major) || !absl::SimpleAtoi(parts[1], &minor) ||
      !absl::SimpleAtoi(parts[2].substr(0, patch_len), &patch) || minor > 99 || patch > 99) {
    return 0;
  }
  return major * 10000 + minor * 100 + patch;
}

}  // namespace sluice::agent::mysql
