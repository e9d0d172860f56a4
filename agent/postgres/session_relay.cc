#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/postgres/refusal.h"
#include "agent/postgres/session_internal.h"
#include "agent/test_faults.h"
#include "common/crypto.h"
#include "common/log.h"

namespace sluice::agent::postgres::session_internal {

using wire::postgres::Bind;
using wire::postgres::DecodeFrame;
using wire::postgres::DecodeResult;
using wire::postgres::DecodeStatus;
using wire::postgres::DescribeOrClose;
using wire::postgres::Direction;
using wire::postgres::ErrorOrNotice;
using wire::postgres::Query;
using wire::postgres::ReadyForQuery;
using wire::postgres::WireReader;

asio::awaitable<absl::Status> Session::RelayFrontend() {
  Stream& from = client_;
  Stream& to = *upstream_.stream;
  while (true) {
    size_t validated = 0;  // bytes [0, validated) are forwarded as they are
    bool terminate = false;
    frontend_now_ = absl::Now();  // the time of every message of this read
    while (true) {
      DecodeResult r =
          DecodeFrame(from.buffer().data().substr(validated), Direction::kFrontend, limits());
      if (r.status == DecodeStatus::kError) {
        std::string wire =
            ErrorOrNotice::Make("FATAL", "08P01", "Sluice: protocol violation: " + r.error)
                .Encode('E');
        // The session ends with its own error; a client gone by now changes nothing.
        (void)co_await client_.Write(wire);
        co_return absl::InvalidArgumentError(r.error);
      }
      if (r.status == DecodeStatus::kNeedMore) break;
      bytes_from_client_ += r.message.wire_size;
      recorder_.FromClient(r.message.type, r.message.payload, frontend_now_);
      Action action = Inspect(r.message);
      if (action == Action::kHold) {
        // What came before goes out first; the held message waits at the front of the buffer
        // (nothing more is read from the client) until it is decided.
        absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
        if (!forwarded.ok()) co_return forwarded;
        HoldRequest hold = std::move(*pending_hold_);
        pending_hold_.reset();
        auto outcome = co_await Hold(hold);
        if (!outcome.ok()) co_return outcome.status();
        frontend_now_ = absl::Now();  // it runs from now
        action = Release(hold, r.message.type, *outcome);
        r = DecodeFrame(from.buffer().data(), Direction::kFrontend, limits());
      }
      if (action == Action::kResolveFunction) {
        // A FunctionCall names its function by OID: the agent looks it up first (what came
        // before goes out; the call waits at the front of the buffer).
        absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
        if (!forwarded.ok()) co_return forwarded;
        WireReader fr(r.message.payload);
        uint32_t oid = static_cast<uint32_t>(fr.Int32());
        auto function = co_await catalog_->Function(oid);
        action = DecideFunctionCall(oid, function);
        r = DecodeFrame(from.buffer().data(), Direction::kFrontend, limits());
      }
      if (action == Action::kDescribeFirst) {
        // The agent's own Describe of the portal goes just before the Execute: its answer
        // tells the backend relay which columns the rows hold (and is not relayed).
        absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
        if (!forwarded.ok()) co_return forwarded;
        WireReader er(r.message.payload);
        std::string portal(er.CStringView());
        std::string describe = DescribeOrClose{'P', portal}.Encode('D');
        absl::Status st = co_await to.Write(describe);
        if (!st.ok()) co_return st;
        router_.OnInjectedDescribe(portal);
        action = Action::kForward;
        // The Execute is now the first byte of the buffer.
        r = DecodeFrame(from.buffer().data(), Direction::kFrontend, limits());
      }
      if (action == Action::kForward) {
        ObserveFrontend(r.message);
        validated += r.message.wire_size;
        if (r.message.type == 'X') {
          terminate = true;
          break;
        }
        continue;
      }
      // What came before goes out first; the message itself never does.
      size_t skip = r.message.wire_size;
      absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
      if (!forwarded.ok()) co_return forwarded;
      if (action == Action::kSubstitute) {
        // An empty query in its place: the server answers it in order (EmptyQueryResponse,
        // which the backend relay replaces with the refusal, then ReadyForQuery with the real
        // transaction status).
        std::string empty_query = Query{""}.Encode();
        absl::Status st = co_await to.Write(empty_query);
        if (!st.ok()) co_return st;
        router_.OnQuery("", false);
      }
      from.Consume(skip);
    }
    absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
    if (!forwarded.ok()) co_return forwarded;
    EmitCompleted();
    audit_.FlushRecording();
    if (audit_.failed()) co_return co_await EndUnaudited();
    if (terminate) co_return absl::OkStatus();  // the client said goodbye (Terminate)
    absl::Status st = co_await from.ReadMore(limits().max_message_bytes + 5);
    if (!st.ok()) co_return st;
  }
}

asio::awaitable<absl::Status> Session::RelayBackend() {
  Stream& from = *upstream_.stream;
  Stream& to = client_;
  while (true) {
    size_t validated = 0;
    backend_now_ = absl::Now();  // the time of every message of this read
    while (true) {
      DecodeResult r =
          DecodeFrame(from.buffer().data().substr(validated), Direction::kBackend, limits());
      if (r.status == DecodeStatus::kError) co_return absl::InvalidArgumentError(r.error);
      if (r.status == DecodeStatus::kNeedMore) break;
      const char type = r.message.type;
      bytes_from_server_ += r.message.wire_size;
      auto step = co_await RouteBackend(r.message);
      if (!step.ok()) {
        std::string wire =
            ErrorOrNotice::Make("FATAL", "XX000", absl::StrCat("Sluice: ", step.status().message()))
                .Encode('E');
        // The session ends with its own error; a client gone by now changes nothing.
        (void)co_await client_.Write(wire);
        co_return step.status();
      }
      if (*step != BackendStep::kForward) {
        // What came before is kept to go out with the rest; the message is replaced or dropped.
        if (type == 'E' && !expected_.empty()) expected_.front().server_failed = true;  // as below
        if (*step == BackendStep::kReplace) {
          // The audit sees what the client sees.
          ObserveBackend(
              RawMessage{type, absl::string_view(replacement_).substr(5), replacement_.size()});
        }
        backend_out_.append(from.buffer().data().data(), validated);
        if (*step == BackendStep::kReplace) backend_out_.append(replacement_);
        from.Consume(validated + r.message.wire_size);
        validated = 0;
        continue;
      }
      std::string inject;    // a refusal to send before this message
      bool replace = false;  // ... in place of it
      if (!expected_.empty()) {
        Expectation& head = expected_.front();
        if (type == 'E') head.server_failed = true;  // the server skips the rest up to Sync
        if (type == 'I' && head.substitute && !head.refusal.empty()) {
          inject = std::move(head.refusal);
          head.refusal.clear();
          replace = true;
        } else if (type == 'Z') {
          if (!head.refusal.empty() && !head.server_failed) inject = std::move(head.refusal);
          expected_.pop_front();
        }
      }
      if (inject.empty()) {
        ObserveBackend(r.message);
        validated += r.message.wire_size;
        continue;
      }
      EmitCompleted();  // journaled before their answers go out (see below)
      absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
      if (!forwarded.ok()) co_return forwarded;
      absl::Status st = co_await to.Write(inject);
      if (!st.ok()) co_return st;
      if (replace) {
        from.Consume(r.message.wire_size);
      } else {
        // The message itself stays at the front of the buffer and goes out with what follows.
        ObserveBackend(r.message);
        validated = r.message.wire_size;
      }
    }
    // Statements these messages complete become events (journaled: a killed agent still has
    // them) before their answers go out, so a statement the client saw answered is never
    // recorded as of unknown outcome. Their recording slices end with the request; the answer's
    // bytes, recorded as they are written, open the next slice.
    const size_t answered = completed_.size();
    EmitCompleted();
    absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
    if (!forwarded.ok()) co_return forwarded;
    if (answered > 0) test_faults::AnswersWritten(answered);
    audit_.FlushRecording();
    if (audit_.failed()) co_return co_await EndUnaudited();
    absl::Status st = co_await from.ReadMore(limits().max_message_bytes + 5);
    if (!st.ok()) co_return st;
  }
}

asio::awaitable<absl::Status> Session::ForwardValidated(Stream& from, Stream& to,
                                                        size_t* validated) {
  if (&from == upstream_.stream.get() && !backend_out_.empty()) {
    backend_out_.append(from.buffer().data().data(), *validated);
    from.Consume(*validated);
    *validated = 0;
    absl::Status st = co_await to.Write(backend_out_);
    backend_out_.clear();
    co_return st;
  }
  if (*validated == 0) co_return absl::OkStatus();
  absl::string_view chunk = from.buffer().data().substr(0, *validated);
  absl::Status st = co_await to.Write(chunk);
  if (!st.ok()) co_return st;
  from.Consume(*validated);
  *validated = 0;
  co_return absl::OkStatus();
}

Session::Action Session::Inspect(const RawMessage& m) {
  if (discarding_ && m.type != 'S' && m.type != 'X') return Action::kDrop;
  switch (m.type) {
    case 'Q': {
      WireReader r(m.payload);
      absl::string_view sql = r.CStringView();
      session::Decision d = CheckWithCopy(sql, false);
      if (const auto* refused = std::get_if<session::Refuse>(&d)) {
        expected_.push_back(Expectation{StatementError(*refused), true, false});
        return Action::kSubstitute;
      }
      if (const auto* hold = std::get_if<session::Hold>(&d)) {
        pending_hold_ = Held(sql, false, *hold, "");
        return Action::kHold;  // expectations are set when it is released
      }
      expected_.push_back(Expectation{});
      return Action::kForward;
    }
    case 'P': {
      WireReader r(m.payload);
      absl::string_view name = r.CStringView();
      absl::string_view sql = r.CStringView();
      session::Decision d = CheckWithCopy(sql, true);
      if (const auto* hold = std::get_if<session::Hold>(&d)) {
        pending_hold_ = Held(sql, true, *hold, name);
        return Action::kHold;
      }
      if (const auto* refused = std::get_if<session::Refuse>(&d)) {
        if (!name.empty()) checked_names_.erase(name);
        DiscardToSync(StatementError(*refused));
        return Action::kDrop;
      }
      if (!name.empty()) MarkChecked(name);
      return Action::kForward;
    }
    case 'F':
      return Action::kResolveFunction;  // decided once its function is known
    case 'B': {
      // A named statement is checked again when it is executed: policy may have changed since
      // its Parse.
      WireReader r(m.payload);
      r.CStringView();  // portal
      absl::string_view name = r.CStringView();
      if (name.empty() || (!gate_.read_only() && guardrails_.empty() &&
                           deps_.policy->generation() == policy_generation_)) {
        return Action::kForward;
      }
      // Approved at its Parse: that approval covers this one execution.
      if (auto it = approved_once_.find(name); it != approved_once_.end()) {
        approved_once_.erase(it);
        return Action::kForward;
      }
      // Checked already under the policy in force: the answer would be the same.
      if (checked_generation_ == deps_.policy->generation() && checked_names_.contains(name)) {
        return Action::kForward;
      }
      const std::string* text = tracker_.StatementText(name);
      if (text == nullptr) return Action::kForward;  // unknown to us: the server refuses it
      std::string sql = *text;
      session::Decision d = Check(sql, true, /*parsing=*/false);
      if (const auto* hold = std::get_if<session::Hold>(&d)) {
        pending_hold_ = Held(sql, true, *hold, name);
        pending_hold_->statement.parameters = BindParameters(m.payload);
        return Action::kHold;
      }
      if (const auto* refused = std::get_if<session::Refuse>(&d)) {
        DiscardToSync(StatementError(*refused));
        return Action::kDrop;
      }
      MarkChecked(name);
      return Action::kForward;
    }
    case 'E': {
      if (!MaskingOn()) return Action::kForward;
      WireReader r(m.payload);
      return router_.NeedsDescribe(r.CStringView()) ? Action::kDescribeFirst : Action::kForward;
    }
    case 'S':
      expected_.push_back(Expectation{std::move(pending_refusal_), false, false});
      pending_refusal_.clear();
      discarding_ = false;
      return Action::kForward;
    default:
      return Action::kForward;
  }
}

std::vector<std::string> Session::BindParameters(absl::string_view payload) {
  constexpr size_t kMax = 100;
  constexpr size_t kMaxBytes = 1024;
  std::vector<std::string> out;
  auto bind = Bind::Decode(payload);
  if (!bind.ok()) return out;  // the server refuses it
  const auto& formats = bind->param_formats;
  for (size_t i = 0; i < bind->params.size() && i < kMax; ++i) {
    const auto& p = bind->params[i];
    if (!p) {
      out.push_back("NULL");
      continue;
    }
    bool binary = formats.size() == 1 ? formats[0] == 1 : (i < formats.size() && formats[i] == 1);
    std::string v = binary ? "\\x" + HexEncode(*p) : *p;
    if (v.size() > kMaxBytes) v = v.substr(0, kMaxBytes) + "...";
    out.push_back(std::move(v));
  }
  return out;
}

asio::awaitable<absl::StatusOr<ApprovalOutcome>> Session::Hold(const HoldRequest& h) {
  const GuardrailDecision& d = h.statement.guardrail;
  absl::Duration timeout = session::ApprovalHold::Timeout(guardrails_policy_->snapshot, d.approval);
  session::HoldCaller caller{connection_name_, identity_};
  session::ApprovalHold::Notify notify =
      [this](const std::string& text) -> asio::awaitable<absl::Status> {
    std::string notice = ErrorOrNotice::Make("NOTICE", "00000", text).Encode('N');
    co_return co_await client_.Write(notice);
  };
  auto waited = co_await hold_.Wait(h.statement, caller, timeout, notify);
  if (!waited.ok()) co_return waited.status();
  const std::string& sql = h.statement.sql;
  const char* decision = audit_.Approval(EventText(sql, &Statements().Get(sql), h.extended), d,
                                         waited->approval_id, waited->outcome);
  LogInfo("approval request ", waited->approval_id, " for ", identity_.subject, " on ",
          connection_name_, ": ", decision,
          waited->outcome.reason.empty() ? "" : " (" + waited->outcome.reason + ")");
  co_return waited->outcome;
}

Session::Action Session::Release(const HoldRequest& h, char type, const ApprovalOutcome& outcome) {
  session::Decision d = session::ApprovalHold::Verdict(outcome, h.statement.guardrail);
  if (std::holds_alternative<session::Allow>(d)) {
    if (type == 'Q') {
      expected_.push_back(Expectation{});
    } else if (!h.name.empty()) {
      approved_once_.insert(h.name);  // its next Bind runs once without asking again
    }
    return Action::kForward;
  }
  std::string refusal = StatementError(std::get<session::Refuse>(d));
  if (type == 'Q') {
    expected_.push_back(Expectation{std::move(refusal), true, false});
    return Action::kSubstitute;
  }
  if (!h.name.empty()) checked_names_.erase(h.name);
  DiscardToSync(std::move(refusal));
  return Action::kDrop;
}

void Session::MarkChecked(absl::string_view name) {
  constexpr size_t kMaxChecked = 10000;
  uint64_t generation = deps_.policy->generation();
  if (generation != checked_generation_ || checked_names_.size() >= kMaxChecked) {
    checked_names_.clear();
    checked_generation_ = generation;
  }
  checked_names_.insert(std::string(name));
}

Session::HoldRequest Session::Held(absl::string_view sql, bool extended, const session::Hold& hold,
                                   absl::string_view name) {
  session::HeldStatement held{
      std::string(sql), Statements().Get(sql).shape.fingerprint, hold.guardrail, {}};
  return HoldRequest{std::move(held), extended, std::string(name)};
}

void Session::ObserveFrontend(const RawMessage& m) {
  WireReader r(m.payload);
  switch (m.type) {
    case 'Q': {
      absl::string_view sql = r.CStringView();
      tracker_.OnQuery(sql, frontend_now_);
      audit_.Forwarding(sql);
      router_.OnQuery(sql, MaskingOn());
      break;
    }
    case 'P': {
      absl::string_view name = r.CStringView();
      tracker_.OnParse(name, r.CStringView());
      router_.OnParse(name);
      break;
    }
    case 'B': {
      absl::string_view portal = r.CStringView();
      absl::string_view statement = r.CStringView();
      tracker_.OnBind(portal, statement);
      router_.OnBind(m.payload, MaskingOn() ? tracker_.SharedStatementText(statement) : nullptr);
      break;
    }
    case 'D':
      router_.OnDescribe(m.payload, MaskingOn());
      break;
    case 'E': {
      absl::string_view portal = r.CStringView();
      executed_since_sync_ = true;
      tracker_.OnExecute(portal, frontend_now_);
      audit_.Forwarding(tracker_.newest_text());
      router_.OnExecute(portal);
      break;
    }
    case 'C':
      if (r.Byte() == 'S') tracker_.OnCloseStatement(r.CStringView());
      router_.OnClose(m.payload);
      break;
    case 'S':
      executed_since_sync_ = false;
      router_.OnSync();
      break;
    case 'F':
      tracker_.OnQuery(function_text_, frontend_now_);
      audit_.Forwarding(function_text_);
      router_.OnFunctionCall();
      break;
    default:
      break;
  }
}

void Session::ObserveBackend(const RawMessage& m) {
  switch (m.type) {
    case 'D':
      tracker_.OnDataRow(m.payload.size());
      break;
    case 'C': {
      WireReader r(m.payload);
      tracker_.OnCommandComplete(r.CStringView(), backend_now_);
      break;
    }
    case 'E': {
      auto e = ErrorOrNotice::Decode(m.payload);
      if (e.ok())
        tracker_.OnError(e->Get('C').value_or(""), e->Get('M').value_or(""), backend_now_);
      break;
    }
    case 'I':
      tracker_.OnEmptyQuery(backend_now_);
      break;
    case 's':
      tracker_.OnPortalSuspended(backend_now_);
      break;
    case 'Z':
      tracker_.OnReadyForQuery(backend_now_);
      break;
    default:
      break;
  }
}

void Session::EmitCompleted() {
  for (const StatementRecord& r : completed_) OnStatement(r);
  completed_.clear();
}

audit::StatementText Session::EventText(absl::string_view sql, const StatementInfo* info,
                                        bool extended) {
  audit::StatementText t;
  SetEventText(&t, sql, info, extended);
  return t;
}

void Session::SetEventText(audit::StatementText* t, absl::string_view sql,
                           const StatementInfo* info, bool extended) {
  t->SetStatement(sql);
  if (info != nullptr) t->fingerprint.assign(info->shape.fingerprint);
  t->classification.assign(ClassName(info != nullptr ? info->overall : StatementClass::kUnknown));
  t->query_protocol.assign(extended ? "extended" : "simple");
}

void Session::OnStatement(const StatementRecord& rec) {
  // Prepared and re-parsed statements come back with the same text object: their facts are
  // looked up once.
  if (rec.text != last_text_) {
    const StatementInfo& got = Statements().Get(*rec.text);
    last_info_ = &got;
    last_text_ = Statements().Kept(got) ? rec.text : nullptr;
  }
  const StatementInfo& info = *last_info_;
  // Who ran it is in the session's start event (joined by session id); a statement event
  // carries only what is particular to it, and leaves out empty fields. One event is reused:
  // its strings keep their capacity.
  audit::StatementEvent& event = audit_.Answer();
  SetEventText(&event.text, *rec.text, &info, rec.extended);
  event.rows = rec.rows;
  event.bytes = rec.row_bytes;
  event.duration_us = absl::ToInt64Microseconds(rec.duration);
  event.command_tags.assign(rec.tags);
  event.sqlstate.assign(rec.sqlstate);
  event.error.assign(rec.error);
  event.suspended = rec.suspended;
  if (rec.masked_rows > 0) {
    event.masked_by = absl::StrJoin(rec.masked_by, ",");
    event.masked_rows = rec.masked_rows;
  }
  audit_.Answered();
}

}  // namespace sluice::agent::postgres::session_internal
