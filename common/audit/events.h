// Typed audit events: the one definition of every kind of event an agent puts in its audit trail
// (`sluice.v1.AuditEvent`: its `type`, its `failed` flag and the JSON object in `json`). The agent
// writes events only through these structs; the control plane's store (the session index), the
// evidence report and sluicectl (`sessions show`, `sessions replay`) read them only through them,
// so that no field name is spelled twice and nothing downstream parses a SQLSTATE or an English
// message to learn what happened: a refusal carries its RefusalKind.
//
// Inventory: every kind as the agent wrote it when this file was made (field names unchanged
// since), who writes it and who reads it. (The session-level and statement-level events named
// below as written by agent/postgres/session.cc are now built by the session core,
// agent/session/session_audit.cc, which the PostgreSQL adapter calls.)
//
//   session_start: agent/postgres/session.cc at login. Who, access, rule, protocol (the
//     PostgreSQL protocol version, "3.0"), application_name, tls_version, tls_cipher,
//     upstream_tls, upstream_tls_version, upstream_tls_cipher, token_alg, token_issued_unix,
//     token_expires_unix. Read by the store's session index (who, access, rule, tls) and the
//     report (AC-2/3/6/17, SC-8, IA-2: the TLS legs, the token's lifetime and algorithm).
//   session_refused: session.cc (Fatal, before login). Who, reason, sqlstate, refusal
//     ("session_limit" only). Read by the session index (outcome refused, reason) and the
//     report (AC-3 refusals by kind, IA-2 token failures, AC-17 refused for want of TLS).
//   session_end: session.cc (Run); agent/audit/event_sink.cc for a session the agent was killed
//     in (reason only). reason, duration_ms, statements, bytes_from_client, bytes_from_server.
//     Read by the session index (ended, reason), the report (a count) and replay.
//   statement: session.cc when the server answered (OnStatement), refused at the agent (Refuse),
//     blocked or denied by a guardrail (RecordGuardrail); event_sink.cc with an unknown outcome
//     after a kill. statement, truncated, fingerprint, classification, protocol ("simple",
//     "extended"); answered: rows, bytes, duration_ms, command_tags, sqlstate, error, suspended,
//     masked_by, masked_rows; refused: decision, reason, sqlstate, guardrail, match, action,
//     target, approval_policy; unknown: outcome, error, text_not_kept. Read by the store
//     (statement and error counts, decisions and rules), the report (AC-3/6, IR-4, CM-5, SC-28),
//     `sessions show`, replay, and event_sink.cc (its journal: which requests were answered).
//   alert: session.cc (RecordGuardrail). The statement's text fields, decision "alerted",
//     guardrail, match, action, target, approval_policy. Read by the store (tags), the report
//     (IR-4, AU-6) and replay.
//   approval: session.cc (Hold). The statement's text fields, decision, approval_id, guardrail,
//     match, approval_policy, approvers, reason. Read by the store (tags), the report (AC-5,
//     IR-4, CM-5) and replay.
//   recording: session.cc (FlushRecording). {}: the slice is in AuditEvent.recording.
//   checkpoint: event_sink.cc (MaybeCheckpoint). sequence, hash, signature (hex). Read by the
//     store's chain checks and the report (AU-9/10).
//   audit_spool_failed: event_sink.cc (ReportDiskState). error, refusing_new_sessions.
//   audit_spool_recovered: event_sink.cc (ReportDiskState). error, failed_ms.
//   audit_chain_resumed: event_sink.cc (ChainResumed). resumed_after_sequence,
//     resumed_after_hash, held_through_sequence, lost_records, recorded_unix_ms, reason.
//     (These three are read by the report only as AU-2 samples.)
//   purged: the control plane's store, in place of an event retention purged.
//     purged_by_audit_record. Read by verify and the report (AU-11).
//
// Added by this module: `refusal_kind` (RefusalKind's name) on session_refused, on a statement
// refused at the agent and on an approval that did not let its statement run; `connection_protocol`
// (the Connection's protocol: "postgres" today) on session_start and session_refused — `protocol`
// was taken already (the PostgreSQL protocol version at session_start, simple/extended on
// statements), and statements join their session by id for it as they do for who ran them; and
// `detail` on session_refused (why, without the agent's wording: a rejected token's verifier
// message).
//
// Writing keeps the bodies older readers know (tests/common/audit/events_test.cc compares them
// with what the agent wrote before): the same field names and values, optional fields left out
// when empty as before. Three differences no reader depends on: session-level bodies are no
// longer in sorted key order (nlohmann::json wrote them), session_end's duration_ms has three
// decimals (microseconds) like a statement's, and an empty fingerprint (a FunctionCall refused on
// a read grant) is left out rather than written as "".
//
// Reading is lenient, as the trail demands: a body that is not a JSON object reads as an empty one,
// a missing field (bodies of older agents lack newer ones) or one of another type reads as empty,
// 0 or false, and a refusal without `refusal_kind` (stored by an agent older than this file) gets
// the kind its SQLSTATE and message imply (legacy_refusal.h, the only place that knows them). A
// checkpoint, a claim that signatures rest on, reads strictly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::audit {

