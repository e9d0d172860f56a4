// Which calls MariaDB 10.11 resolves to something of its own, and which to a stored function or a
// UDF (whose code the agent cannot see and which may write). The table behind this is generated
// from a real server by tests/tools/mysql_builtin_functions.py (sql_builtin_functions.cc).
#pragma once

#include <cstddef>

#include "absl/strings/string_view.h"

namespace sluice::agent::mysql {

// How a call's name is written.
enum class CallSpelling {
  kBare,    // name(        a word directly followed by the parenthesis
  kSpaced,  // name (       whitespace or a comment between
  kQuoted,  // `name`(      a quoted identifier
};

// Whether the server may take an unqualified `name(...)` (name lower-case) with `arguments`
// arguments for a call of a stored function or a UDF: false for its native functions, functions
// with keyword syntax (COUNT, CAST, TRIM, ...), operators spelled like calls and reserved words
// (which are never a function's name); true for any other name. The keyword functions of MariaDB's
// lex.h (COUNT, NOW, CAST, ...) are plain names when spaced (unless sql_mode has IGNORE_SPACE,
// taken as absent: fails closed), every keyword is when quoted, and a few functions are built in
// for some argument counts only (point(x, y), but point() is a stored function's). A qualified
// `db.name(...)` is always a stored function's call: do not ask.
bool MayCallStoredFunction(absl::string_view name, size_t arguments, CallSpelling spelling);

}  // namespace sluice::agent::mysql
