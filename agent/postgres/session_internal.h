// Internal to the PostgreSQL session: nothing but agent/postgres/session*.cc includes this header;
// everyone else uses agent/postgres/session.h. It declares Session, the whole life of one client
// connection: the PostgreSQL state machine over the session core (agent/session/: admission, the
// statement gate, approval holds, session audit, the recorder), whose methods live by concern:
//
//   session.cc             its life and login: pre-startup codes, the StartupMessage, admission,
//                          the upstream login, the client's welcome, cancel requests; how a
//                          refused login is spelled (FATAL, agent/postgres/refusal.h)
//   session_relay.cc       the relay in both directions: every frame checked, every request
//                          inspected before it is forwarded, refusals put where the server's
//                          answers leave room for them, held statements, the audit's view
//   session_statements.cc  what happens to a statement: PostgreSQL's facts (libpg_query) summed
//                          up for the gate, COPY and FunctionCall, policy changes followed
//   session_masking.cc     the server's answers followed and masked (result rows, COPY, errors)
//
// A session runs on one worker's event loop for life: nothing here takes a lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/auth/authorizer.h"
#include "agent/masking/policy.h"
#include "agent/postgres/catalog.h"
#include "agent/postgres/fifo.h"
#include "agent/postgres/guardrails.h"
#include "agent/postgres/result_masking.h"
#include "agent/postgres/result_router.h"
#include "agent/postgres/session.h"
#include "agent/postgres/sql_analysis.h"
#include "agent/postgres/statement_tracker.h"
#include "agent/postgres/upstream.h"
#include "agent/session/admission.h"
#include "agent/session/approval_hold.h"
#include "agent/session/decision.h"
#include "agent/session/gate.h"
#include "agent/session/session_audit.h"
#include "common/audit/events.h"
#include "common/wire/postgres/messages.h"
#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres::session_internal {

using audit::RefusalKind;
using wire::postgres::BackendKeyData;
using wire::postgres::DecodeLimits;
using wire::postgres::RawMessage;
using wire::postgres::StartupMessage;

class Session {
 public:
  Session(asio::ip::tcp::socket socket, SessionDeps deps);

  asio::awaitable<void> Run();

 private:
  // ---- Life and login (session.cc) ----

  const DecodeLimits& limits() const { return deps_.config->limits; }

  asio::awaitable<absl::Status> LoginDeadline();

  // Sends a FATAL ErrorResponse for `refusal` and ends the session; before login the refusal is
  // recorded. Its SQLSTATE is `sqlstate`, or the kind's (LoginSqlState). Arguments are taken by
  // value: they live in the coroutine frame. (Throughout the data path, values passed into a
  // co_await expression are named locals, never temporaries: GCC 12 mis-destroys temporaries
  // inside co_await.)
  asio::awaitable<absl::Status> Refused(session::Refuse refusal, const char* sqlstate = nullptr);

  // A refusal of the login that the PostgreSQL session itself decides (a protocol error, ...).
  asio::awaitable<absl::Status> Fatal(RefusalKind kind, std::string message);

  asio::awaitable<absl::Status> Serve();

  // Pre-startup: TLS negotiation and cancel requests, until a StartupMessage arrives.
  asio::awaitable<absl::Status> ReadStartup(StartupMessage* startup);

  // The caller, through the session core's admission (agent/session/admission.h): the transport,
  // the protocol version, the connection asked for, the token as a cleartext password.
  asio::awaitable<absl::Status> Admit(const StartupMessage& startup);

  // The upstream login with the injected credentials, and the settings the agent pins.
  asio::awaitable<absl::Status> LoginUpstream(const StartupMessage& startup);

  // The client sees a normal login: AuthenticationOk, the server's parameters, the agent's own
  // cancel key, notices, ReadyForQuery. A cancel request with that key while a statement is held
  // withdraws it (nothing runs upstream yet). The session starts: its event, its gate, its
  // recording.
  asio::awaitable<absl::Status> Welcome(const StartupMessage& startup);

  // Who and where, for every session-level event.
  audit::Who Who() const;

