// Masking of a MySQL session's answers (result_masking.h masks the rows; this decides what is
// masked and keeps masked values from leaving another way). The agent does not follow values
// through MySQL expressions, so it is conservative: a statement that names a table with masked
// columns has its computed columns masked whole, its error text withheld, and the warnings it
// leaves masked when SHOW WARNINGS reads them; values it would store beyond the statement (user
// variables) or run unseen (SQL-level PREPARE) are refused.
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/mysql/session_internal.h"

namespace sluice::agent::mysql::session_internal {

namespace {

constexpr char kWarningsRule[] = "(warnings of a statement reading masked columns)";

bool ShowsWarnings(const StatementInfo& info) {
  const absl::string_view n = info.shape.normalized;
  return absl::StartsWith(n, "show warnings") || absl::StartsWith(n, "show errors");
}

}  // namespace

bool KeepsWarnings(const StatementInfo& info) {
  return ShowsWarnings(info) || absl::StartsWith(info.shape.normalized, "show count") ||
         absl::StartsWith(info.shape.normalized, "get ");
}

namespace {

void AddRule(std::vector<std::string>* rules, const std::string& rule) {
  if (std::find(rules->begin(), rules->end(), rule) == rules->end()) rules->push_back(rule);
}

}  // namespace

std::string Session::MaskedMentions(absl::string_view sql, const StatementInfo& info) const {
  std::vector<std::string> tables;
  for (const StatementFacts& f : info.statements) {
    for (const session::Relation& r : f.relations) {
      if (!r.table.empty() && masking_.ForAnyColumnOf(r.table) &&
          std::find(tables.begin(), tables.end(), r.table) == tables.end()) {
        tables.push_back(r.table);
      }
    }
  }
  if (tables.empty()) return "";
  // A value leaves a table only through a column the text names, or through `*`.
  LexResult lexed = Lex(sql, lex_mode_);
  if (!lexed.error.empty()) return absl::StrJoin(tables, ", ");
  const std::vector<Token>& t = lexed.tokens;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].IsPunct("*")) {
      const bool count_star = i >= 2 && t[i - 1].IsPunct("(") && t[i - 2].IsWord("count") &&
                              i + 1 < t.size() && t[i + 1].IsPunct(")");
      if (!count_star) return absl::StrJoin(tables, ", ");
      continue;
    }
    if (t[i].kind != TokenKind::kWord && t[i].kind != TokenKind::kQuoted) continue;
    if (masking_.ForLabel(t[i].text)) return absl::StrJoin(tables, ", ");
    for (const std::string& table : tables) {
      if (masking_.ForColumn(table, t[i].text)) return absl::StrJoin(tables, ", ");
    }
  }
  return "";
}

ResultMasking Session::MaskingFor(absl::string_view sql, const StatementInfo& info, bool binary) {
  ResultMasking m;
  if (masking_.empty()) return m;
  m.on = true;
  m.binary = binary;
  m.masked_tables = MaskedMentions(sql, info);
  m.withhold_messages = !m.masked_tables.empty();
  // Computed columns are masked by the tables the statement reads only when it can carry their
  // masked values at all: when it names a masked column (or `*`).
  for (const StatementFacts& f : info.statements) {
    if (m.withhold_messages) {
      for (const session::Relation& r : f.relations) m.relations.push_back(r);
    }
    for (const std::string& d : f.defined_names) m.defined_names.push_back(d);
  }
  m.redact_all = warnings_may_quote_ && ShowsWarnings(info);
  return m;
}

std::string Session::Unmaskable(absl::string_view sql, const StatementInfo& info) const {
  if (!masking_.has_column_rules()) return "";
  for (const StatementFacts& f : info.statements) {
    if (f.kind == "PREPARE" || f.kind == "EXECUTE" || f.kind == "EXECUTE IMMEDIATE") {
      return "a statement prepared with SQL PREPARE runs where the agent cannot trace its "
             "columns to their tables; use the client's prepared statements (COM_STMT_PREPARE)";
    }
    if (f.kind == "GET" && warnings_may_quote_) {
      return "the diagnostics of the previous statement could quote masked values";
    }
  }
  const bool assigns =
      std::any_of(info.statements.begin(), info.statements.end(),
                  [](const StatementFacts& f) { return f.assigns_user_variables; });
  if (!assigns) return "";
  const std::string masked = MaskedMentions(sql, info);
  if (masked.empty()) return "";
  return absl::StrCat("it stores values read from ", masked,
                      " (masked columns) in user variables, which a later statement could read "
                      "back unmasked");
}

