#include <algorithm>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/postgres/lineage_masking.h"
#include "agent/postgres/refusal.h"
#include "agent/postgres/session_internal.h"
#include "agent/postgres/session_settings.h"
#include "common/sql/lexer.h"

namespace sluice::agent::postgres::session_internal {

namespace {

// Whether `sql` has the word COPY in any case (a cheap test before parsing for COPY options).
bool MentionsCopy(absl::string_view sql) {
  for (size_t i = 0; i + 4 <= sql.size(); ++i) {
    if ((sql[i] | 0x20) == 'c' && absl::EqualsIgnoreCase(sql.substr(i, 4), "copy")) return true;
  }
  return false;
}

}  // namespace

Session::Action Session::DecideFunctionCall(
    uint32_t oid, const absl::StatusOr<std::optional<FunctionNames>>& function) {
  FollowPolicy();
  session::Decision d = JudgeFunctionCall(oid, function);
  if (const auto* refused = std::get_if<session::Refuse>(&d)) {
    expected_.push_back(Expectation{StatementError(*refused), true, false});
    return Action::kSubstitute;
  }
  expected_.push_back(Expectation{});
  return Action::kForward;
}

session::Decision Session::JudgeFunctionCall(
    uint32_t oid, const absl::StatusOr<std::optional<FunctionNames>>& function) {
  std::string name = function.ok() && function->has_value()
                         ? absl::StrCat((*function)->schema, ".", (*function)->name)
                         : absl::StrCat("OID ", oid);
  function_text_ = absl::StrCat("FunctionCall ", name, " (OID ", oid, ")");
  auto refuse = [&](RefusalKind kind, absl::string_view problem) {
    session::Decision refused = gate_.Refusal(kind, problem);
    Record(refused, function_text_, nullptr, false);
    return refused;
  };
  if (!function.ok()) {
    return refuse(RefusalKind::kUpstreamUnavailable,
                  absl::StrCat("the agent could not look up the function it calls: ",
                               function.status().message()));
  }
  if (!function->has_value())
    return refuse(RefusalKind::kUnknownFunction, absl::StrCat("no function has OID ", oid));
  const FunctionNames& f = **function;
  const std::string lower = absl::AsciiStrToLower(f.name);
  const auto& from_string = SqlFromStringFunctions();
  if (lower == "set_config" ||
      std::find(from_string.begin(), from_string.end(), lower) != from_string.end()) {
    return refuse(RefusalKind::kNotSupported,
                  absl::StrCat("a FunctionCall of ", name,
                               " is not accepted (the agent cannot see what it changes or runs); "
                               "call it with SELECT"));
  }
  if (masking_.has_column_rules()) {
    return refuse(RefusalKind::kUnmaskable,
                  "results are masked on this connection, and a FunctionCall's result cannot be "
                  "masked by column; "
                  "call the function with SELECT");
  }
  StatementInfo info;
  info.statements.emplace_back();
  StatementFacts& facts = info.statements.back();
  facts.cls = f.volatility == 'v' ? StatementClass::kWrite : StatementClass::kRead;
  facts.kind = "FunctionCall";
  facts.functions.push_back(lower);
  info.overall = facts.cls;
  GuardrailDecision guardrail = guardrails_.Decide(info);
  session::StatementSummary summary = Summary(info);
  summary.guardrail = &guardrail;
  summary.holdable = false;
  session::Decision d = gate_.Decide(summary);
  if (auto* refused = std::get_if<session::Refuse>(&d);
      refused && refused->kind == RefusalKind::kApprovalUnavailable) {
    // A FunctionCall cannot wait for approvers: it is told so, and how to call the function
    // instead.
    refused->message = absl::StrCat(
        "Sluice: a FunctionCall needs approval under guardrail \"", guardrail.guardrail, "\" (",
        guardrail.match, "), and a FunctionCall cannot be held; call the function ", "with SELECT");
  }
  Record(d, function_text_, &info, false);
  return d;
}

session::Decision Session::CheckCopy(absl::string_view sql, bool extended) {
  if (!MentionsCopy(sql) || !MaskingOn()) return session::Allow{};
  for (const CopyOutFacts& f : CopyOutputs(sql)) {
    std::string why;
    if (f.binary) {
      why = "binary COPY output cannot be masked; use the text or csv format";
    } else if (!f.problem.empty()) {
      why = absl::StrCat("its COPY options cannot be read (", f.problem, ")");
    } else if (f.query && masking_.has_column_rules()) {
      why =
          "the columns of COPY (query) TO STDOUT cannot be resolved for masking by column; COPY a "
          "table, or use SELECT";
    }
    if (why.empty()) continue;
    session::Refuse refused;
    refused.kind = RefusalKind::kUnmaskable;
    refused.message = absl::StrCat("Sluice: statement refused on connection \"", connection_name_,
                                   "\", where results are masked: ", why);
    session::Decision d = std::move(refused);
    Record(d, sql, &Statements().Get(sql), extended);
    return d;
  }
  return session::Allow{};
}

session::Decision Session::CheckWithCopy(absl::string_view sql, bool extended) {
  session::Decision d = Check(sql, extended);
  if (std::holds_alternative<session::Refuse>(d)) return d;
  session::Decision copy = CheckCopy(sql, extended);
  return std::holds_alternative<session::Refuse>(copy) ? copy : d;
}

session::Decision Session::Check(absl::string_view sql, bool extended, bool parsing) {
  FollowPolicy();
  const bool read_only = gate_.read_only();
  const bool settings = MayChangeSettings(sql);
  const bool lexing = parsing && sql::DependsOnStandardConformingStrings(sql);
  const bool masked = masking_.has_column_rules();
  if (!read_only && guardrails_.empty() && !settings && !lexing && !masked) return session::Allow{};
  const StatementInfo& info = Statements().Get(sql);
  session::StatementSummary summary = Summary(info);
  SettingsVerdict verdict;
  if (lexing && RequestsInFlight()) {
    // The agent read it with standard_conforming_strings on, which the server confirms only
    // when nothing sent before could have changed it since (see session_settings.h).
    summary.unsafe =
        "it has a '...' string constant with a backslash, which the server reads differently when "
        "standard_conforming_strings is off, and statements sent before it in the same pipeline "
        "have not "
        "finished (they could change that setting); send it after their results, or write the "
        "constant as "
        "E'...' or $$...$$";
  } else if (settings) {
    verdict = SettingsProblem(info, read_only);
    summary.unsafe = verdict.problem;
    summary.unsafe_lifts_read_only = verdict.lifts_read_only;
  }
  std::string unmaskable;
  if (masked) {
    // Masked values leave only as result columns the agent masks (lineage_masking.h).
    unmaskable = info.parse_error.empty()
                     ? JudgeLineage(info, masking_).refusal
                     : absl::StrCat("the agent cannot parse it (", info.parse_error,
                                    "), so it cannot tell which masked values it would return");
    summary.unmaskable = unmaskable;
  }
  GuardrailDecision guardrail = guardrails_.Decide(info);
  summary.guardrail = &guardrail;
  session::Decision d = gate_.Decide(summary);
  Record(d, sql, &info, extended);
  return d;
}

session::StatementSummary Session::Summary(const StatementInfo& info) {
  session::StatementSummary s;
  s.cls = info.overall;
  s.kind = info.deciding_kind();
  s.parse_error = info.parse_error;
  return s;
}

void Session::Record(const session::Decision& d, absl::string_view sql, const StatementInfo* info,
                     bool extended) {
  if (const auto* refused = std::get_if<session::Refuse>(&d)) {
    audit_.StatementRefused(EventText(sql, info, extended), *refused,
                            StatementSqlState(refused->kind));
  } else if (const auto* alert = std::get_if<session::Alert>(&d)) {
    audit_.Alerted(EventText(sql, info, extended), alert->guardrail);
  }
}

void Session::RefreshPolicy(uint64_t generation) {
  policy_generation_ = generation;
  auto current = deps_.policy->Get();
  if (!current) return;
  const v1::Connection& started_on = *admission_.connection();
  const v1::Connection* found = current->FindConnection(started_on.name(), v1::PROTOCOL_POSTGRES);
  const v1::Connection& c = found != nullptr ? *found : started_on;
  guardrails_ = GuardrailSet(current->snapshot, c);
  masking_ = masking::MaskingPolicy(current->snapshot, c, identity_.issuer, identity_.subject,
                                    identity_.groups);
  plan_cache_.clear();
  guardrails_policy_ = std::move(current);
}

}  // namespace sluice::agent::postgres::session_internal