  // The negotiated TLS version and cipher of `s` (nothing in plaintext): evidence of the protection
  // of each leg.
  static void TlsOf(Stream& s, std::string* version, std::string* cipher);

  // Fail closed: a session whose events cannot be recorded does not go on.
  asio::awaitable<absl::Status> EndUnaudited();

  asio::awaitable<void> HandleCancel(const std::string& payload);

  // ---- The relay (session_relay.cc) ----

  // Client to server: every frame checked, and every statement inspected before it is forwarded.
  // Forwarded messages go in as few writes as possible; a refused statement never reaches the
  // server (see Inspect), and a protocol error ends the session with a FATAL to the client.
  asio::awaitable<absl::Status> RelayFrontend();

  // Server to client: every frame checked; refusals are put in the places the server's answers
  // leave for them (see Expectation).
  asio::awaitable<absl::Status> RelayBackend();

  // Writes the first `*validated` bytes of `from`'s buffer (checked frames) to `to` as they are,
  // consumes them, and sets `*validated` to 0.
  // In the backend direction, rewritten messages wait in backend_out_ and go first.
  asio::awaitable<absl::Status> ForwardValidated(Stream& from, Stream& to, size_t* validated);

  enum class Action { kForward, kDrop, kSubstitute, kDescribeFirst, kHold, kResolveFunction };

  // Decides what happens to one client message, and keeps the expectations of the answers in
  // step: every forwarded Query, Sync and FunctionCall gets exactly one ReadyForQuery back.
  //
  // A refused simple Query is replaced by an empty query; its refusal takes the place of the
  // EmptyQueryResponse. A refused Parse starts discarding, as the server does after an error:
  // everything up to Sync is dropped, the Sync is forwarded, and the refusal is sent just before
  // its ReadyForQuery (after the answers to what was forwarded before it) unless the server
  // failed that stretch itself. Either way the session goes on.
  Action Inspect(const RawMessage& m);

  // A statement held for approval (the gate's Hold), and where it came from.
  struct HoldRequest {
    session::HeldStatement statement;
    bool extended = false;
    std::string name;  // the prepared statement's name (Parse, Bind)
  };

  // The text form of a Bind's parameters, for the approvers (capped; binary ones as hex).
  static std::vector<std::string> BindParameters(absl::string_view payload);

  // Holds `h` for approval (agent/session/approval_hold.h): the client is told with a
  // NoticeResponse, and waits. An error only when the session itself ends while waiting.
  asio::awaitable<absl::StatusOr<ApprovalOutcome>> Hold(const HoldRequest& h);

  // What happens to a held message of `type` after its decision; sets the expectations of the
  // answers as Inspect does for a checked message.
  Action Release(const HoldRequest& h, char type, const ApprovalOutcome& outcome);

  // Remembers that the named statement passed the checks under the current policy.
  void MarkChecked(absl::string_view name);

  // A refused Parse or Bind: everything up to Sync is dropped, and `error` goes out before the
  // Sync's ReadyForQuery (see Inspect).
  void DiscardToSync(std::string error) {
    discarding_ = true;
    pending_refusal_ = std::move(error);
  }

  // The request to hold for approval, from the gate's Hold on `sql`.
  static HoldRequest Held(absl::string_view sql, bool extended, const session::Hold& hold,
                          absl::string_view name);

  // Whether requests sent to the server have not all been answered (a ReadyForQuery pending,
  // or an Execute not yet followed by Sync): code in them may still change session settings.
  bool RequestsInFlight() const { return !expected_.empty() || executed_since_sync_; }

  // The audit view of a relayed client message (never changes it).
  // The result router follows every forwarded request, masking or not (see result_router.h).
  void ObserveFrontend(const RawMessage& m);

  void ObserveBackend(const RawMessage& m);

  void EmitCompleted();

  // What every statement-level event says of its request: the text (first 64 KiB), its
  // fingerprint, classification (unknown without facts: a FunctionCall) and protocol.
  static audit::StatementText EventText(absl::string_view sql, const StatementInfo* info,
                                        bool extended);
  static void SetEventText(audit::StatementText* t, absl::string_view sql,
                           const StatementInfo* info, bool extended);

