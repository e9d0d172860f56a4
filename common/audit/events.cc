#include "common/audit/events.h"

#include <string.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/audit/legacy_refusal.h"
#include "common/json_writer.h"

namespace sluice::audit {
namespace {

using Json = nlohmann::json;

// Every kind with its name, in declaration order (the enum's values index it).
constexpr std::array<std::pair<RefusalKind, absl::string_view>, 21> kKinds = {{
    {RefusalKind::kNone, ""},
    {RefusalKind::kTokenRejected, "token_rejected"},
    {RefusalKind::kNoAccessRule, "no_access_rule"},
    {RefusalKind::kTlsRequired, "tls_required"},
    {RefusalKind::kUnknownConnection, "unknown_connection"},
    {RefusalKind::kSessionLimit, "session_limit"},
    {RefusalKind::kAuditUnavailable, "audit_unavailable"},
    {RefusalKind::kUpstreamUnavailable, "upstream_unavailable"},
    {RefusalKind::kNotSupported, "not_supported"},
    {RefusalKind::kProtocolError, "protocol_error"},
    {RefusalKind::kUnsafeSetting, "unsafe_setting"},
    {RefusalKind::kReadOnly, "read_only"},
    {RefusalKind::kUnmaskable, "unmaskable"},
    {RefusalKind::kUnknownFunction, "unknown_function"},
    {RefusalKind::kGuardrailBlocked, "guardrail_blocked"},
    {RefusalKind::kApprovalDenied, "approval_denied"},
    {RefusalKind::kApprovalTimedOut, "approval_timed_out"},
    {RefusalKind::kApprovalUnavailable, "approval_unavailable"},
    {RefusalKind::kCancelled, "cancelled"},
    {RefusalKind::kNotOwner, "not_owner"},
    {RefusalKind::kOther, "other"},
}};

constexpr bool IndexedByKind() {
  for (size_t i = 0; i < kKinds.size(); ++i) {
    if (static_cast<size_t>(kKinds[i].first) != i) return false;
  }
  return kKinds.size() == static_cast<size_t>(RefusalKind::kOther) + 1;
}
static_assert(IndexedByKind(), "kKinds lists every RefusalKind in declaration order");

// ---- Reading: lenient (events.h) ----

Json Parse(absl::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  return j.is_object() ? j : Json::object();
}

const Json* Find(const Json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::string Str(const Json& j, const char* key) {
  const Json* v = Find(j, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

int64_t Int(const Json& j, const char* key) {
  const Json* v = Find(j, key);
  return v != nullptr && v->is_number_integer() ? v->get<int64_t>() : 0;
}

uint64_t UInt(const Json& j, const char* key) {
  const Json* v = Find(j, key);
  return v != nullptr && v->is_number_unsigned() ? v->get<uint64_t>() : 0;
}

bool Bool(const Json& j, const char* key) {
  const Json* v = Find(j, key);
  return v != nullptr && v->is_boolean() && v->get<bool>();
}

std::optional<bool> OptionalBool(const Json& j, const char* key) {
  const Json* v = Find(j, key);
  if (v == nullptr || !v->is_boolean()) return std::nullopt;
  return v->get<bool>();
}

// Milliseconds (a number, as `duration_ms` is written) as microseconds.
int64_t Micros(const Json& j, const char* key) {
  const Json* v = Find(j, key);
  return v != nullptr && v->is_number() ? std::llround(v->get<double>() * 1000) : 0;
}

// The kind an event names in `refusal_kind`; nullopt when it names none (an event of an agent older
// than `refusal_kind`: the caller decodes it from what that agent wrote).
std::optional<RefusalKind> GivenKind(const Json& j) {
  const Json* v = Find(j, "refusal_kind");
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return RefusalKindFromName(v->get<std::string>());
}

Who ReadWho(const Json& j) {
  Who w;
  w.connection = Str(j, "connection");
  w.client_addr = Str(j, "client_addr");
  w.tls = Bool(j, "tls");
  w.user = Str(j, "user");
  w.subject = Str(j, "subject");
  w.issuer = Str(j, "issuer");
  if (const Json* g = Find(j, "groups"); g != nullptr && g->is_array()) {
    for (const Json& x : *g) {
      if (x.is_string()) w.groups.push_back(x.get<std::string>());
    }
  }
  if (const Json* a = Find(j, "attribution"); a != nullptr && a->is_object()) {
    for (auto it = a->begin(); it != a->end(); ++it) {
      if (it.value().is_string()) w.attribution[it.key()] = it.value().get<std::string>();
    }
  }
  return w;
}

StatementText ReadText(const Json& j) {
  StatementText t;
  t.statement = Str(j, "statement");
  t.truncated = Bool(j, "truncated");
  t.fingerprint = Str(j, "fingerprint");
  t.classification = Str(j, "classification");
  t.query_protocol = Str(j, "protocol");
  return t;
}

GuardrailHit ReadGuardrail(const Json& j) {
  return GuardrailHit{Str(j, "guardrail"), Str(j, "match"), Str(j, "action"), Str(j, "target"),
                      Str(j, "approval_policy")};
}

// ---- Writing ----

void WriteWho(JsonObjectWriter& w, const Who& who) {
  std::string groups = "[";
  for (size_t i = 0; i < who.groups.size(); ++i) {
    if (i > 0) groups.push_back(',');
    AppendJsonString(&groups, who.groups[i]);
  }
  groups.push_back(']');
  std::string attribution = "{";
  for (const auto& [k, v] : who.attribution) {
    if (attribution.size() > 1) attribution.push_back(',');
    AppendJsonString(&attribution, k);
    attribution.push_back(':');
    AppendJsonString(&attribution, v);
  }
  attribution.push_back('}');
  w.Str("connection", who.connection)
      .Str("client_addr", who.client_addr)
      .Bool("tls", who.tls)
      .Str("user", who.user)
      .Str("subject", who.subject)
      .Str("issuer", who.issuer)
      .Raw("groups", groups)
      .Raw("attribution", attribution);
}

void WriteText(JsonObjectWriter& w, const StatementText& t) {
  w.Str("statement", t.statement);
  if (t.truncated) w.Bool("truncated", true);
  if (!t.fingerprint.empty()) w.Str("fingerprint", t.fingerprint);
  if (!t.classification.empty()) w.Str("classification", t.classification);
  if (!t.query_protocol.empty()) w.Str("protocol", t.query_protocol);
}

void WriteGuardrail(JsonObjectWriter& w, const GuardrailHit& g) {
  w.Str("guardrail", g.guardrail).Str("match", g.match).Str("action", g.action);
  if (!g.target.empty()) w.Str("target", g.target);
  if (!g.approval_policy.empty()) w.Str("approval_policy", g.approval_policy);
}

void WriteKind(JsonObjectWriter& w, RefusalKind kind) {
  if (kind != RefusalKind::kNone) w.Str("refusal_kind", RefusalKindName(kind));
}

}  // namespace

absl::string_view RefusalKindName(RefusalKind kind) {
  const size_t i = static_cast<size_t>(kind);
  return i < kKinds.size() ? kKinds[i].second : "other";
}

RefusalKind RefusalKindFromName(absl::string_view name) {
  for (const auto& [kind, n] : kKinds) {
    if (n == name) return kind;
  }
  return RefusalKind::kOther;
}

std::vector<RefusalKind> AllRefusalKinds() {
  std::vector<RefusalKind> out;
  for (const auto& [kind, name] : kKinds) {
    if (kind != RefusalKind::kNone) out.push_back(kind);
  }
  return out;
}

// ---- session_start ----

void SessionStartEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  WriteWho(w, who);
  w.Str("access", access).Str("rule", rule).Str("protocol", protocol_version);
  w.Str("application_name", application_name);
  if (!tls_version.empty()) w.Str("tls_version", tls_version).Str("tls_cipher", tls_cipher);
  if (upstream_tls.has_value()) w.Bool("upstream_tls", *upstream_tls);
  if (!upstream_tls_version.empty()) {
    w.Str("upstream_tls_version", upstream_tls_version)
        .Str("upstream_tls_cipher", upstream_tls_cipher);
  }
  w.Str("token_alg", token_alg).Int("token_expires_unix", token_expires_unix);
  if (token_issued_unix != 0) w.Int("token_issued_unix", token_issued_unix);
  if (!protocol.empty()) w.Str("connection_protocol", protocol);
  if (!upstream_user.empty()) w.Str("upstream_user", upstream_user);
  w.Close();
}

SessionStartEvent SessionStartEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  SessionStartEvent e;
  e.protocol = Str(j, "connection_protocol");
  e.who = ReadWho(j);
  e.access = Str(j, "access");
  e.rule = Str(j, "rule");
  e.protocol_version = Str(j, "protocol");
  e.application_name = Str(j, "application_name");
  e.tls_version = Str(j, "tls_version");
  e.tls_cipher = Str(j, "tls_cipher");
  e.upstream_tls = OptionalBool(j, "upstream_tls");
  e.upstream_tls_version = Str(j, "upstream_tls_version");
  e.upstream_tls_cipher = Str(j, "upstream_tls_cipher");
  e.upstream_user = Str(j, "upstream_user");
  e.token_alg = Str(j, "token_alg");
  e.token_expires_unix = Int(j, "token_expires_unix");
  e.token_issued_unix = Int(j, "token_issued_unix");
  return e;
}

// ---- session_refused ----

void SessionRefusedEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  WriteWho(w, who);
  w.Str("reason", reason);
  if (!sqlstate.empty()) w.Str("sqlstate", sqlstate);
  // Older control planes told a session limit from a full spool (both 53300) by this field.
  if (refusal_kind == RefusalKind::kSessionLimit) w.Str("refusal", RefusalKindName(refusal_kind));
  w.Str("refusal_kind",
        RefusalKindName(refusal_kind == RefusalKind::kNone ? RefusalKind::kOther : refusal_kind));
  if (!detail.empty()) w.Str("detail", detail);
  if (!protocol.empty()) w.Str("connection_protocol", protocol);
  w.Close();
}

SessionRefusedEvent SessionRefusedEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  SessionRefusedEvent e;
  e.protocol = Str(j, "connection_protocol");
  e.who = ReadWho(j);
  e.reason = Str(j, "reason");
  e.sqlstate = Str(j, "sqlstate");
  e.detail = Str(j, "detail");
  if (auto kind = GivenKind(j)) {
    e.refusal_kind = *kind;
  } else {
    legacy::SessionRefusal old =
        legacy::DecodeSessionRefusal(Str(j, "refusal"), e.sqlstate, e.reason);
    e.refusal_kind = old.kind;
    if (e.detail.empty()) e.detail = std::move(old.detail);
  }
  return e;
}

