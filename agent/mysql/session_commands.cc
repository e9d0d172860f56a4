// The command loop: each client command decided, forwarded and its answer relayed packet by
// packet (what each packet is comes from where it falls in the answer: a MySQL packet does not
// say), with its event. https://mariadb.com/kb/en/result-set-packets/
#include <asio/experimental/awaitable_operators.hpp>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/mysql/refusal.h"
#include "agent/mysql/session_internal.h"
#include "common/log.h"

namespace sluice::agent::mysql::session_internal {

using wire::mysql::Command;
using wire::mysql::DecodeResult;
using wire::mysql::DecodeStatus;

namespace {

// SERVER_MORE_RESULTS_EXISTS in an OK's or EOF's status: another result set follows.
constexpr uint16_t kMoreResults = 0x0008;
// SERVER_STATUS_CURSOR_EXISTS / SERVER_STATUS_LAST_ROW_SENT: a cursor is open (its rows come by
// COM_STMT_FETCH); the fetch sent its last row.
constexpr uint16_t kCursorExists = 0x0040;
constexpr uint16_t kLastRowSent = 0x0080;
// Relayed bytes are written to the client once this many are waiting, or when the server's
// next packet has not arrived yet.
constexpr size_t kFlushBytes = 256 << 10;

uint8_t Header(absl::string_view payload) {
  return payload.empty() ? 0 : static_cast<uint8_t>(payload[0]);
}

// The status flags of an EOF packet or of an OK (0x00 or 0xFE) packet.
uint16_t StatusOf(absl::string_view payload) {
  if (wire::mysql::IsEofPacket(payload)) {
    return payload.size() >= 5 ? static_cast<uint16_t>(static_cast<uint8_t>(payload[3]) |
                                                       (static_cast<uint8_t>(payload[4]) << 8))
                               : 0;
  }
  auto ok = wire::mysql::OkPacket::Decode(payload);
  return ok.ok() ? ok->status : 0;
}

// Commands that are never relayed: replication, shutdown, debugging, and the old ones that
// bypass SQL (COM_CREATE_DB, COM_DROP_DB, COM_REFRESH, COM_PROCESS_KILL, ...).
bool Refused(uint8_t c) {
  switch (static_cast<Command>(c)) {
    case Command::kCreateDb:
    case Command::kDropDb:
    case Command::kRefresh:
    case Command::kShutdown:
    case Command::kProcessInfo:
    case Command::kConnect:
    case Command::kProcessKill:
    case Command::kDebug:
    case Command::kTime:
    case Command::kDelayedInsert:
    case Command::kBinlogDump:
    case Command::kTableDump:
    case Command::kConnectOut:
    case Command::kRegisterSlave:
    case Command::kDaemon:
    case Command::kBinlogDumpGtid:
      return true;
    default:
      return false;
  }
}

// While a statement is held its client waits for the answer and sends nothing (a KILL QUERY comes
// on another connection); what it sends anyway is read into its buffer, not consumed, for the
// commands after. A client that goes away withdraws the statement as a cancel does: no approval
// runs it for nobody. Returns only once cancelled (the hold is over).
asio::awaitable<void> WithdrawIfClientLeaves(PacketStream& client,
                                             const session::ApprovalHold& hold, size_t max_buffer) {
  absl::Status st;
  while (st.ok()) {
    // No read is started once cancelled (the coroutine would throw).
    asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) co_return;
    st = co_await client.ReadMore(max_buffer);
  }
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  if (cs.cancelled() != asio::cancellation_type::none) co_return;
  // A full buffer (a client sending ahead) is not a client gone: it is just not watched any more.
  if (!absl::IsResourceExhausted(st)) hold.Cancel();
  asio::steady_timer until_cancelled(co_await asio::this_coro::executor,
                                     asio::steady_timer::time_point::max());
  co_await until_cancelled.async_wait(kNoThrow);
}

}  // namespace

StatementCache& Statements() {
  thread_local StatementCache cache;
  return cache;
}