  void OnStatement(const StatementRecord& rec);

  // ---- Statements (session_statements.cc) ----

  // Decides a FunctionCall of the function with `oid` (looked up as `function`) and sets the
  // expectations of the answer as Inspect does.
  Action DecideFunctionCall(uint32_t oid,
                            const absl::StatusOr<std::optional<FunctionNames>>& function);

  // A FunctionCall is decided as a statement calling the function would be: read grants,
  // masking and guardrails; what the agent cannot see into is refused. The decision is recorded.
  session::Decision JudgeFunctionCall(uint32_t oid,
                                      const absl::StatusOr<std::optional<FunctionNames>>& function);

  // Refuses a COPY whose output masking could not handle (before it runs; recorded). Allow: it
  // may run.
  session::Decision CheckCopy(absl::string_view sql, bool extended);

  // Check, then (unless it refused) CheckCopy: a refused COPY takes the place of a hold.
  session::Decision CheckWithCopy(absl::string_view sql, bool extended);

  // What happens to `sql`: the gate's decision (agent/session/gate.h) over what PostgreSQL's
  // grammar says of it; a refusal or an alert is recorded. `parsing`: the server parses `sql` now
  // (Query, Parse), rather than running a statement it parsed before (Bind).
  session::Decision Check(absl::string_view sql, bool extended, bool parsing = true);

  // What the gate is told of a statement's class.
  static session::StatementSummary Summary(const StatementInfo& info);

  // Records a decision on `sql` (`info`: its facts; null for a FunctionCall that has none): a
  // refusal's statement event, an alert's event.
  void Record(const session::Decision& d, absl::string_view sql, const StatementInfo* info,
              bool extended);

  // The session's guardrails and masking rules follow policy changes: a long session gets new
  // rules too (masking from the next result on).
  void FollowPolicy() {
    const uint64_t generation = deps_.policy->generation();
    if (generation != policy_generation_) RefreshPolicy(generation);
  }
  void RefreshPolicy(uint64_t generation);

  // Statement facts, cached by shape per worker thread (a session runs on one worker's event
  // loop): a repeated shape costs the lexer and a hash lookup.
  static StatementCache& Statements() {
    thread_local StatementCache cache;
    return cache;
  }

  // ---- Masking (session_masking.cc; see result_masking.h and result_router.h) ----

  // The statement text of the request `p` answers (a Query's, stored when masking was on; an
  // Execute's prepared statement), or null.
  static const std::string* TextOf(const PendingResult& p) {
    return p.kind == PendingResult::kQuery ? &p.sql : p.text.get();
  }

  // Masking is on when a MaskingRule applies to this session (see FollowPolicy).
  bool MaskingOn() {
    FollowPolicy();
    return !masking_.empty();
  }

  enum class BackendStep { kForward, kReplace, kSwallow };

  // Follows the server's answers (ResultRouter) and masks result rows: kReplace leaves the new
  // message in replacement_; kSwallow drops the message (the answer to the agent's own
  // Describe). An error ends the session: a result that cannot be masked is never relayed.
  asio::awaitable<absl::StatusOr<BackendStep>> RouteBackend(const RawMessage& m);

  // RouteBackend of an ErrorResponse or NoticeResponse: its texts masked, or withheld whole when
  // the statement it answers reads masked columns (an error can quote a value it read).
  absl::StatusOr<BackendStep> RouteErrorOrNotice(const RawMessage& m);

  // The cache key of a description (+ the Bind's formats, + the columns masked whole because
  // they are computed from masked columns), built in plan_key_.
  const std::string& PlanKey(absl::string_view payload, const ResultFormats* formats);

  // The columns of the result in front that are computed from masked columns (computed_; empty
  // when none), from its statement's lineage. An error when they cannot be placed.
  absl::Status ComputeOverrides(const PendingResult* front, absl::string_view description);