// ---- session_end ----

void SessionEndEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  w.Str("reason", reason);
  if (totals) {
    w.Millis("duration_ms", totals->duration_us)
        .Int("statements", totals->statements)
        .Int("bytes_from_client", totals->bytes_from_client)
        .Int("bytes_from_server", totals->bytes_from_server);
  }
  w.Close();
}

SessionEndEvent SessionEndEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  SessionEndEvent e;
  e.reason = Str(j, "reason");
  if (Find(j, "duration_ms") != nullptr) {
    e.totals = SessionTotals{Micros(j, "duration_ms"), Int(j, "statements"),
                             Int(j, "bytes_from_client"), Int(j, "bytes_from_server")};
  }
  return e;
}

// ---- statement ----

void StatementText::SetStatement(absl::string_view sql) {
  statement.assign(sql.data(), std::min(sql.size(), kMaxStatementBytes));
  truncated = sql.size() > kMaxStatementBytes;
}

void StatementEvent::Clear() {
  text.statement.clear();
  text.truncated = false;
  text.fingerprint.clear();
  text.classification.clear();
  text.query_protocol.clear();
  rows = bytes = duration_us = masked_rows = 0;
  command_tags.clear();
  sqlstate.clear();
  error.clear();
  suspended = false;
  masked_by.clear();
  decision.clear();
  refusal_kind = RefusalKind::kNone;
  reason.clear();
  guardrail.guardrail.clear();
  guardrail.match.clear();
  guardrail.action.clear();
  guardrail.target.clear();
  guardrail.approval_policy.clear();
  outcome.clear();
  text_not_kept = false;
}

void StatementEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  WriteText(w, text);
  if (!outcome.empty()) {
    w.Str("outcome", outcome).Str("error", error);
    if (text_not_kept) w.Bool("text_not_kept", true);
  } else if (decision.empty()) {
    w.Int("rows", rows).Int("bytes", bytes).Millis("duration_ms", duration_us);
    if (!command_tags.empty()) w.Str("command_tags", command_tags);
    if (!sqlstate.empty()) w.Str("sqlstate", sqlstate);
    if (!error.empty()) w.Str("error", error);
    if (suspended) w.Bool("suspended", true);
    if (masked_rows > 0) w.Str("masked_by", masked_by).Int("masked_rows", masked_rows);
  } else {
    w.Str("decision", decision);
    if (!guardrail.guardrail.empty()) WriteGuardrail(w, guardrail);
    w.Str("reason", reason);
    if (!sqlstate.empty()) w.Str("sqlstate", sqlstate);
    WriteKind(w, refusal_kind);
  }
  w.Close();
}

StatementEvent StatementEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  StatementEvent e;
  e.text = ReadText(j);
  e.rows = Int(j, "rows");
  e.bytes = Int(j, "bytes");
  e.duration_us = Micros(j, "duration_ms");
  e.command_tags = Str(j, "command_tags");
  e.sqlstate = Str(j, "sqlstate");
  e.error = Str(j, "error");
  e.suspended = Bool(j, "suspended");
  e.masked_by = Str(j, "masked_by");
  e.masked_rows = Int(j, "masked_rows");
  e.decision = Str(j, "decision");
  e.reason = Str(j, "reason");
  e.guardrail = ReadGuardrail(j);
  e.outcome = Str(j, "outcome");
  e.text_not_kept = Bool(j, "text_not_kept");
  auto kind = GivenKind(j);
  e.refusal_kind = kind ? *kind : legacy::DecodeStatementRefusal(e.decision, e.sqlstate, e.reason);
  return e;
}

