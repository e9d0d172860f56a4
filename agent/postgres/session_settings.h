// The session settings the agent pins on every upstream session, and the checks that keep a
// caller from changing them by any road.
//
// The agent decides on a statement by parsing it with PostgreSQL 15's grammar as PostgreSQL reads
// it with standard_conforming_strings on, backslash_quote safe_encoding and an ASCII-safe client
// encoding. A server that lexed the same bytes under other settings could see other statements
// (`'a\' ; DELETE ...'` is one SELECT to the agent, SELECT + DELETE with the setting off), so:
//   - at login the agent adds `-c` options that pin them, and refuses a caller's startup options
//     that would set them otherwise (or set anything but `-c name=value` / `--name=value`);
//   - a statement that would change them (SET, SET LOCAL, RESET of a caller-set value,
//     set_config() with that name or with a name computed at run time) is refused;
//   - the server's ParameterStatus reports are watched: a pinned setting reported with another
//     value ends the session (something the agent could not see changed it);
//   - on a read grant, default_transaction_read_only stays on: transaction characteristics that
//     lift read-only are refused however they are spelled (BEGIN / START TRANSACTION READ WRITE,
//     SET TRANSACTION, SET SESSION CHARACTERISTICS, SET, set_config).
// Pure functions: the session calls them.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/postgres/sql_analysis.h"

namespace sluice::agent::postgres {

// Whether PostgreSQL reads every byte below 0x80 in `encoding` as the ASCII character (names as
// PostgreSQL accepts them: case and punctuation ignored). SJIS, BIG5, GBK, UHC, GB18030 and JOHAB
// are not: a second byte of a character can be a backslash.
bool AsciiSafeClientEncoding(absl::string_view encoding);

// The caller's startup `options` checked and returned as they go upstream, without the agent's
// own pins (PinnedOptions adds those). An error names what was refused.
absl::StatusOr<std::string> CheckStartupOptions(absl::string_view options, bool read_only);

// The `-c` options the agent puts last in every upstream startup.
std::string PinnedOptions(bool read_only);

// Why `info` may not run on this session: a pinned setting changed, a computed setting name, or
// read-only lifted on a read grant.
struct SettingsVerdict {
  std::string problem;           // empty: it may run
  bool lifts_read_only = false;  // the problem is read-only lifted on a read grant (SQLSTATE 25006)
};
SettingsVerdict SettingsProblem(const StatementInfo& info, bool read_only);

// Whether the session can go on after the server reports `name` = `value`: OK, or why not —
// FailedPrecondition when a setting the agent pins changed (it would no longer read statements as
// the server does), PermissionDenied when read-only was lifted on a read grant.
absl::Status ParameterStatusProblem(absl::string_view name, absl::string_view value,
                                    bool read_only);

// Whether `text` may change a session setting (a cheap test before the parser): the words SET,
// BEGIN, START or a Unicode-escaped identifier (U&"..."), in any case. Every statement that
// changes a setting has one of them; texts without are not looked at for settings.
bool MayChangeSettings(absl::string_view text);

}  // namespace sluice::agent::postgres
