// The audit trail of one session, for any protocol: builds the typed events (common/audit/
// events.h) of its life — refused or started, statements answered, refused, alerted on or held,
// ended — and emits them into the agent's EventSink with the session's recording since its
// previous event and its in-flight accounting (agent/audit/inflight.h: a request noted before it
// is forwarded, settled by the statement event that answers it).
//
// The same calls count the session in the agent's metrics (agent/session/metrics.h).
//
// Fail closed: once an event cannot be queued (the sink is full or failing), failed() is true
// and the protocol adapter ends the session. One SessionAudit per session, used on the session's
// thread only. What the adapter knows of its wire comes in as values: the statement's text
// fields, the code its wire gave a refusal (a SQLSTATE).
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/approvals/broker.h"
#include "agent/audit/event_sink.h"
#include "agent/audit/inflight.h"
#include "agent/session/decision.h"
#include "agent/session/metrics.h"
#include "agent/session/recorder.h"
#include "common/audit/events.h"

namespace sluice::agent::session {

class SessionAudit {
 public:
  // A long stretch without events (a flood of notices, a long COPY) still reaches the spool in
  // slices of about this size.
  static constexpr size_t kRecordingFlushBytes = 256 << 10;

  // `protocol`: the connection's (audit::kProtocolPostgres); `inflight` may be null (no table);
  // `recorder` (not owned) is the session's, whose recording travels with each event. `metrics`
  // (not owned): where the session is counted (null: SessionMetrics::Default()).
  SessionAudit(EventSink* events, InflightTable* inflight, std::string session_id,
               const char* protocol, Recorder* recorder, SessionMetrics* metrics = nullptr)
      : events_(events),
        inflight_(inflight),
        session_id_(std::move(session_id)),
        protocol_(protocol),
        recorder_(recorder),
        metrics_(metrics != nullptr ? metrics : &SessionMetrics::Default()) {}
  SessionAudit(const SessionAudit&) = delete;
  SessionAudit& operator=(const SessionAudit&) = delete;

  const std::string& session_id() const { return session_id_; }
  // An event could not be queued: the session must end.
  bool failed() const { return failed_; }
  // The session started (Started): it has an end to record.
  bool started() const { return started_; }
  // Statements so far: answered, and refused at the agent (including after a hold).
  int64_t statements() const { return statements_; }

  // ---- The session ----

  // The login was refused (before Started): who asked, and `code`, what the refusal is on its
  // wire (a SQLSTATE; empty on a wire without codes).
  void Refused(audit::Who who, const Refuse& refusal, absl::string_view code);
  // The session starts: `start` (its protocol is set here); from now on requests are noted in
  // the in-flight table.
  void Started(audit::SessionStartEvent start);
  // The session ended (after Started): why ("closed", or the error), with its totals.
  void Ended(absl::string_view reason, absl::Duration duration, int64_t bytes_from_client,
             int64_t bytes_from_server);

  // ---- Its statements ----

  // A request is forwarded to the server with this text (its answer settles it).
  void Forwarding(absl::string_view text) {
    if (inflight_slot_ >= 0) inflight_->Begin(inflight_slot_, text);
  }
  // The event of a statement the server answered: Answer() gives the session's reused event,
  // emptied (its strings keep their capacity), for the adapter to fill; Answered() emits it.
  audit::StatementEvent& Answer() {
    answered_.Clear();
    return answered_;
  }
  void Answered();
  // A statement refused at the agent (it never reached the server), and its wire's code.
  void StatementRefused(audit::StatementText text, const Refuse& refusal, absl::string_view code);
  // A statement an alert guardrail let through.
  void Alerted(audit::StatementText text, const GuardrailDecision& guardrail);
  // What became of a held statement (approval_id 0: never registered). A statement not approved
  // counts as refused. Returns the event's decision (audit::ApprovalEvent::kApproved, ...).
  const char* Approval(audit::StatementText text, const GuardrailDecision& guardrail,
                       uint64_t approval_id, const ApprovalOutcome& outcome);

  // ---- Building blocks (public for tests) ----

  static audit::ApprovalEvent ApprovalEventOf(audit::StatementText text,
                                              const GuardrailDecision& guardrail,
                                              uint64_t approval_id, const ApprovalOutcome& outcome);
  static audit::GuardrailHit HitOf(const GuardrailDecision& d);

  // Emits a recording event when the recording since the last event is over kRecordingFlushBytes.
  void FlushRecording() {
    if (recorder_ != nullptr && recorder_->size() >= kRecordingFlushBytes)
      Emit(audit::RecordingEvent{});
  }

  // Writes `event` into the trail. `settles`: it answers a request forwarded to the server.
  template <typename Event>
  void Emit(const Event& event, bool settles = false) {
    event.WriteJson(&buffer_);
    EmitJson(Event::kType, buffer_, event.failed(), settles);
  }

 private:
  void EmitJson(absl::string_view type, absl::string_view json, bool failed, bool settles);
  void CountApproval(ApprovalOutcome::Kind kind);  // after Started

  EventSink* events_;
  InflightTable* inflight_;
  std::string session_id_;
  const char* protocol_;
  Recorder* recorder_;
  SessionMetrics* metrics_;
  const SessionMetrics::Series* series_ = nullptr;  // the connection's, once Started
  int inflight_slot_ = -1;                          // this session's slot in inflight_ (-1: none)
  bool started_ = false;
  bool failed_ = false;
  int64_t statements_ = 0;
  std::string buffer_;              // the event being written, reused
  audit::StatementEvent answered_;  // the answered statement's event, reused
};

}  // namespace sluice::agent::session