  // The cached plan for a description, without allocating: a repeated statement's rows need
  // nothing more.
  bool PlanFromCache(PendingResult* front, absl::string_view payload, const ResultFormats* formats);

  // The masking plan of a result described by `payload` (a RowDescription), with `formats`
  // (the Bind's result formats) when the description is a statement's. Plans are cached by
  // description for as long as the table names they used.
  asio::awaitable<absl::Status> PlanRows(PendingResult* front, const std::string& payload,
                                         const ResultFormats* formats);

  // The plan of the `index`-th COPY TO STDOUT of the request in front, from its statement
  // (`payload` is the CopyOutResponse).
  asio::awaitable<absl::Status> PlanCopyOut(PendingResult* front, int index,
                                            absl::string_view payload);

  // ---- State ----

  SessionDeps deps_;
  Stream client_;
  absl::Time started_;
  StatementTracker tracker_;
  SessionRecorder recorder_;
  session::SessionAudit audit_;  // builds and emits this session's events
  session::ApprovalHold hold_;   // statements held for approval
  // The caller, the connection and the policy the session started with.
  session::Admission admission_;
  // When the bytes being relayed in each direction were read (one clock read per read, not one
  // per message): the times statement events and the recording give.
  absl::Time frontend_now_;
  absl::Time backend_now_;
  std::string peer_;
  std::string startup_user_;
  std::string connection_name_;
  jwt::Identity identity_;
  bool logged_in_ = false;
  SessionTicket session_ticket_;      // this session's place under the connection's session limits
  session::Credentials credentials_;  // the upstream login's, until it is made
  std::vector<StatementRecord> completed_;  // statements completed, their events not yet emitted
  std::shared_ptr<const std::string> last_text_;  // the last statement text whose facts are kept
  const StatementInfo* last_info_ = nullptr;      // ... and those facts
  Grant grant_;
  session::StatementGate gate_;  // decides each statement (set at login)
  GuardrailSet guardrails_;
  uint64_t policy_generation_ = ~uint64_t{0};  // of the guardrails and masking rules below
  std::shared_ptr<const AgentPolicy> guardrails_policy_;  // keeps the rules' snapshot alive
  // Named statements that passed the checks under policy generation checked_generation_.
  absl::flat_hash_set<std::string> checked_names_;
  uint64_t checked_generation_ = ~uint64_t{0};

  // One per forwarded Query, Sync or FunctionCall, in order: what to do when its answer comes.
  struct Expectation {
    std::string refusal;         // an ErrorResponse to deliver (empty: none)
    bool substitute = false;     // the Query was replaced by an empty one: refusal replaces 'I'
    bool server_failed = false;  // the server reported an error in this stretch itself
  };
  Fifo<Expectation> expected_;
  // Approvals.
  std::optional<HoldRequest> pending_hold_;  // set by Inspect for the message being inspected
  absl::flat_hash_set<std::string> approved_once_;  // named statements approved at Parse
  bool discarding_ = false;                         // after a refused Parse, until Sync
  bool executed_since_sync_ = false;                // an Execute was forwarded since the last Sync
  std::string function_text_;    // how the FunctionCall being relayed is recorded
  std::string pending_refusal_;  // the refusal the next Sync carries
  int64_t bytes_from_client_ = 0;
  int64_t bytes_from_server_ = 0;
  // Masking.
  masking::MaskingPolicy masking_;
  ResultRouter router_;
  std::unique_ptr<CatalogResolver> catalog_;
  struct CachedPlan {
    std::shared_ptr<const ResultPlan> plan;
    absl::Time expires;
  };
  absl::flat_hash_map<std::string, CachedPlan> plan_cache_;  // by RowDescription (+ formats)
  std::string plan_key_;                                     // reused
  std::vector<std::optional<masking::Selected>> computed_;   // see ComputeOverrides
  std::string backend_out_;  // relayed bytes waiting behind a rewritten message
  std::string replacement_;  // the rewritten message
  UpstreamSession upstream_;
  BackendKeyData agent_key_;
  int protocol_minor_ = 0;
};

}  // namespace sluice::agent::postgres::session_internal
