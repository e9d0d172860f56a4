// The MySQL / MariaDB statement analysis (sql_analysis.h): splitting a lexed text into its
// statements, the text-wide facts, and the shape cache. One statement is classified in
// sql_classify*.cc.
#include "agent/mysql/sql_analysis.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/mysql/sql_analysis_internal.h"
#include "common/crypto.h"

namespace sluice::agent::mysql {
namespace {

using sql_analysis_internal::Context;
using sql_analysis_internal::Tokens;

sql::Shape ShapeOf(std::string normalized, StatementClass overall) {
  sql::Shape shape;
  shape.fingerprint = Sha256Hex(normalized).substr(0, 16);
  shape.normalized = std::move(normalized);
  shape.classification = ClassName(overall);
  return shape;
}

StatementInfo Unclassifiable(std::string why) {
  StatementInfo info;
  info.overall = StatementClass::kUnknown;
  info.parse_error = std::move(why);
  info.statements.emplace_back();  // one unclassifiable statement
  return info;
}

// Unqualified tables after `USE db` in the same text are in db (the server runs the statements
// in order, and stops at the first that fails).
void Qualify(const std::string& database, StatementFacts* f) {
  if (database.empty()) return;
  for (Relation& r : f->relations) {
    if (r.schema.empty() && !r.table.empty()) r.schema = database;
  }
}

StatementInfo AnalyzeLexed(const LexResult& lexed, const LexMode& mode, int depth) {
  if (!lexed.error.empty()) return Unclassifiable(lexed.error);
  StatementInfo info;
  Tokens all(lexed.tokens);
  std::string database;
  bool lexing_changed = false;
  size_t start = 0;
  for (size_t i = 0; i <= all.size(); ++i) {
    if (i < all.size() && !all[i].IsPunct(";")) continue;
    Tokens t = all.subspan(start, i - start);
    start = i + 1;
    if (t.empty()) continue;
    Context ctx;
    ctx.mode = mode;
    ctx.depth = depth;
    StatementFacts f;
    if (lexing_changed) {
      // The server lexes what follows in the new mode; this text was lexed in the old one.
      ctx.error = "a statement after a change of sql_mode in the same text";
    } else {
      f = sql_analysis_internal::Classify(t, &ctx);
    }
    Qualify(database, &f);
    if (!f.database.empty()) database = f.database;
    lexing_changed = lexing_changed || ctx.changes_lexing;
    for (const SettingChange& s : f.settings) {
      if (s.name == "sql_mode") info.changes_sql_mode = true;
    }
    info.literal_sensitive = info.literal_sensitive || ctx.sensitive;
    if (f.cls == StatementClass::kUnknown && info.parse_error.empty()) {
      info.parse_error = ctx.error.empty() ? "the statement cannot be classified" : ctx.error;
    }
    if (info.unsafe.empty()) info.unsafe = f.unsafe;
    info.unsafe_lifts_read_only = info.unsafe_lifts_read_only || f.unsafe_lifts_read_only;
    info.overall = std::max(info.overall, f.cls);
    info.statements.push_back(std::move(f));
  }
  return info;
}

std::string ModeKey(const LexMode& mode) {
  return absl::StrCat(mode.ansi_quotes ? "q" : "-", mode.no_backslash_escapes ? "b" : "-",
                      mode.mariadb_version, "|");
}

}  // namespace

namespace sql_analysis_internal {

StatementInfo AnalyzeNested(absl::string_view sql, Context* ctx) {
  if (ctx->depth >= 1) return Unclassifiable("a prepared statement inside a prepared statement");
  if (sql.size() > kMaxParseBytes) return Unclassifiable("a nested text over the size cap");
  return AnalyzeLexed(Lex(sql, ctx->mode), ctx->mode, ctx->depth + 1);
}

}  // namespace sql_analysis_internal

const std::vector<std::string>& DangerousFunctions() {
  static const auto* f = new std::vector<std::string>{"load_file",
                                                      "sys_exec",
                                                      "sys_eval",
                                                      "sys_get",
                                                      "sys_set",
                                                      "benchmark",
                                                      "get_lock",
                                                      "release_lock",
                                                      "release_all_locks",
                                                      "master_pos_wait",
                                                      "master_gtid_wait",
                                                      "source_pos_wait",
                                                      "wait_for_executed_gtid_set"};
  return *f;
}

const std::vector<std::string>& WritingFunctions() {
  static const auto* f =
      new std::vector<std::string>{"get_lock", "release_lock", "release_all_locks", "sys_exec",
                                   "sys_eval", "sys_set",      "nextval",           "setval"};
  return *f;
}

absl::string_view StatementInfo::deciding_kind() const {
  return session::DecidingKind(statements, overall);
}

StatementInfo AnalyzeStatement(absl::string_view sql, const LexMode& mode) {
  if (sql.size() > kMaxParseBytes) {
    StatementInfo info = Unclassifiable(
        absl::StrCat("statement longer than ", kMaxParseBytes, " bytes is not analyzed"));
    info.shape =
        ShapeOf(Lex(sql.substr(0, sql::kMaxLexBytes), mode).normalized, StatementClass::kUnknown);
    return info;
  }
  LexResult lexed = Lex(sql, mode);
  StatementInfo info = AnalyzeLexed(lexed, mode, 0);
  info.shape = ShapeOf(std::move(lexed.normalized), info.overall);
  return info;
}

const StatementInfo& StatementCache::Get(absl::string_view sql, const LexMode& mode) {
  constexpr size_t kMaxKeyBytes = 8192;
  if (sql.size() > kMaxParseBytes) {
    uncached_ = AnalyzeStatement(sql, mode);
    return uncached_;
  }
  LexResult lexed = Lex(sql, mode);
  std::string key = ModeKey(mode) + lexed.normalized;
  const bool keyable = lexed.error.empty() && key.size() <= kMaxKeyBytes;
  if (keyable) {
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  StatementInfo info = AnalyzeLexed(lexed, mode, 0);
  info.shape = ShapeOf(std::move(lexed.normalized), info.overall);
  // Neither what could not be classified (one caller's malformed text must not decide how
  // another's is treated) nor what a literal decided is kept.
  if (!keyable || !info.parse_error.empty() || info.literal_sensitive ||
      cache_.size() >= max_entries_) {
    uncached_ = std::move(info);
    return uncached_;
  }
  return cache_.emplace(std::move(key), std::move(info)).first->second;
}

}  // namespace sluice::agent::mysql