absl::Status Session::MaskingColumn(absl::string_view payload, bool last, ResultMasking* m) {
  auto def = wire::mysql::ColumnDefinition::Decode(payload);
  if (!def.ok()) return def.status();
  m->columns.push_back(*std::move(def));
  if (!last) return absl::OkStatus();
  m->plan = PlanResult(m->columns, m->relations, masking_, m->defined_names);
  if (m->redact_all) {
    for (ColumnPlan& c : m->plan.columns) {
      c.kind = ColumnPlan::kWhole;
      c.strategy = v1::MASKING_STRATEGY_REDACT;
    }
    m->plan.active = true;
    AddRule(&m->plan.rules, kWarningsRule);
  }
  for (const std::string& r : m->plan.rules) AddRule(&m->rules, r);
  return absl::OkStatus();
}

absl::Status Session::RelayMaskedRow(const wire::mysql::DecodeResult& r, ResultMasking* m) {
  auto changed = m->binary ? MaskBinaryRow(r.packet.payload, m->plan, masking_, &m->masked)
                           : MaskTextRow(r.packet.payload, m->plan, masking_, &m->masked);
  if (!changed.ok()) {
    return absl::InternalError(
        absl::StrCat("a result row could not be masked: ", changed.status().message()));
  }
  const absl::string_view sent = *changed ? absl::string_view(m->masked) : r.packet.payload;
  recorder_.ToClient(m->binary ? kRecordedBinaryRow : kRecordedTextRow, sent);
  if (*changed) ++m->masked_rows;
  RelayPacket(r, *changed ? sent : absl::string_view());
  return absl::OkStatus();
}

void Session::RelayMaskedError(const wire::mysql::DecodeResult& r, const ResultMasking& m) {
  auto err = wire::mysql::ErrPacket::Decode(r.packet.payload);
  std::string replacement;
  if (err.ok() && m.withhold_messages) {
    err->message = absl::StrCat(
        "Sluice: the server's error text is withheld: the statement reads tables with masked "
        "columns (",
        m.masked_tables, "), and the text could quote their values");
    replacement = err->Encode();
  } else if (err.ok()) {
    std::string masked;
    if (masking_.MaskText(err->message, &masked) != masking::MaskingPolicy::Outcome::kUnchanged) {
      err->message = masked;
      replacement = err->Encode();
    }
  }
  recorder_.ToClient(kRecordedErr, replacement.empty() ? r.packet.payload : replacement);
  RelayPacket(r, replacement);
}

void Session::MaskingDone(const ResultMasking& m, bool show_warnings, Answer* answer) {
  if (!m.on) return;
  answer->masked_by = absl::StrJoin(m.rules, ",");
  answer->masked_rows = m.masked_rows;
  // SHOW WARNINGS reads the warnings; any other statement replaces them.
  if (!show_warnings) warnings_may_quote_ = m.withhold_messages;
}

void Session::RelayPacket(const wire::mysql::DecodeResult& r, absl::string_view replacement) {
  if (replacement.empty() && seq_shift_ == 0) {
    PassThrough(r.packet.wire_size);
    return;
  }
  const absl::string_view payload = replacement.empty() ? r.packet.payload : replacement;
  const uint8_t first = static_cast<uint8_t>(r.packet.sequence + seq_shift_);
  const size_t packets_in = r.packet.payload.size() / wire::mysql::kMaxPayloadPerPacket + 1;
  const size_t packets_out = payload.size() / wire::mysql::kMaxPayloadPerPacket + 1;
  wire::mysql::EncodePacket(payload, first, &out_);
  seq_shift_ += static_cast<int>(packets_out) - static_cast<int>(packets_in);
  upstream_.stream->Consume(r.packet.wire_size);
}

}  // namespace sluice::agent::mysql::session_internal
