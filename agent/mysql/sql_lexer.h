// A lexer for the MySQL / MariaDB dialect of SQL, byte for byte as MariaDB 10.11's lexer
// (sql/sql_lex.cc) reads a COM_QUERY text in an ASCII-compatible connection character set in
// which no multi-byte character holds a quote or a backslash byte (utf8mb4, utf8mb3, latin1,
// ascii: the session pins one of these). It is the first step of the statement classifier
// (sql_analysis.h), so it FAILS CLOSED: whatever it cannot place exactly as the server would is
// an error, never a guess.
//
// What it knows:
//   - comments: `#` and `-- ` to the end of the line (`--` needs a following whitespace or
//     control character, or the end of the text: `1--1` is arithmetic); `/* ... */` (not nested);
//   - executable comments, whose contents the server runs as SQL: `/*! ... */`, and versioned
//     `/*!NNNNN ... */` and MariaDB's `/*M!NNNNN ... */` (5 or 6 digits), which the server runs
//     or skips by its version: a version below 50700 in `/*!` runs everywhere; other versions
//     are decided by LexMode::mariadb_version, and are an error while it is 0 (unknown). A
//     skipped comment ends at its first `*/`. A comment inside an executable comment, a `;` in
//     one, or one left open is an error;
//   - strings '...' and (without ANSI_QUOTES) "...": doubled quotes, and backslash escapes unless
//     NO_BACKSLASH_ESCAPES; N'..', X'..' (hex digits only), B'..' (binary digits only); a
//     character set introducer (_utf8mb4'..') is a word followed by a string;
//   - identifiers: `...` with doubled backticks, and "..." under ANSI_QUOTES; words (keywords and
//     unquoted names: letters, digits, `_`, `$` and bytes >= 0x80), lower-cased;
//   - numbers: digits, decimals, exponents, 0x.. and 0b.. (a digit run followed by name bytes is
//     a word, as in the server);
//   - a NUL byte anywhere is an error (the server ends comments at one), and so is `--` followed
//     by a byte >= 0x80 (whether that starts a comment depends on the character set's tables).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace sluice::agent::mysql {

// What of the session's state changes how a text is lexed.
struct LexMode {
  bool ansi_quotes = false;           // sql_mode ANSI_QUOTES: "..." is an identifier
  bool no_backslash_escapes = false;  // sql_mode NO_BACKSLASH_ESCAPES: a backslash is a byte
  // The MariaDB server's version as versioned comments compare it (10.11.6 is 101106), from its
  // greeting (MariaDbVersion); 0 when unknown or not MariaDB.
  uint32_t mariadb_version = 0;
  // False for an sql_mode this lexer cannot follow (ORACLE: MariaDB then parses another grammar;
  // a name MariaDB 10.11 does not have; a number): every text is then an error (fail closed).
  bool supported = true;
  bool operator==(const LexMode&) const = default;
};

// The lexing mode of an sql_mode value: a comma-separated list of mode names in any case, as
// SET sql_mode or @@sql_mode gives it (combination modes ANSI, DB2, MAXDB, MSSQL and POSTGRESQL
// include ANSI_QUOTES). See LexMode::supported.
LexMode LexModeFromSqlMode(absl::string_view sql_mode, uint32_t mariadb_version = 0);

// The version versioned comments compare from a server version string: "10.11.6-MariaDB-0+deb12u1"
// or the greeting's "5.5.5-10.11.6-MariaDB..." give 101106; 0 for anything else (MySQL).
uint32_t MariaDbVersion(absl::string_view server_version);

enum class TokenKind {
  kWord,    // keyword or unquoted name; `text` lower-cased
  kQuoted,  // quoted identifier; `text` is the name, its case kept
  kString,  // string constant; `text` is its value (escapes applied)
  kNumber,  // numeric constant, X'..' or B'..'; `text` as written
  kPunct,   // operator or punctuation: one byte, or := @@ <=> <= >= <> != || && << >>
};

struct Token {
  TokenKind kind = TokenKind::kPunct;
  std::string text;
  bool space_before = false;  // whitespace or a comment comes before it
  // For `(`: how many tokens after it its matching `)` is (0 when it has none in the text).
  size_t pair = 0;
  bool Is(TokenKind k, absl::string_view t) const { return kind == k && text == t; }
  bool IsWord(absl::string_view w) const { return Is(TokenKind::kWord, w); }
  bool IsPunct(absl::string_view p) const { return Is(TokenKind::kPunct, p); }
};

struct LexResult {
  std::vector<Token> tokens;  // every token in order, `;` included
  std::string error;          // why the text cannot be lexed (then `tokens` is partial)
  // The text's shape: tokens as written with constants replaced by '?', words lower-cased,
  // quoted identifiers in backticks, whitespace and comments as one space, trailing `;` dropped.
  // Texts of one shape lex to the same tokens but for the constants' values.
  std::string normalized;
};

LexResult Lex(absl::string_view sql, const LexMode& mode);

}  // namespace sluice::agent::mysql
