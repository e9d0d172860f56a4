// SET, transactions and SQL-level prepared statements (sql_analysis.h): the statements that
// change what the agent relies on (the lexing mode, the character set, the read-only upstream
// session) or hide the text that will run.
#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/mysql/sql_analysis_internal.h"

namespace sluice::agent::mysql::sql_analysis_internal {
namespace {

using C = StatementClass;

// Character sets in which this lexer reads every byte as the server does (sql_lexer.h).
bool LexableCharset(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n != "binary") n = n.substr(0, n.find('_'));  // a collation: its character set
  for (absl::string_view ok : {"utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary"}) {
    if (n == ok) return true;
  }
  return false;
}

bool Truthy(absl::string_view v) {
  std::string l = absl::AsciiStrToLower(v);
  return l == "1" || l == "on" || l == "true";
}

void Unsafe(StatementFacts* f, std::string why) {
  if (f->unsafe.empty()) f->unsafe = std::move(why);
}

bool Scope(const Token& t) {
  for (absl::string_view w : {"global", "session", "local", "persist", "persist_only"}) {
    if (t.IsWord(w)) return true;
  }
  return false;
}

// One assignment of SET (or of SET STATEMENT, `temporary`: for one statement, nothing recorded).
struct Assignment {
  std::string scope;     // global, session, local, persist, persist_only; empty when not given
  bool user = false;     // @name
  bool unclear = false;  // no scope, after an item with GLOBAL / PERSIST
  std::string name;      // lower-case
  Tokens value;
};

// Reads `[scope] name = value`, `@@[scope.]name = value`, `@name = value`, NAMES x [COLLATE y],
// CHARACTER SET x / CHARSET x; false when it is none of these.
bool ReadAssignment(Tokens item, Assignment* a) {
  size_t i = 0;
  if (!item.empty() && Scope(item[0])) {
    a->scope = item[0].text;
    i = 1;
  } else if (PunctAt(item, 0, "@@")) {
    i = 1;
    if (i + 1 < item.size() && Scope(item[i]) && PunctAt(item, i + 1, ".")) {
      a->scope = item[i].text;
      i += 2;
    }
    if (a->scope.empty()) a->scope = "session";
  } else if (PunctAt(item, 0, "@")) {
    a->user = true;
    i = 1;
  }
  if (!NameAt(item, i)) return false;
  a->name = absl::AsciiStrToLower(item[i].text);
  ++i;
  if (!a->user && item[i - 1].kind == TokenKind::kWord) {
    if (a->name == "names" || a->name == "charset") {
      a->value = item.subspan(i);
      return true;
    }
    if (a->name == "character" && WordAt(item, i, "set")) {
      a->name = "character set";
      a->value = item.subspan(i + 1);
      return true;
    }
  }
  while (PunctAt(item, i, ".") && NameAt(item, i + 1)) {  // keycache1.key_buffer_size
    absl::StrAppend(&a->name, ".", absl::AsciiStrToLower(item[i + 1].text));
    i += 2;
  }
  if (!PunctAt(item, i, "=") && !PunctAt(item, i, ":=")) return false;
  a->value = item.subspan(i + 1);
  return true;
}

// NAMES / CHARACTER SET / character_set_* / collation_connection.
void CharsetAssignment(const Assignment& a, bool temporary, Context* ctx, StatementFacts* f) {
  Tokens v = a.value;
  std::string charset, collation;
  size_t collate = FindTopLevel(v, "collate");
  bool known = ConstantValue(v.subspan(0, collate), &charset) && !v[0].IsWord("default");
  if (collate < v.size()) known = known && ConstantValue(v.subspan(collate + 1), &collation);
  ctx->sensitive = true;
  if (!known || !LexableCharset(charset) || (!collation.empty() && !LexableCharset(collation))) {
    Unsafe(f, absl::StrCat("a character set other than utf8mb4, utf8mb3, latin1, ascii or binary ",
                           "(", a.name, "): the agent lexes statements in these only"));
    return;
  }
  if (!temporary) f->settings.push_back(SettingChange{a.name, absl::AsciiStrToLower(charset)});
}

// `concat(@@[session.]sql_mode, '<modes>', ...)`: the modes added (commas trimmed), or nullopt
// for any other expression.
std::optional<std::string> AddedSqlModes(Tokens v) {
  if (v.size() < 6 || !v[0].IsWord("concat") || !PunctAt(v, 1, "(") || !PunctAt(v, 2, "@@") ||
      !PunctAt(v, v.size() - 1, ")")) {
    return std::nullopt;
  }
  size_t i = 3;
  if (WordAt(v, i, "session") && PunctAt(v, i + 1, ".")) i += 2;
  if (!WordAt(v, i, "sql_mode")) return std::nullopt;
  std::string added;
  for (++i; i + 1 < v.size(); i += 2) {
    if (!PunctAt(v, i, ",") || v[i + 1].kind != TokenKind::kString) return std::nullopt;
    absl::StrAppend(&added, ",", v[i + 1].text);
  }
  if (i != v.size() - 1) return std::nullopt;
  return std::string(absl::StripAsciiWhitespace(
      absl::StripSuffix(absl::StripPrefix(absl::StripPrefix(added, ","), ","), ",")));
}

void SqlModeAssignment(const Assignment& a, bool temporary, Context* ctx, StatementFacts* f) {
  ctx->sensitive = true;
  if (a.value.size() == 1 && a.value[0].IsWord("default")) {
    if (!temporary) {
      f->settings.push_back(SettingChange{"sql_mode", "", true, true});
      ctx->changes_lexing = true;
    }
    return;
  }
  std::string value;
  if (std::optional<std::string> added = AddedSqlModes(a.value)) {
    // Connector/J's `sql_mode = concat(@@sql_mode, ',STRICT_TRANS_TABLES')`: the session's mode
    // and these; lexable when each added mode is (the session reads the result back).
    if (!LexModeFromSqlMode(*added, ctx->mode.mariadb_version).supported) {
      Unsafe(f, absl::StrCat("sql_mode with '", *added, "' added: the agent cannot lex it"));
      return;
    }
    if (!temporary) {
      f->settings.push_back(SettingChange{"sql_mode", "", false, false});
      ctx->changes_lexing = true;
    }
    return;
  }
  if (!ConstantValue(a.value, &value) || a.value.back().kind == TokenKind::kNumber) {
    Unsafe(f, "sql_mode set to an expression the agent cannot evaluate");
    return;
  }
  LexMode mode = LexModeFromSqlMode(value, ctx->mode.mariadb_version);
  if (!mode.supported) {
    Unsafe(f, absl::StrCat("sql_mode '", value, "': the agent cannot lex it"));
    return;
  }
  if (!temporary) {
    f->settings.push_back(SettingChange{"sql_mode", value});
    ctx->changes_lexing = ctx->changes_lexing || !(mode == ctx->mode);
  }
}

void ReadOnlyAssignment(const Assignment& a, bool temporary, Context* ctx, StatementFacts* f) {
  std::string value;
  bool known = ConstantValue(a.value, &value) && !a.value[0].IsWord("default");
  ctx->sensitive = true;
  if (known && Truthy(value)) {
    if (!temporary) f->settings.push_back(SettingChange{"tx_read_only", "1"});
    return;
  }
  Unsafe(f, absl::StrCat("SET ", a.name, ": it would make the session writable"));
  f->unsafe_lifts_read_only = true;
}

void Assign(const Assignment& a, bool temporary, Context* ctx, StatementFacts* f) {
  if (a.user) return;  // a user variable
  const bool global = a.scope == "global" || a.scope == "persist" || a.scope == "persist_only";
  const std::string& n = a.name;
  const bool charset = n == "names" || n == "character set" || n == "charset" ||
                       n == "character_set_client" || n == "character_set_connection" ||
                       n == "character_set_results" || n == "collation_connection";
  const bool sensitive_name =
      charset || n == "sql_mode" || n == "tx_read_only" || n == "transaction_read_only";
  if (global) return;  // does not change this session
  if (a.unclear && sensitive_name) {
    Unsafe(f, absl::StrCat("SET ", n, " after a GLOBAL one: which scope it has is not clear"));
    return;
  }
  if (charset) return CharsetAssignment(a, temporary, ctx, f);
  if (n == "sql_mode") return SqlModeAssignment(a, temporary, ctx, f);
  if (n == "tx_read_only" || n == "transaction_read_only") {
    return ReadOnlyAssignment(a, temporary, ctx, f);
  }
  if (temporary) return;
  std::string value;
  bool known = ConstantValue(a.value, &value);
  bool reset = a.value.size() == 1 && a.value[0].IsWord("default");
  if (known) ctx->sensitive = true;
  f->settings.push_back(
      SettingChange{n, reset ? "" : absl::AsciiStrToLower(value), reset, known || reset});
}

// The assignments of `items` (SET a = 1, GLOBAL b = 2, ...).
void Assignments(Tokens items, bool temporary, Context* ctx, StatementFacts* f) {
  bool after_global = false;
  for (Tokens item : SplitTopLevel(items, ",")) {
    Assignment a;
    if (!ReadAssignment(item, &a)) {
      f->cls = C::kUnknown;
      if (ctx->error.empty()) ctx->error = "a SET assignment that cannot be read";
      return;
    }
    a.unclear = a.scope.empty() && !a.user && after_global;
    if (a.scope == "global" || a.scope == "persist" || a.scope == "persist_only") {
      after_global = true;
      if (!temporary) {
        f->cls = C::kDdl;  // server administration
        f->kind = "SET GLOBAL";
      }
    }
    Assign(a, temporary, ctx, f);
  }
}

// SET [GLOBAL | SESSION] TRANSACTION characteristic, ...
void SetTransaction(Tokens t, size_t i, const std::string& scope, StatementFacts* f) {
  const bool global = scope == "global";
  f->cls = global ? C::kDdl : C::kOther;
  f->kind = global ? "SET GLOBAL TRANSACTION" : "SET TRANSACTION";
  for (; i < t.size(); ++i) {
    if (!t[i].IsWord("read")) continue;
    if (WordAt(t, i + 1, "write") && !global) {
      Unsafe(f, "SET TRANSACTION READ WRITE: it would make the session writable");
      f->unsafe_lifts_read_only = true;
    }
    if (WordAt(t, i + 1, "only") && (scope == "session" || scope == "local")) {
      f->settings.push_back(SettingChange{"tx_read_only", "1"});
    }
  }
}

// SET STATEMENT assignments FOR statement: the statement, run with the assignments in force.
void SetStatement(Tokens t, Context* ctx, StatementFacts* f) {
  size_t for_at = FindTopLevel(t, "for", 2);
  if (for_at >= t.size() - 1) {
    f->cls = C::kUnknown;
    if (ctx->error.empty()) ctx->error = "SET STATEMENT without FOR";
    return;
  }
  StatementFacts inner = Classify(t.subspan(for_at + 1), ctx);
  Assignments(t.subspan(2, for_at - 2), true, ctx, f);
  StatementClass cls = f->cls == C::kUnknown ? C::kUnknown : inner.cls;
  std::string unsafe = std::move(f->unsafe);
  bool lifts = f->unsafe_lifts_read_only;
  *f = std::move(inner);
  f->cls = std::max(f->cls, cls);
  if (!unsafe.empty()) f->unsafe = std::move(unsafe);
  f->unsafe_lifts_read_only = f->unsafe_lifts_read_only || lifts;
}

// A string constant (or _charset'...'): the text of PREPARE ... FROM / EXECUTE IMMEDIATE.
bool StringValue(Tokens v, std::string* text) {
  if (v.empty() || v.back().kind != TokenKind::kString) return false;
  return ConstantValue(v, text);
}

// The one statement of a PREPARE's or EXECUTE IMMEDIATE's text, as `f`; false when it is not one.
bool NestedStatement(Tokens value, const char* what, Context* ctx, StatementFacts* f) {
  std::string text;
  if (!StringValue(value, &text)) {
    f->cls = C::kUnknown;
    Unsafe(f, absl::StrCat(what, " of a variable or an expression: the agent cannot see the text"));
    if (ctx->error.empty()) ctx->error = f->unsafe;
    return false;
  }
  ctx->sensitive = true;
  StatementInfo inner = AnalyzeNested(text, ctx);
  if (inner.statements.size() != 1 || inner.overall == C::kUnknown) {
    f->cls = C::kUnknown;
    if (ctx->error.empty()) {
      ctx->error = inner.parse_error.empty() ? absl::StrCat(what, " of other than one statement")
                                             : absl::StrCat(what, ": ", inner.parse_error);
    }
    return false;
  }
  std::string kind = absl::StrCat(what, " ", inner.statements[0].kind);
  *f = std::move(inner.statements[0]);
  f->kind = std::move(kind);
  if (!f->settings.empty()) {
    // Run later by EXECUTE: a setting would change where the session cannot follow it.
    Unsafe(f, absl::StrCat(what, " of a SET: its effect comes later, out of the agent's sight"));
  }
  return true;
}

}  // namespace

