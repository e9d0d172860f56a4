#include "agent/postgres/session_settings.h"

#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace sluice::agent::postgres {
namespace {

// PostgreSQL's clean_encoding_name: letters and digits only, lower case.
std::string CleanEncodingName(absl::string_view name) {
  std::string out;
  for (char c : name) {
    if (absl::ascii_isalnum(c)) out.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

bool IsOn(absl::string_view v) { return BoolText(v).value_or(false); }

// A setting name as PostgreSQL matches it: case-insensitive; `--name=value` options also write
// dashes for underscores.
std::string SettingName(absl::string_view name) {
  return absl::StrReplaceAll(absl::AsciiStrToLower(absl::StripAsciiWhitespace(name)), {{"-", "_"}});
}

// Why setting `name` to `value` is refused (empty: it may be). `value_known` is false when the
// value is computed at run time.
std::string SetProblem(const std::string& name, const std::string& value, bool value_known,
                       bool reset, bool read_only) {
  if (name.empty()) {
    return "it calls set_config() with a setting name computed at run time, so the agent cannot "
           "tell which "
           "setting it changes";
  }
  if (name == "standard_conforming_strings" || name == "backslash_quote") {
    if (reset) return "";  // back to the value the agent pinned at login
    if (name == "standard_conforming_strings" && value_known && IsOn(value)) return "";
    if (name == "backslash_quote" && value_known && absl::AsciiStrToLower(value) == "safe_encoding")
      return "";
    return absl::StrCat("it changes ", name,
                        ", which the agent pins so that it reads statements as the server does");
  }
  if (name == "client_encoding") {
    if (reset) return "";
    if (value_known && AsciiSafeClientEncoding(value)) return "";
    return absl::StrCat(
        "it sets client_encoding to ", value_known ? "\"" + value + "\"" : "a computed value",
        ": the agent accepts only encodings in which every byte below 0x80 is ASCII "
        "(UTF8, LATIN1, WIN1252, EUC_JP, ...; not SJIS, BIG5, GBK, UHC, GB18030, JOHAB)");
  }
  if (read_only && (name == "default_transaction_read_only" || name == "transaction_read_only")) {
    if (name == "default_transaction_read_only" && reset) return "";  // back to on
    if (!reset && value_known && IsOn(value)) return "";
    return absl::StrCat("it would lift ", name, " on a read-only session");
  }
  return "";
}

}  // namespace

bool AsciiSafeClientEncoding(absl::string_view encoding) {
  static const auto* safe = new absl::flat_hash_set<std::string>{
      "utf8",        "unicode",     "sqlascii",     "eucjp",       "euccn",       "euckr",
      "euctw",       "eucjis2004",  "muleinternal", "latin1",      "latin2",      "latin3",
      "latin4",      "latin5",      "latin6",       "latin7",      "latin8",      "latin9",
      "latin10",     "iso88591",    "iso88592",     "iso88593",    "iso88594",    "iso88599",
      "iso885910",   "iso885913",   "iso885914",    "iso885915",   "iso885916",   "iso88595",
      "iso88596",    "iso88597",    "iso88598",     "win1250",     "win1251",     "win1252",
      "win1253",     "win1254",     "win1255",      "win1256",     "win1257",     "win1258",
      "windows1250", "windows1251", "windows1252",  "windows1253", "windows1254", "windows1255",
      "windows1256", "windows1257", "windows1258",  "win866",      "windows866",  "alt",
      "win874",      "windows874",  "koi8",         "koi8r",       "koi8u",       "tcvn",
      "tcvn5712",    "vscii",       "abc",          "win"};
  return safe->contains(CleanEncodingName(encoding));
}

absl::StatusOr<std::string> CheckStartupOptions(absl::string_view options, bool read_only) {
  constexpr size_t kMaxOptions = 8192;
  if (options.size() > kMaxOptions) {
    return absl::InvalidArgumentError(
        absl::StrCat("startup options longer than ", kMaxOptions, " bytes"));
  }
  // PostgreSQL's pg_split_opts: arguments separated by whitespace, a backslash takes the next
  // byte literally.
  std::vector<std::string> args;
  std::string current;
  bool in_arg = false;
  for (size_t i = 0; i < options.size(); ++i) {
    char c = options[i];
    if (absl::ascii_isspace(c)) {
      if (in_arg) args.push_back(std::move(current));
      current.clear();
      in_arg = false;
      continue;
    }
    if (c == '\\' && i + 1 < options.size()) c = options[++i];
    current.push_back(c);
    in_arg = true;
  }
  if (in_arg) args.push_back(std::move(current));

  std::string out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string setting;
    if (args[i] == "-c") {
      if (i + 1 >= args.size())
        return absl::InvalidArgumentError("startup option -c without a setting");
      setting = args[++i];
    } else if (absl::StartsWith(args[i], "-c")) {
      setting = args[i].substr(2);
    } else if (absl::StartsWith(args[i], "--")) {
      setting = args[i].substr(2);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("startup option \"", args[i],
                       "\" is not accepted by the agent (only -c name=value and --name=value)"));
    }
    size_t eq = setting.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("startup option \"", setting, "\" is not name=value"));
    }
    std::string name = SettingName(setting.substr(0, eq));
    std::string value = setting.substr(eq + 1);
    std::string problem = SetProblem(name, value, true, false, read_only);
    if (problem.empty() && read_only &&
        (name == "default_transaction_read_only" || name == "transaction_read_only")) {
      problem = absl::StrCat("it sets ", name, ", which the agent sets for a read-only session");
    }
    if (!problem.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("startup option ", name, "=", value, " refused: ", problem));
    }
    // Re-escaped for the upstream startup: backslashes and spaces as pg_split_opts reads them.
    std::string escaped;
    for (char c : absl::StrCat(name, "=", value)) {
      if (c == '\\' || absl::ascii_isspace(c)) escaped.push_back('\\');
      escaped.push_back(c);
    }
    absl::StrAppend(&out, out.empty() ? "" : " ", "-c ", escaped);
  }
  return out;
}

