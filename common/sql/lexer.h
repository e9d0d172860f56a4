// A fast, forgiving SQL lexer for audit records: a normalized fingerprint (literals replaced by
// '?', comments dropped, whitespace collapsed, keywords lower-cased) and a first-keyword
// classification. It is not a parser and never decides policy: guardrails use PostgreSQL's own
// parser (libpg_query). It runs on every statement, so it is linear and allocation-light.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace sluice::sql {

struct Shape {
  std::string normalized;      // e.g. "select * from t where id = ?"
  std::string fingerprint;     // 16 hex chars of SHA-256(normalized)
  std::string classification;  // read | write | ddl | dcl | transaction | other | empty
};

// Statement text longer than this is fingerprinted on its first kMaxLexBytes only.
inline constexpr size_t kMaxLexBytes = 64 << 10;

Shape Analyze(absl::string_view sql);

// The normalized text of `sql`, written into `*normalized` (cleared first, its capacity kept);
// returns the first keyword, lower-cased (a view into *normalized, empty when there is none).
absl::string_view Normalize(absl::string_view sql, std::string* normalized);

// Whether `sql` has a string constant whose meaning depends on standard_conforming_strings: a
// '...' (or N'...', U&'...') constant holding a backslash, which the server reads as an escape
// when the setting is off. E'...' and $$...$$ read the same either way. Conservative: an
// unterminated text counts as sensitive.
bool DependsOnStandardConformingStrings(absl::string_view sql);

}  // namespace sluice::sql