// Why a session, a statement or a held statement was refused, as the agent decided it. Written as
// `refusal_kind` (the names below are stable: stored trails and evidence reports hold them).
enum class RefusalKind {
  kNone,                 // "": not refused
  kTokenRejected,        // token_rejected: the caller's token did not verify
  kNoAccessRule,         // no_access_rule: no access rule lets the caller use the connection
  kTlsRequired,          // tls_required: plaintext on a listener that requires TLS
  kUnknownConnection,    // unknown_connection: no such connection on this agent
  kSessionLimit,         // session_limit: over the connection's session limits
  kAuditUnavailable,     // audit_unavailable: the agent cannot record events now (its spool is
                         // full or failing)
  kUpstreamUnavailable,  // upstream_unavailable: the database cannot be reached, logged in to or
                         // asked (credentials missing, login failed, unsafe server settings, a
                         // catalog lookup failed)
  kNotSupported,         // not_supported: something the agent does not relay (replication, a
                         // FunctionCall of a function that runs SQL text)
  kProtocolError,        // protocol_error: the client broke the wire protocol at login
  kUnsafeSetting,        // unsafe_setting: a setting the agent pins (how the server reads
                         // statements) would change or cannot be known (startup options, SET,
                         // client_encoding)
  kReadOnly,             // read_only: a write, or lifting read-only, on a read grant
  kUnmaskable,           // unmaskable: results are masked and this one could not be
  kUnknownFunction,      // unknown_function: a FunctionCall of an OID with no function
  kGuardrailBlocked,     // guardrail_blocked: a guardrail blocks the statement
  kApprovalDenied,       // approval_denied: approvers denied it
  kApprovalTimedOut,     // approval_timed_out: no decision in time
  kApprovalUnavailable,  // approval_unavailable: it needs an approval that cannot be asked for now
                         // (the control plane unreachable or refusing, or the agent cannot hold it)
  kCancelled,            // cancelled: the client cancelled it while it was held
  kNotOwner,             // not_owner: it names something another caller started (a resumable
                         // upload session, a job): everything upstream runs as one account, so
                         // the agent keeps who owns what
  kOther,                // other: a name this reader does not know (a newer agent), or an old
                         // event it cannot place
};

absl::string_view RefusalKindName(RefusalKind kind);
// The kind named `name`: kNone for "", kOther for a name this build does not know.
RefusalKind RefusalKindFromName(absl::string_view name);
// Every kind but kNone, in declaration order (for tests and documentation).
std::vector<RefusalKind> AllRefusalKinds();

// The Connection's protocol, as `connection_protocol` spells it.
inline constexpr char kProtocolPostgres[] = "postgres";
inline constexpr char kProtocolMysql[] = "mysql";
inline constexpr char kProtocolGcs[] = "gcs";            // Cloud Storage's JSON API over HTTPS
inline constexpr char kProtocolBigquery[] = "bigquery";  // BigQuery's API v2 over HTTPS

// Statement texts are recorded up to this many bytes (the rest: `truncated`).
inline constexpr size_t kMaxStatementBytes = 64 << 10;

// Who and where, on every session-level event (an identity is empty before the token verified).
struct Who {
  std::string connection;   // the connection asked for
  std::string client_addr;  // address:port
  bool tls = false;         // the client leg
  std::string user;         // the user name the client gave
  std::string subject;
  std::string issuer;
  std::vector<std::string> groups;
  std::map<std::string, std::string> attribution;  // configured claims present in the token
  bool operator==(const Who&) const = default;
};