// ---- alert ----

void AlertEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  WriteText(w, text);
  w.Str("decision", kDecision);
  WriteGuardrail(w, guardrail);
  w.Close();
}

AlertEvent AlertEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  return AlertEvent{ReadText(j), ReadGuardrail(j)};
}

// ---- approval ----

void ApprovalEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  WriteText(w, text);
  w.Str("decision", decision)
      .Int("approval_id", approval_id)
      .Str("guardrail", guardrail)
      .Str("match", match)
      .Str("approval_policy", approval_policy)
      .Str("approvers", absl::StrJoin(approvers, ","))
      .Str("reason", reason);
  WriteKind(w, refusal_kind);
  w.Close();
}

ApprovalEvent ApprovalEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  ApprovalEvent e;
  e.text = ReadText(j);
  e.decision = Str(j, "decision");
  e.approval_id = Int(j, "approval_id");
  e.guardrail = Str(j, "guardrail");
  e.match = Str(j, "match");
  e.approval_policy = Str(j, "approval_policy");
  e.approvers = absl::StrSplit(Str(j, "approvers"), ',', absl::SkipEmpty());
  e.reason = Str(j, "reason");
  auto kind = GivenKind(j);
  e.refusal_kind = kind ? *kind : legacy::DecodeApprovalRefusal(e.decision, e.reason);
  return e;
}