void Session::FollowPolicy() {
  const uint64_t generation = deps_.policy->generation();
  if (generation == policy_generation_) return;
  policy_generation_ = generation;
  auto current = deps_.policy->Get();
  if (!current) return;
  const v1::Connection& started_on = *admission_.connection();
  const v1::Connection* found = current->FindConnection(started_on.name(), v1::PROTOCOL_MYSQL);
  const v1::Connection& c = found != nullptr ? *found : started_on;
  guardrails_ = session::GuardrailSet(current->snapshot, c, &DangerousFunctions());
  masking_ = masking::MaskingPolicy(current->snapshot, c, identity_.issuer, identity_.subject,
                                    identity_.groups);
  guardrails_policy_ = std::move(current);
}

asio::awaitable<absl::Status> Session::Commands() {
  const wire::mysql::DecodeLimits& limits = deps_.config->limits;
  while (true) {
    if (audit_.failed()) co_return co_await EndUnaudited();
    auto p = co_await client_.ReadPacket(limits);
    if (!p.ok()) co_return p.status();
    bytes_from_client_ += static_cast<int64_t>(p->payload.size() + 4);
    if (p->sequence != 0 || p->payload.empty()) {
      co_return absl::InvalidArgumentError("a command packet out of sequence");
    }
    recorder_.FromClient(p->payload, absl::Now());
    const uint8_t c = Header(p->payload);
    absl::Status st;
    switch (static_cast<Command>(c)) {
      case Command::kQuit:
        co_return absl::OkStatus();
      case Command::kQuery:
        st = co_await Query(*p);
        break;
      case Command::kInitDb:
        st = co_await InitDb(*p);
        break;
      case Command::kPing:
      case Command::kStatistics:
      case Command::kSetOption:
        st = (co_await Forward(*p, Reply::kOnePacket)).status();
        break;
      case Command::kFieldList:
        st = (co_await Forward(*p, Reply::kFieldList)).status();
        break;
      case Command::kStmtPrepare:
        st = co_await Prepare(*p);
        break;
      case Command::kStmtExecute:
      case Command::kStmtBulkExecute:
        st = co_await Execute(*p);
        break;
      case Command::kStmtFetch:
        st = co_await Fetch(*p);
        break;

      case Command::kStmtSendLongData:
      case Command::kStmtReset:
      case Command::kStmtClose:
        st = co_await StatementCommand(*p);
        break;
      case Command::kResetConnection:
        st = co_await ResetConnection(*p);
        break;
      case Command::kChangeUser: {
        session::Refuse r = gate_.Refusal(
            RefusalKind::kNotSupported,
            "COM_CHANGE_USER is not relayed; open a new connection with the other token");
        audit::StatementText text;
        text.SetStatement("COM_CHANGE_USER");
        text.classification = session::ClassName(session::StatementClass::kUnknown);
        audit_.StatementRefused(std::move(text), r, StatementError(r.kind).sql_state);
        st = co_await RefuseCommand(r);
        // The client expects an authentication exchange; the session cannot go on cleanly.
        if (st.ok()) st = absl::FailedPreconditionError("COM_CHANGE_USER refused");
        break;
      }
      default: {
        const bool refused = Refused(c);
        session::Refuse r = gate_.Refusal(
            refused ? RefusalKind::kNotSupported : RefusalKind::kProtocolError,
            refused
                ? absl::StrCat(wire::mysql::CommandName(c), " is not relayed by the agent")
                : absl::StrCat(wire::mysql::CommandName(c), " is not relayed by the agent yet"));
        audit::StatementText text;
        text.SetStatement(wire::mysql::CommandName(c));
        text.classification = session::ClassName(session::StatementClass::kUnknown);
        audit_.StatementRefused(std::move(text), r, StatementError(r.kind).sql_state);
        st = co_await RefuseCommand(r);
        break;
      }
    }
    if (!st.ok()) co_return st;
    audit_.FlushRecording();
  }
}