struct SessionStartEvent {
  static constexpr absl::string_view kType = "session_start";
  std::string protocol;  // `connection_protocol`
  Who who;
  std::string access;            // read, write, admin
  std::string rule;              // the access rule that granted it
  std::string protocol_version;  // `protocol`: the wire protocol's version ("3.0")
  std::string application_name;
  std::string tls_version, tls_cipher;  // the client leg (TLS only)
  std::optional<bool> upstream_tls;     // absent in events of older agents
  std::string upstream_tls_version, upstream_tls_cipher;
  // Who the session runs as upstream, when the agent chose among several: a cloud Connection's
  // service account (its key's, or one the caller's group runs as).
  std::string upstream_user;
  std::string token_alg;
  int64_t token_expires_unix = 0;
  int64_t token_issued_unix = 0;  // 0: the token has no iat

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  static SessionStartEvent Read(absl::string_view json);
  bool operator==(const SessionStartEvent&) const = default;
};

struct SessionRefusedEvent {
  static constexpr absl::string_view kType = "session_refused";
  std::string protocol;  // `connection_protocol`
  Who who;
  RefusalKind refusal_kind = RefusalKind::kOther;
  std::string reason;    // what the client was told
  std::string sqlstate;  // ... with this code, on a wire that has SQLSTATEs
  std::string detail;    // why, without the agent's wording (a rejected token: why it failed)

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  static SessionRefusedEvent Read(absl::string_view json);
  bool operator==(const SessionRefusedEvent&) const = default;
};

struct SessionTotals {
  int64_t duration_us = 0;  // `duration_ms`, with three decimals
  int64_t statements = 0;
  int64_t bytes_from_client = 0;
  int64_t bytes_from_server = 0;
  bool operator==(const SessionTotals&) const = default;
};

struct SessionEndEvent {
  static constexpr absl::string_view kType = "session_end";
  std::string reason;                   // "closed", or why it ended
  std::optional<SessionTotals> totals;  // absent for a session the agent was killed in

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  static SessionEndEvent Read(absl::string_view json);
  bool operator==(const SessionEndEvent&) const = default;
};

// The request a statement-level event is about.
struct StatementText {
  std::string statement;       // its first kMaxStatementBytes
  bool truncated = false;      // it was longer
  std::string fingerprint;     // literals stripped
  std::string classification;  // read, write, ddl, dcl, other, unknown, empty
  std::string query_protocol;  // `protocol`: how it came on its wire (PostgreSQL: simple, extended)

  // Sets `statement` and `truncated` from the whole text.
  void SetStatement(absl::string_view sql);
  bool operator==(const StatementText&) const = default;
};

// The guardrail rule that decided a statement.
struct GuardrailHit {
  std::string guardrail;  // its name
  std::string match;      // the rule kind that matched
  std::string action;     // block, alert, require_approval
  std::string target;     // the table, when it names one
  std::string approval_policy;
  bool operator==(const GuardrailHit&) const = default;
};

// A statement event is one of three forms: answered by the server (`decision` and `outcome`
// empty), refused at the agent (`decision`: refused, blocked, denied; it never reached the server),
// or of unknown outcome (`outcome` "unknown": the agent stopped before the server answered).
struct StatementEvent {
  static constexpr absl::string_view kType = "statement";
  // `decision` of a statement refused at the agent: refused (by the agent's own checks), blocked
  // (by a guardrail), denied (it needs an approval the agent cannot hold); `outcome` unknown.
  static constexpr char kRefused[] = "refused";
  static constexpr char kBlocked[] = "blocked";
  static constexpr char kDenied[] = "denied";
  static constexpr char kOutcomeUnknown[] = "unknown";
  StatementText text;
  // Answered.
  int64_t rows = 0;
  int64_t bytes = 0;
  int64_t duration_us = 0;  // `duration_ms`, with three decimals
  std::string command_tags;
  std::string sqlstate;  // the server's error (answered) or the agent's refusal (refused)
  std::string error;     // the server's error message, or why the outcome is unknown
  bool suspended = false;
  std::string masked_by;  // masking rules, comma-separated
  int64_t masked_rows = 0;
  // Refused at the agent.
  std::string decision;
  RefusalKind refusal_kind = RefusalKind::kNone;
  std::string reason;      // what the client was told
  GuardrailHit guardrail;  // blocked or denied by a guardrail
  // Unknown outcome.
  std::string outcome;
  bool text_not_kept = false;

  bool failed() const {
    return !decision.empty() || !outcome.empty() || !sqlstate.empty() || !error.empty();
  }
  // Whether `json` (a statement body) has a decision, i.e. the statement was refused at the agent
  // and never reached the server, by a search of its text (no parse).
  static bool HasDecision(absl::string_view json);
  // Empties every field, keeping the strings' capacity (a session reuses one event).
  void Clear();
  void WriteJson(std::string* out) const;
  static StatementEvent Read(absl::string_view json);
  bool operator==(const StatementEvent&) const = default;
};