std::string PinnedOptions(bool read_only) {
  std::string out = "-c standard_conforming_strings=on -c backslash_quote=safe_encoding";
  if (read_only) absl::StrAppend(&out, " -c default_transaction_read_only=on");
  return out;
}

SettingsVerdict SettingsProblem(const StatementInfo& info, bool read_only) {
  for (const StatementFacts& f : info.statements) {
    for (const SettingChange& c : f.settings) {
      std::string problem = SetProblem(c.name, c.value, c.value_known, c.reset, read_only);
      if (problem.empty()) continue;
      bool lifts = read_only &&
                   (c.name == "default_transaction_read_only" || c.name == "transaction_read_only");
      return SettingsVerdict{std::move(problem), lifts};
    }
  }
  return SettingsVerdict{};
}

absl::Status ParameterStatusProblem(absl::string_view name, absl::string_view value,
                                    bool read_only) {
  std::string n = SettingName(name);
  if (n == "standard_conforming_strings" && !IsOn(value)) {
    return absl::FailedPreconditionError("the server reports standard_conforming_strings off");
  }
  if (n == "client_encoding" && !AsciiSafeClientEncoding(value)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the server reports client_encoding ", value));
  }
  if (read_only && n == "default_transaction_read_only" && !IsOn(value)) {
    return absl::PermissionDeniedError(
        "the server reports default_transaction_read_only off on a read-only session");
  }
  return absl::OkStatus();
}

bool MayChangeSettings(absl::string_view text) {
  for (size_t i = 0; i + 2 <= text.size(); ++i) {
    char c = text[i] | 0x20;
    if (c == 's' && i + 3 <= text.size() &&
        (absl::EqualsIgnoreCase(text.substr(i, 3), "set") ||
         (i + 5 <= text.size() && absl::EqualsIgnoreCase(text.substr(i, 5), "start")))) {
      return true;
    }
    if (c == 'b' && i + 5 <= text.size() && absl::EqualsIgnoreCase(text.substr(i, 5), "begin"))
      return true;
    if (c == 'u' && text[i + 1] == '&') return true;
  }
  return false;
}

}  // namespace sluice::agent::postgres
