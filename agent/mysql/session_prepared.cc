// Server-side prepared statements (COM_STMT_PREPARE / EXECUTE / SEND_LONG_DATA / RESET / CLOSE):
// a statement is decided when it is prepared (a refused one never reaches the server) and again
// at every execution under the policy then in force (a hold asks approvers per execution); the
// statement ids the server gives are the session's own, kept with their text.
// https://mariadb.com/kb/en/com_stmt_prepare/
#include <algorithm>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/mysql/refusal.h"
#include "agent/mysql/session_internal.h"
#include "common/crypto.h"
#include "common/wire/mysql/rows.h"

namespace sluice::agent::mysql::session_internal {

using wire::mysql::DecodeResult;

namespace {

// COM_STMT_EXECUTE's cursor flags: rows then come by COM_STMT_FETCH.
constexpr uint8_t kCursorFlags = 0x0F;

uint32_t StatementId(absl::string_view payload) {
  wire::mysql::Reader r(payload.substr(1));
  const uint32_t id = r.Int4();
  return r.ok() ? id : 0;
}

}  // namespace

asio::awaitable<absl::Status> Session::Prepare(const OwnedPacket& command) {
  const absl::string_view sql = absl::string_view(command.payload).substr(1);
  FollowPolicy();
  const StatementInfo& info = Statements().Get(sql, lex_mode_);
  session::Decision d = Decide(sql, info, "prepare");
  if (const auto* refused = std::get_if<session::Refuse>(&d)) {
    co_return co_await RefuseCommand(*refused);
  }
  absl::Status st = co_await upstream_.stream->WritePacket(command.payload, 0);
  if (!st.ok()) co_return st;
  const wire::mysql::DecodeLimits& limits = deps_.config->limits;
  PacketStream& up = *upstream_.stream;
  st = co_await up.FillPacket(limits);
  if (!st.ok()) co_return st;
  DecodeResult r = up.Peek(limits);
  absl::string_view payload = r.packet.payload;
  if (payload.empty() || static_cast<uint8_t>(payload[0]) != 0x00) {
    // The server refused it (ERR): relayed as it is.
    recorder_.ToClient(kRecordedErr, payload);
    PassThrough(r.packet.wire_size);
    co_return co_await Flush();
  }
  wire::mysql::Reader reader(payload.substr(1));
  const uint32_t id = reader.Int4();
  const uint16_t columns = reader.Int2();
  const uint16_t params = reader.Int2();
  if (!reader.ok()) co_return absl::InvalidArgumentError("malformed COM_STMT_PREPARE answer");
  recorder_.ToClient(kRecordedPrepareOk, payload);
  PassThrough(r.packet.wire_size);
  // The parameters' and then the columns' definitions, each list ended by EOF unless deprecated.
  int definitions = params + columns;
  if (!deprecate_eof()) definitions += (params > 0 ? 1 : 0) + (columns > 0 ? 1 : 0);
  for (int i = 0; i < definitions; ++i) {
    st = co_await up.FillPacket(limits);
    if (!st.ok()) co_return st;
    r = up.Peek(limits);
    recorder_.ToClient(wire::mysql::IsEofPacket(r.packet.payload) ? kRecordedEof : kRecordedColumn,
                       r.packet.payload);
    PassThrough(r.packet.wire_size);
  }
  if (prepared_.size() >= kMaxPrepared && !prepared_.contains(id)) {
    co_return absl::ResourceExhaustedError("too many prepared statements in one session");
  }
  const StatementInfo& analysed = Statements().Get(sql, lex_mode_);
  auto parameters = std::make_shared<Prepared::Parameters>();
  parameters->count = params;
  prepared_[id] =
      Prepared{std::make_shared<const std::string>(sql), lex_mode_,
               Statements().Kept(analysed) ? &analysed : nullptr, nullptr, std::move(parameters)};
  co_return co_await Flush();
}

asio::awaitable<absl::Status> Session::Execute(const OwnedPacket& command) {
  const absl::Time started = absl::Now();
  const uint32_t id = StatementId(command.payload);
  auto it = prepared_.find(id);
  if (it == prepared_.end()) {
    // Unknown to the agent: the server would not know it either, say so as it would.
    co_return co_await RefuseCommand(gate_.Refusal(
        RefusalKind::kProtocolError, absl::StrCat("no prepared statement has id ", id)));
  }
  // MariaDB's COM_STMT_BULK_EXECUTE: the statement over many rows of parameters, one decision.
  const bool bulk = static_cast<uint8_t>(command.payload[0]) ==
                    static_cast<uint8_t>(wire::mysql::Command::kStmtBulkExecute);
  const char* protocol = bulk ? "bulk" : "binary";
  if (bulk && !bulk_) {
    // Not offered to this client, or the server lacks it: nothing would read the answer right.
    co_return co_await RefuseCommand(gate_.Refusal(
        RefusalKind::kNotSupported,
        "COM_STMT_BULK_EXECUTE is not available on this connection (the database does not "
        "offer it); execute the statement once per row"));
  }
  const bool cursor = !bulk && command.payload.size() > 5 &&
                      (static_cast<uint8_t>(command.payload[5]) & kCursorFlags);
  // Executing again closes the statement's cursor on the server.
  it->second.cursor.reset();
  if (cursor && OpenCursors() >= kMaxCursors) {
    co_return co_await RefuseCommand(
        gate_.Refusal(RefusalKind::kNotSupported,
                      absl::StrCat("at most ", kMaxCursors,
                                   " cursors are open in one session; close one (COM_STMT_RESET or "
                                   "COM_STMT_CLOSE) first")));
  }
  // Its own reference: another command may replace the entry while this one waits for approval.
  const Prepared prepared = it->second;
  const std::string& sql = *prepared.sql;
  // (A bulk execution's rows of values are not decoded: its approvers see the statement.)
  std::vector<std::string> values =
      bulk ? std::vector<std::string>() : BoundValues(command, prepared.parameters.get());
  FollowPolicy();
  session::Decision d = Decide(sql, prepared.Facts(), protocol);
  if (const auto* hold = std::get_if<session::Hold>(&d)) {
    session::GuardrailDecision g = hold->guardrail;
    d = co_await HoldForApproval(sql, prepared.Facts(), g, protocol, std::move(values));
  }
  if (const auto* refused = std::get_if<session::Refuse>(&d)) {
    co_return co_await RefuseCommand(*refused);
  }
  ResultMasking masking = MaskingFor(sql, prepared.Facts(), true);
  masking.keep_columns = cursor;
  audit_.Forwarding(sql);
  auto answer = co_await Forward(command, Reply::kResultSets, &masking);
  if (!answer.ok()) co_return answer.status();
  MaskingDone(masking, masking.redact_all, &*answer);
  EmitAnswered(sql, &prepared.Facts(), *answer, started, protocol);
  if (answer->cursor_opened) {
    auto open = prepared_.find(id);
    if (open == prepared_.end()) {
      co_return absl::InternalError("a cursor was opened on a statement the session closed");
    }
    auto kept = std::make_shared<Prepared::Cursor>();
    kept->masking = std::move(masking);
    kept->masking.masked_rows = 0;
    kept->generation = policy_generation_;
    open->second.cursor = std::move(kept);
  }
  co_return absl::OkStatus();
}

std::vector<std::string> Session::BoundValues(const OwnedPacket& command,
                                              Prepared::Parameters* bound) {
  constexpr size_t kMax = 100;
  constexpr size_t kMaxBytes = 1024;
  std::vector<std::string> out;
  thread_local std::vector<wire::mysql::ExecuteParameter> values;
  absl::Status decoded = wire::mysql::DecodeExecuteParameters(
      command.payload, bound->count, &bound->types, bound->long_data, &values);
  bound->long_data.clear();  // the server forgets long data once the statement executes
  if (!decoded.ok()) {
    // The server refuses it (or it uses a type this decoder does not know): the approver is told.
    if (bound->count > 0) out.push_back(absl::StrCat("(not shown: ", decoded.message(), ")"));
    return out;
  }
  for (size_t i = 0; i < values.size() && i < kMax; ++i) {
    const wire::mysql::ExecuteParameter& p = values[i];
    std::string v;
    if (p.null) {
      v = "NULL";
    } else if (p.long_data) {
      v = "(sent as long data)";
    } else if (wire::mysql::BinaryTypeOf(p.type).layout == wire::mysql::BinaryLayout::kLenenc) {
      const bool text = std::all_of(p.data.begin(), p.data.end(), [](char c) {
        return static_cast<uint8_t>(c) >= 0x20 || c == '\t' || c == '\n' || c == '\r';
      });
      v = text ? std::string(p.data.substr(0, kMaxBytes + 1))
               : "\\x" + HexEncode(p.data.substr(0, kMaxBytes / 2 + 1));
    } else {
      v = wire::mysql::BinaryValueText(p.data, p.type, p.is_unsigned);
    }
    if (v.size() > kMaxBytes) v = v.substr(0, kMaxBytes) + "...";
    out.push_back(std::move(v));
  }
  return out;
}

size_t Session::OpenCursors() const {
  size_t n = 0;
  for (const auto& [id, p] : prepared_) n += p.cursor != nullptr ? 1 : 0;
  return n;
}

asio::awaitable<absl::Status> Session::Fetch(const OwnedPacket& command) {
  const absl::Time started = absl::Now();
  const uint32_t id = StatementId(command.payload);
  auto it = prepared_.find(id);
  if (it == prepared_.end() || it->second.cursor == nullptr) {
    co_return co_await RefuseCommand(gate_.Refusal(
        RefusalKind::kProtocolError, absl::StrCat("no cursor is open on prepared statement ", id,
                                                  "; execute it with a cursor first")));
  }
  const Prepared prepared = it->second;  // the cursor is shared, the entry may change meanwhile
  Prepared::Cursor& cursor = *prepared.cursor;
  const std::string& sql = *prepared.sql;
  FollowPolicy();
  if (cursor.generation != policy_generation_) {
    // The policy changed since the cursor was opened: its rows go out under the one in force.
    session::Decision d = Decide(sql, prepared.Facts(), "fetch");
    if (std::holds_alternative<session::Hold>(d)) {
      session::Refuse r = gate_.Refusal(
          RefusalKind::kApprovalUnavailable,
          "the policy changed since this cursor was opened and now holds the statement for "
          "approval; execute it again to ask for one");
      audit::StatementText text;
      SetEventText(&text, sql, &prepared.Facts(), "fetch");
      audit_.StatementRefused(std::move(text), r, StatementError(r.kind).sql_state);
      d = std::move(r);
    }
    if (const auto* refused = std::get_if<session::Refuse>(&d)) {
      co_return co_await RefuseCommand(*refused);
    }
    ResultMasking replanned = MaskingFor(sql, prepared.Facts(), true);
    replanned.keep_columns = true;
    replanned.column_payloads = std::move(cursor.masking.column_payloads);
    const size_t n = replanned.column_payloads.size();
    if (replanned.on) {
      for (size_t i = 0; i < n; ++i) {
        absl::Status st = MaskingColumn(replanned.column_payloads[i], i + 1 == n, &replanned);
        if (!st.ok()) co_return st;
      }
    }
    cursor.masking = std::move(replanned);
    cursor.generation = policy_generation_;
  }
  cursor.masking.masked_rows = 0;
  audit_.Forwarding(sql);
  absl::Status st = co_await upstream_.stream->WritePacket(command.payload, 0);
  if (!st.ok()) co_return st;
  Answer answer;
  seq_shift_ = 0;
  st = co_await RelayFetchedRows(&answer, &cursor.masking);
  if (st.ok()) st = co_await Flush();
  if (!st.ok()) co_return st;
  if (answer.cursor_closed || !answer.error.empty()) {
    auto open = prepared_.find(id);
    if (open != prepared_.end() && open->second.cursor == prepared.cursor) {
      open->second.cursor.reset();
    }
  }
  MaskingDone(cursor.masking, false, &answer);
  EmitAnswered(sql, &prepared.Facts(), answer, started, "fetch");
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::StatementCommand(const OwnedPacket& command) {
  const uint8_t c = static_cast<uint8_t>(command.payload[0]);
  const uint32_t id = StatementId(command.payload);
  if (!prepared_.contains(id)) {
    if (c == static_cast<uint8_t>(wire::mysql::Command::kStmtClose)) co_return absl::OkStatus();
    co_return co_await RefuseCommand(gate_.Refusal(
        RefusalKind::kProtocolError, absl::StrCat("no prepared statement has id ", id)));
  }
  switch (static_cast<wire::mysql::Command>(c)) {
    case wire::mysql::Command::kStmtClose:
      prepared_.erase(id);
      // No answer to this one or to long data.
      co_return co_await upstream_.stream->WritePacket(command.payload, 0);
    case wire::mysql::Command::kStmtSendLongData: {
      // Which parameter: its value is not in the next COM_STMT_EXECUTE.
      wire::mysql::Reader r(absl::string_view(command.payload).substr(5));
      const uint16_t param = r.Int2();
      Prepared::Parameters& bound = *prepared_[id].parameters;
      if (r.ok() && param < bound.count) {
        if (bound.long_data.size() <= param) bound.long_data.resize(param + 1u, false);
        bound.long_data[param] = true;
      }
      co_return co_await upstream_.stream->WritePacket(command.payload, 0);
    }
      co_return co_await upstream_.stream->WritePacket(command.payload, 0);
    default:  // COM_STMT_RESET (it closes the statement's cursor, forgets long data): OK or ERR
      prepared_[id].cursor.reset();
      prepared_[id].parameters->long_data.clear();
      co_return (co_await Forward(command, Reply::kOnePacket)).status();
  }
}

}  // namespace sluice::agent::mysql::session_internal