// A statement an `alert` guardrail let through.
struct AlertEvent {
  static constexpr absl::string_view kType = "alert";
  static constexpr char kDecision[] = "alerted";
  StatementText text;
  GuardrailHit guardrail;

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  static AlertEvent Read(absl::string_view json);
  bool operator==(const AlertEvent&) const = default;
};

// A statement held for approval, and what became of it.
struct ApprovalEvent {
  static constexpr absl::string_view kType = "approval";
  static constexpr char kApproved[] = "approved";
  static constexpr char kDenied[] = "denied";  // also when no decision came in time
  static constexpr char kUnavailable[] = "unavailable";
  static constexpr char kCancelled[] = "cancelled";
  StatementText text;
  std::string decision;                           // one of the four above
  RefusalKind refusal_kind = RefusalKind::kNone;  // when not approved
  int64_t approval_id = 0;                        // 0: the request was never registered
  std::string guardrail;
  std::string match;
  std::string approval_policy;
  std::vector<std::string> approvers;  // `approvers`, comma-separated
  std::string reason;

  bool failed() const { return decision != kApproved; }
  void WriteJson(std::string* out) const;
  static ApprovalEvent Read(absl::string_view json);
  bool operator==(const ApprovalEvent&) const = default;
};

// A slice of the session's recording with nothing else to travel in (AuditEvent.recording).
struct RecordingEvent {
  static constexpr absl::string_view kType = "recording";
  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
};

// The agent's signature over its chain: the record `sequence` has chain hash `hash`.
struct CheckpointEvent {
  static constexpr absl::string_view kType = "checkpoint";
  uint64_t sequence = 0;
  std::string hash;       // raw bytes (hex in the body)
  std::string signature;  // raw bytes (hex in the body)

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  // InvalidArgument unless the body has all three fields with their types.
  static absl::StatusOr<CheckpointEvent> Read(absl::string_view json);
  bool operator==(const CheckpointEvent&) const = default;
};

// The agent's spool could not be written: new sessions are refused until it can.
struct SpoolFailedEvent {
  static constexpr absl::string_view kType = "audit_spool_failed";
  std::string error;
  bool refusing_new_sessions = true;

  bool failed() const { return true; }
  void WriteJson(std::string* out) const;
  static SpoolFailedEvent Read(absl::string_view json);
  bool operator==(const SpoolFailedEvent&) const = default;
};

struct SpoolRecoveredEvent {
  static constexpr absl::string_view kType = "audit_spool_recovered";
  std::string error;      // the failure that ended
  int64_t failed_ms = 0;  // how long it lasted

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  static SpoolRecoveredEvent Read(absl::string_view json);
  bool operator==(const SpoolRecoveredEvent&) const = default;
};

// The agent's spool lost its tail; the chain goes on from the last record it held.
struct ChainResumedEvent {
  static constexpr absl::string_view kType = "audit_chain_resumed";
  uint64_t resumed_after_sequence = 0;
  std::string resumed_after_hash;  // raw bytes (hex in the body)
  uint64_t held_through_sequence = 0;
  uint64_t lost_records = 0;
  int64_t recorded_unix_ms = 0;
  std::string reason;

  bool failed() const { return false; }
  void WriteJson(std::string* out) const;
  static ChainResumedEvent Read(absl::string_view json);
  bool operator==(const ChainResumedEvent&) const = default;
};

// Written by the control plane in place of an event retention purged (the event's hash kept).
struct PurgedEvent {
  static constexpr absl::string_view kType = "purged";
  int64_t purged_by_audit_record = 0;  // 0: none named

  void WriteJson(std::string* out) const;
  static PurgedEvent Read(absl::string_view json);
  bool operator==(const PurgedEvent&) const = default;
};

// The body of `event` as JSON (a convenience over WriteJson).
template <typename Event>
std::string ToJson(const Event& event) {
  std::string out;
  event.WriteJson(&out);
  return out;
}

// Whether a statement-level body (statement, alert, approval) certainly carries no decision, no
// masking and no DDL classification, by a search of its text (no parse): most statement events
// are such plain ones, and a reader that looks only at the others skips parsing them.
bool IsPlainStatementBody(absl::string_view json);

}  // namespace sluice::audit