void ClassifySet(Tokens t, Context* ctx, StatementFacts* f) {
  f->cls = C::kOther;
  f->kind = "SET";
  if (WordAt(t, 1, "statement")) return SetStatement(t, ctx, f);
  if (WordAt(t, 1, "password")) {
    f->cls = C::kDcl;
    f->kind = "SET PASSWORD";
    return;
  }
  if (WordAt(t, 1, "default") && WordAt(t, 2, "role")) {
    f->cls = C::kDcl;
    f->kind = "SET DEFAULT ROLE";
    return;
  }
  if (WordAt(t, 1, "role")) {
    f->kind = "SET ROLE";
    return;
  }
  if (WordAt(t, 1, "transaction")) return SetTransaction(t, 2, "", f);
  if (t.size() > 2 && Scope(t[1]) && WordAt(t, 2, "transaction")) {
    return SetTransaction(t, 3, t[1].text, f);
  }
  if (t.size() < 2) {
    f->cls = C::kUnknown;
    if (ctx->error.empty()) ctx->error = "SET without an assignment";
    return;
  }
  Assignments(t.subspan(1), false, ctx, f);
}

void ClassifyStart(Tokens t, Context* ctx, StatementFacts* f) {
  if (WordAt(t, 1, "transaction")) {
    f->cls = C::kOther;
    f->kind = "START TRANSACTION";
    for (size_t i = 2; i + 1 < t.size(); ++i) {
      if (t[i].IsWord("read") && t[i + 1].IsWord("write")) {
        Unsafe(f, "START TRANSACTION READ WRITE: it would make the session writable");
        f->unsafe_lifts_read_only = true;
      }
    }
    return;
  }
  for (absl::string_view w : {"slave", "replica", "all", "group_replication"}) {
    if (WordAt(t, 1, w)) {
      f->cls = C::kDdl;
      f->kind = absl::StrCat("START ", Upper(w));
      return;
    }
  }
  f->cls = C::kUnknown;
  f->kind = "START";
  if (ctx->error.empty()) ctx->error = "START of something not known";
}

void ClassifyPrepare(Tokens t, Context* ctx, StatementFacts* f) {
  f->kind = "PREPARE";
  if (!NameAt(t, 1) || !WordAt(t, 2, "from")) {
    f->cls = C::kUnknown;
    if (ctx->error.empty()) ctx->error = "PREPARE without FROM";
    return;
  }
  if (!NestedStatement(t.subspan(3), "PREPARE", ctx, f)) return;
  if (f->cls == C::kRead) f->cls = C::kOther;  // preparing a read reads nothing yet
}

void ClassifyExecute(Tokens t, Context* ctx, StatementFacts* f) {
  f->cls = C::kOther;
  f->kind = "EXECUTE";
  if (!WordAt(t, 1, "immediate")) return;  // EXECUTE s: what PREPARE s classified
  Tokens rest = t.subspan(2);
  NestedStatement(rest.subspan(0, FindTopLevel(rest, "using")), "EXECUTE IMMEDIATE", ctx, f);
}

}  // namespace sluice::agent::mysql::sql_analysis_internal