asio::awaitable<absl::Status> Session::Query(const OwnedPacket& command) {
  const absl::Time started = absl::Now();
  const absl::string_view sql = absl::string_view(command.payload).substr(1);
  FollowPolicy();
  const StatementInfo* info = &Statements().Get(sql, lex_mode_);
  session::Decision d = Decide(sql, *info, "text");
  if (const auto* hold = std::get_if<session::Hold>(&d)) {
    session::GuardrailDecision g = hold->guardrail;
    d = co_await HoldForApproval(sql, *info, g, "text");
    // Other sessions on this thread used the cache meanwhile: the facts are looked up again.
    info = &Statements().Get(sql, lex_mode_);
  }
  if (const auto* refused = std::get_if<session::Refuse>(&d)) {
    co_return co_await RefuseCommand(*refused);
  }
  if (info->statements.size() == 1 && info->statements[0].kind == "KILL") {
    co_return co_await Kill(command, started);
  }
  const bool mode_changes = info->changes_sql_mode;
  // USE in the text: the session's database after it (read back if the text failed part way).
  std::string use;
  for (const StatementFacts& f : info->statements) {
    if (!f.database.empty()) use = f.database;
  }
  ResultMasking masking = MaskingFor(sql, *info, false);
  const bool show_warnings = KeepsWarnings(*info);
  audit_.Forwarding(sql);
  auto answer = co_await Forward(command, Reply::kResultSets, &masking);
  if (!answer.ok()) co_return answer.status();
  MaskingDone(masking, show_warnings, &*answer);
  // A cache entry stays put; an analysis that was not kept is made again.
  EmitAnswered(sql, Statements().Kept(*info) ? info : &Statements().Get(sql, lex_mode_), *answer,
               started, "text");
  if (!use.empty() && answer->error.empty()) {
    current_database_ = std::move(use);
  } else if (!use.empty()) {
    auto db = co_await RunQuery(upstream_.stream.get(), "SELECT DATABASE()", deprecate_eof(),
                                deps_.config->limits);
    if (!db.ok() || db->rows.size() != 1 || db->rows[0].size() != 1) {
      co_return absl::FailedPreconditionError("the session's database could not be read");
    }
    current_database_ = db->rows[0][0].value_or("");
  }
  if (mode_changes) {
    // The server is asked what the mode is now, whatever part of the text ran.
    auto mode = co_await RunQuery(upstream_.stream.get(), "SELECT @@session.sql_mode",
                                  deprecate_eof(), deps_.config->limits);
    if (!mode.ok() || mode->rows.size() != 1 || mode->rows[0].size() != 1) {
      co_return absl::FailedPreconditionError(
          "the session's SQL mode could not be read after it changed");
    }
    lex_mode_ =
        LexModeFromSqlMode(mode->rows[0][0].value_or(""), MariaDbVersion(upstream_.server_version));
  }
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::Kill(const OwnedPacket& command, absl::Time started) {
  const std::string sql = command.payload.substr(1);
  // The refusal is recorded here and answered by the caller: RefuseCommand takes it by reference,
  // so it must outlive the coroutine that answers it (a lambda's local would not).
  auto refusal = [&](std::string problem) {
    session::Refuse r = gate_.Refusal(RefusalKind::kNotSupported, problem);
    audit::StatementText text;
    SetEventText(&text, sql, nullptr, "text");
    audit_.StatementRefused(std::move(text), r, StatementError(r.kind).sql_state);
    return r;
  };
  std::optional<session::Refuse> refused;
  auto request = ParseKill(sql, lex_mode_);
  std::optional<KillTarget> target;
  if (request) target = deps_.kills->Lookup(request->id);
  if (!request) {
    refused = refusal("only KILL [QUERY | CONNECTION] <id> of one of your own sessions is relayed");
  } else if (!target || target->issuer != identity_.issuer ||
             target->subject != identity_.subject) {
    refused = refusal(absl::StrCat("no session of yours has id ", request->id));
  } else if (target->connection != connection_name_) {
    refused = refusal(absl::StrCat("session ", request->id, " is on connection \"",
                                   target->connection, "\"; send KILL through it"));
  }
  if (refused) co_return co_await RefuseCommand(*refused);
  if (request->query_only && target->cancel_hold && target->cancel_hold()) {
    // The statement was waiting for approvers: withdrawn, nothing to stop upstream.
    wire::mysql::OkPacket ok;
    ok.status = 0x0002;
    const std::string payload = ok.Encode();
    recorder_.ToClient(kRecordedOk, payload);
    co_return co_await client_.WritePacket(payload, 1);
  }
  OwnedPacket rewritten;
  rewritten.payload =
      absl::StrCat(absl::string_view("\x03", 1), "KILL ",
                   request->query_only ? "QUERY " : "CONNECTION ", target->upstream_thread);
  audit_.Forwarding(sql);
  auto answer = co_await Forward(rewritten, Reply::kResultSets);
  if (!answer.ok()) co_return answer.status();
  EmitAnswered(sql, nullptr, *answer, started, "text");
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::InitDb(const OwnedPacket& command) {
  // The Connection's name stands for its database (what the client logged in with).
  OwnedPacket forwarded = command;
  const absl::string_view db = absl::string_view(command.payload).substr(1);
  if (db == connection_name_ && !upstream_database_.empty()) {
    forwarded.payload = absl::StrCat(absl::string_view("\x02", 1), upstream_database_);
  }
  const absl::Time started = absl::Now();
  const std::string text = absl::StrCat("USE `", db.substr(0, 256), "`");
  audit_.Forwarding(text);
  auto answer = co_await Forward(forwarded, Reply::kOnePacket);
  if (!answer.ok()) co_return answer.status();
  EmitAnswered(text, nullptr, *answer, started, "COM_INIT_DB");
  if (answer->error.empty()) current_database_ = forwarded.payload.substr(1);
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::ResetConnection(const OwnedPacket& command) {
  auto answer = co_await Forward(command, Reply::kOnePacket);
  if (!answer.ok()) co_return answer.status();
  // The server dropped the session's state, read-only included: the pins again, checked. Its
  // prepared statements and warnings are gone too.
  prepared_.clear();
  warnings_may_quote_ = false;
  co_return co_await Pin();
}

session::Decision Session::Decide(absl::string_view sql, const StatementInfo& info,
                                  const char* protocol) {
  session::StatementSummary s;
  s.cls = info.overall;
  s.kind = info.deciding_kind();
  s.parse_error = info.parse_error;
  s.unsafe = info.unsafe;
  s.unsafe_lifts_read_only = info.unsafe_lifts_read_only;
  const std::string unmaskable = Unmaskable(sql, info);
  s.unmaskable = unmaskable;
  session::GuardrailDecision g = guardrails_.Decide(info.statements, current_database_);
  s.guardrail = &g;
  session::Decision d = gate_.Decide(s);
  if (const auto* refused = std::get_if<session::Refuse>(&d)) {
    audit::StatementText text;
    SetEventText(&text, sql, &info, protocol);
    audit_.StatementRefused(std::move(text), *refused, StatementError(refused->kind).sql_state);
  } else if (const auto* alert = std::get_if<session::Alert>(&d);
             alert != nullptr && absl::string_view(protocol) != "prepare") {
    // (A prepared statement's alert is recorded when it runs.)
    audit::StatementText text;
    SetEventText(&text, sql, &info, protocol);
    audit_.Alerted(std::move(text), alert->guardrail);
  }
  return d;
}

asio::awaitable<session::Decision> Session::HoldForApproval(absl::string_view sql,
                                                            const StatementInfo& info,
                                                            const session::GuardrailDecision& d,
                                                            const char* protocol,
                                                            std::vector<std::string> parameters) {
  session::HeldStatement held;
  held.sql = std::string(sql);
  held.fingerprint = info.shape.fingerprint;
  held.guardrail = d;
  held.parameters = std::move(parameters);
  session::HoldCaller caller{connection_name_, identity_};
  const absl::Duration timeout =
      session::ApprovalHold::Timeout(guardrails_policy_->snapshot, d.approval);
  // MySQL has no message for "your statement waits": the client just waits.
  session::ApprovalHold::Notify notify = [](const std::string&) -> asio::awaitable<absl::Status> {
    co_return absl::OkStatus();
  };
  using namespace asio::experimental::awaitable_operators;
  auto ended =
      co_await (hold_.Wait(held, caller, timeout, notify) ||
                WithdrawIfClientLeaves(client_, hold_, deps_.config->limits.max_payload_bytes));
  if (ended.index() != 0) {
    // The watch ends first only when both are cancelled: the session is ending (the hold
    // withdrew its request).
    co_return gate_.Refusal(RefusalKind::kCancelled,
                            "the session ended while the statement was held");
  }
  auto& waited = std::get<0>(ended);
  if (!waited.ok()) {
    session::Refuse r = gate_.Refusal(RefusalKind::kCancelled, waited.status().message());
    co_return r;
  }
  // Other sessions on this thread used the cache meanwhile: the facts are looked up again.
  audit::StatementText text;
  SetEventText(&text, sql, &Statements().Get(sql, lex_mode_), protocol);
  const char* decision = audit_.Approval(std::move(text), d, waited->approval_id, waited->outcome);
  LogInfo("approval request ", waited->approval_id, " for ", identity_.subject, " on ",
          connection_name_, ": ", decision);
  co_return session::ApprovalHold::Verdict(waited->outcome, d);
}

asio::awaitable<absl::Status> Session::RefuseCommand(const session::Refuse& refusal) {
  const std::string payload = ErrPayload(StatementError(refusal.kind), refusal.message);
  recorder_.ToClient(kRecordedErr, payload);
  co_return co_await client_.WritePacket(payload, 1);
}

asio::awaitable<absl::StatusOr<Answer>> Session::Forward(const OwnedPacket& command, Reply kind,
                                                         ResultMasking* masking) {
  absl::Status st = co_await upstream_.stream->WritePacket(command.payload, 0);
  if (!st.ok()) co_return st;
  Answer answer;
  seq_shift_ = 0;
  switch (kind) {
    case Reply::kResultSets:
      st = co_await RelayResultSets(&answer, masking);
      break;
    case Reply::kOnePacket: {
      st = co_await upstream_.stream->FillPacket(deps_.config->limits);
      if (!st.ok()) break;
      DecodeResult r = upstream_.stream->Peek(deps_.config->limits);
      const uint8_t h = Header(r.packet.payload);
      recorder_.ToClient(h == 0x00   ? kRecordedOk
                         : h == 0xFF ? kRecordedErr
                                     : kRecordedOther,
                         r.packet.payload);
      if (h == 0xFF) {
        auto e = wire::mysql::ErrPacket::Decode(r.packet.payload);
        if (e.ok()) answer.error = e->message, answer.sql_state = e->sql_state;
      }
      PassThrough(r.packet.wire_size);
      break;
    }
    case Reply::kFieldList:
      st = co_await RelayUntilEnd(&answer);
      break;
  }
  if (st.ok()) st = co_await Flush();
  if (!st.ok()) co_return st;
  co_return answer;
}

asio::awaitable<absl::Status> Session::Flush() {
  if (out_.empty()) co_return absl::OkStatus();
  bytes_from_server_ += static_cast<int64_t>(out_.size());
  absl::Status st = co_await client_.Write(out_);
  out_.clear();
  co_return st;
}

asio::awaitable<absl::Status> Session::RelayResultSets(Answer* answer, ResultMasking* masking) {
  enum class Phase { kHeader, kColumns, kColumnsEof, kRows };
  Phase phase = Phase::kHeader;
  uint64_t columns_left = 0;
  DecodeResult r;
  while (true) {
    absl::Status next = co_await NextUpstreamPacket(&r);
    if (!next.ok()) co_return next;
    const absl::string_view payload = r.packet.payload;
    const uint8_t h = Header(payload);
    char type = kRecordedOther;
    bool done = false;
    if (h == 0xFF) {  // an error ends the answer, in any phase
      RelayError(r, masking, answer);
      co_return absl::OkStatus();
    } else if (phase == Phase::kHeader) {
      if (h == 0x00) {
        type = kRecordedOk;
        auto ok = wire::mysql::OkPacket::Decode(payload);
        if (!ok.ok()) co_return ok.status();
        answer->affected_rows += ok->affected_rows;
        ++answer->results;
        done = (ok->status & kMoreResults) == 0;
      } else if (h == 0xFB) {
        // LOCAL INFILE is never negotiated upstream: a server that asks anyway is not followed.
        co_return absl::InvalidArgumentError("the server asked for a LOCAL INFILE file");
      } else {
        wire::mysql::Reader reader(payload);
        auto count = reader.LenencInt();
        if (!reader.ok() || !count || *count == 0 || *count > 65535) {
          co_return absl::InvalidArgumentError("malformed result set header");
        }
        type = kRecordedColumnCount;
        columns_left = *count;
        phase = Phase::kColumns;
        if (masking != nullptr) masking->columns.clear();
      }
    } else if (phase == Phase::kColumns) {
      type = kRecordedColumn;
      if (--columns_left == 0) phase = deprecate_eof() ? Phase::kRows : Phase::kColumnsEof;
      if (masking != nullptr && masking->keep_columns) {
        masking->column_payloads.emplace_back(payload);
      }
      if (masking != nullptr && masking->on) {
        absl::Status st = MaskingColumn(payload, columns_left == 0, masking);
        if (!st.ok()) co_return st;
      }
    } else if (phase == Phase::kColumnsEof) {
      if (!wire::mysql::IsEofPacket(payload)) {
        co_return absl::InvalidArgumentError("no EOF after the column definitions");
      }
      type = kRecordedEof;
      phase = Phase::kRows;
      if (StatusOf(payload) & kCursorExists) {
        // A cursor was opened: its rows come by COM_STMT_FETCH, and this ends the answer.
        answer->cursor_opened = true;
        ++answer->results;
        done = true;
      }
    } else if (h == 0xFE && payload.size() < wire::mysql::kMaxPayloadPerPacket &&
               (deprecate_eof() || payload.size() < 9)) {
      type = kRecordedEof;
      ++answer->results;
      const uint16_t status = StatusOf(payload);
      if (status & kCursorExists) answer->cursor_opened = true;
      done = (status & kMoreResults) == 0;
      phase = Phase::kHeader;
    } else {
      absl::Status st = RelayRow(r, masking, answer);
      if (!st.ok()) co_return st;
      if (out_.size() >= kFlushBytes) {
        st = co_await Flush();
        if (!st.ok()) co_return st;
      }
      continue;
    }
    recorder_.ToClient(type, payload);
    RelayPacket(r, {});
    if (done) co_return absl::OkStatus();
    if (out_.size() >= kFlushBytes) {
      absl::Status st = co_await Flush();
      if (!st.ok()) co_return st;
    }
  }
}

absl::Status Session::RelayRow(const DecodeResult& r, ResultMasking* masking, Answer* answer) {
  ++answer->rows;
  answer->bytes += static_cast<int64_t>(r.packet.payload.size());
  if (masking != nullptr && masking->on && masking->plan.active) return RelayMaskedRow(r, masking);
  recorder_.ToClient(masking != nullptr && masking->binary ? kRecordedBinaryRow : kRecordedTextRow,
                     r.packet.payload);
  RelayPacket(r, {});
  return absl::OkStatus();
}

void Session::RelayError(const DecodeResult& r, const ResultMasking* masking, Answer* answer) {
  auto e = wire::mysql::ErrPacket::Decode(r.packet.payload);
  if (e.ok()) {
    answer->error = e->message;
    answer->sql_state = e->sql_state;
    answer->error_code = e->code;
  }
  if (masking != nullptr && masking->on) {
    RelayMaskedError(r, *masking);
    return;
  }
  recorder_.ToClient(kRecordedErr, r.packet.payload);
  RelayPacket(r, {});
}

asio::awaitable<absl::Status> Session::NextUpstreamPacket(DecodeResult* r) {
  const wire::mysql::DecodeLimits& limits = deps_.config->limits;
  PacketStream& up = *upstream_.stream;
  while (true) {
    *r = up.Peek(limits);
    if (r->status == DecodeStatus::kPacket) co_return absl::OkStatus();
    if (r->status == DecodeStatus::kError) co_return absl::InvalidArgumentError(r->error);
    // Nothing more to relay until the server sends: what is waiting goes to the client now.
    absl::Status st = co_await Flush();
    if (st.ok()) st = co_await up.FillPacket(limits);
    if (!st.ok()) co_return st;
  }
}

asio::awaitable<absl::Status> Session::RelayFetchedRows(Answer* answer, ResultMasking* masking) {
  DecodeResult r;
  while (true) {
    absl::Status next = co_await NextUpstreamPacket(&r);
    if (!next.ok()) co_return next;
    const absl::string_view payload = r.packet.payload;
    const uint8_t h = Header(payload);
    if (h == 0xFF) {
      RelayError(r, masking, answer);
      co_return absl::OkStatus();
    }
    // Binary rows start with 0x00: 0xFE is the EOF (or OK) that ends this batch.
    if (h == 0xFE && payload.size() < wire::mysql::kMaxPayloadPerPacket) {
      const uint16_t status = StatusOf(payload);
      answer->cursor_closed = (status & kLastRowSent) != 0 || (status & kCursorExists) == 0;
      recorder_.ToClient(kRecordedEof, payload);
      RelayPacket(r, {});
      co_return absl::OkStatus();
    }
    if (h != 0x00) co_return absl::InvalidArgumentError("a fetched row is not a binary row");
    absl::Status st = RelayRow(r, masking, answer);
    if (st.ok() && out_.size() >= kFlushBytes) st = co_await Flush();
    if (!st.ok()) co_return st;
  }
}

asio::awaitable<absl::Status> Session::RelayUntilEnd(Answer* answer) {
  const wire::mysql::DecodeLimits& limits = deps_.config->limits;
  PacketStream& up = *upstream_.stream;
  while (true) {
    absl::Status st = co_await up.FillPacket(limits);
    if (!st.ok()) co_return st;
    DecodeResult r = up.Peek(limits);
    const absl::string_view payload = r.packet.payload;
    const uint8_t h = Header(payload);
    const bool end = h == 0xFF || (h == 0xFE && payload.size() < 9);
    recorder_.ToClient(h == 0xFF ? kRecordedErr : end ? kRecordedEof : kRecordedColumn, payload);
    if (h == 0xFF) {
      auto e = wire::mysql::ErrPacket::Decode(payload);
      if (e.ok()) answer->error = e->message, answer->sql_state = e->sql_state;
    }
    PassThrough(r.packet.wire_size);
    if (end) co_return absl::OkStatus();
  }
}

void Session::SetEventText(audit::StatementText* t, absl::string_view sql,
                           const StatementInfo* info, const char* protocol) {
  t->SetStatement(sql);
  if (info != nullptr) t->fingerprint.assign(info->shape.fingerprint);
  t->classification.assign(
      session::ClassName(info != nullptr ? info->overall : session::StatementClass::kOther));
  t->query_protocol.assign(protocol);
}

void Session::EmitAnswered(absl::string_view sql, const StatementInfo* info, const Answer& answer,
                           absl::Time started, const char* protocol) {
  audit::StatementEvent& event = audit_.Answer();
  SetEventText(&event.text, sql, info, protocol);
  event.rows = answer.rows;
  event.bytes = answer.bytes;
  event.duration_us = absl::ToInt64Microseconds(absl::Now() - started);
  if (answer.affected_rows > 0)
    event.command_tags = absl::StrCat("affected ", answer.affected_rows);
  event.sqlstate = answer.sql_state;
  event.masked_by = answer.masked_by;
  event.masked_rows = answer.masked_rows;
  if (!answer.error.empty()) {
    event.error = absl::StrCat(answer.error.substr(0, 1024), " (error ", answer.error_code, ")");
  }
  audit_.Answered();
}

asio::awaitable<absl::Status> Session::EndUnaudited() {
  const std::string payload =
      ErrPayload(ErrorCode{1040, "08004"},
                 "Sluice: the audit trail cannot take this session's events (the agent's audit "
                 "spool is full or failing); the session ends");
  (void)co_await client_.WritePacket(payload, 1);
  co_return absl::ResourceExhaustedError("audit buffer full: session ended unaudited");
}

}  // namespace sluice::agent::mysql::session_internal