// ---- recording, checkpoint, the spool's own events, purged ----

void RecordingEvent::WriteJson(std::string* out) const { out->assign("{}"); }

void CheckpointEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  w.Raw("sequence", absl::StrCat(sequence))
      .Str("hash", absl::BytesToHexString(hash))
      .Str("signature", absl::BytesToHexString(signature));
  w.Close();
}

absl::StatusOr<CheckpointEvent> CheckpointEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  const Json* sequence = Find(j, "sequence");
  const Json* hash = Find(j, "hash");
  const Json* signature = Find(j, "signature");
  if (sequence == nullptr || !sequence->is_number_unsigned() || hash == nullptr ||
      !hash->is_string() || signature == nullptr || !signature->is_string()) {
    return absl::InvalidArgumentError("a checkpoint needs a sequence, a hash and a signature");
  }
  return CheckpointEvent{sequence->get<uint64_t>(),
                         absl::HexStringToBytes(hash->get<std::string>()),
                         absl::HexStringToBytes(signature->get<std::string>())};
}

void SpoolFailedEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  w.Str("error", error).Bool("refusing_new_sessions", refusing_new_sessions);
  w.Close();
}

SpoolFailedEvent SpoolFailedEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  return SpoolFailedEvent{Str(j, "error"), Bool(j, "refusing_new_sessions")};
}

void SpoolRecoveredEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  w.Str("error", error).Int("failed_ms", failed_ms);
  w.Close();
}

SpoolRecoveredEvent SpoolRecoveredEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  return SpoolRecoveredEvent{Str(j, "error"), Int(j, "failed_ms")};
}

void ChainResumedEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  w.Int("resumed_after_sequence", static_cast<int64_t>(resumed_after_sequence))
      .Str("resumed_after_hash", absl::BytesToHexString(resumed_after_hash))
      .Int("held_through_sequence", static_cast<int64_t>(held_through_sequence))
      .Int("lost_records", static_cast<int64_t>(lost_records))
      .Int("recorded_unix_ms", recorded_unix_ms)
      .Str("reason", reason);
  w.Close();
}

ChainResumedEvent ChainResumedEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  ChainResumedEvent e;
  e.resumed_after_sequence = UInt(j, "resumed_after_sequence");
  e.resumed_after_hash = absl::HexStringToBytes(Str(j, "resumed_after_hash"));
  e.held_through_sequence = UInt(j, "held_through_sequence");
  e.lost_records = UInt(j, "lost_records");
  e.recorded_unix_ms = Int(j, "recorded_unix_ms");
  e.reason = Str(j, "reason");
  return e;
}

void PurgedEvent::WriteJson(std::string* out) const {
  JsonObjectWriter w(out);
  w.Int("purged_by_audit_record", purged_by_audit_record);
  w.Close();
}

PurgedEvent PurgedEvent::Read(absl::string_view json) {
  const Json j = Parse(json);
  return PurgedEvent{Int(j, "purged_by_audit_record")};
}

namespace {
// memmem, not a string search that stops at every '"' of the body (see the store's ingest).
bool Mentions(absl::string_view json, absl::string_view key) {
  return memmem(json.data(), json.size(), key.data(), key.size()) != nullptr;
}
}  // namespace

bool StatementEvent::HasDecision(absl::string_view json) { return Mentions(json, "\"decision\""); }

bool IsPlainStatementBody(absl::string_view json) {
  return !Mentions(json, "\"decision\"") && !Mentions(json, "\"masked_by\"") &&
         !Mentions(json, "\"ddl\"");
}

}  // namespace sluice::audit
