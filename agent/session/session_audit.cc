#include "agent/session/session_audit.h"

#include <utility>

#include "common/log.h"

namespace sluice::agent::session {

using audit::RefusalKind;

void SessionAudit::Refused(audit::Who who, const Refuse& refusal, absl::string_view code) {
  audit::SessionRefusedEvent refused;
  refused.protocol = protocol_;
  refused.who = std::move(who);
  refused.refusal_kind = refusal.kind;
  refused.reason = refusal.message;
  refused.sqlstate = std::string(code);
  refused.detail = refusal.detail;
  metrics_->SessionRefused(protocol_, refused.who.connection, refusal.kind);
  Emit(refused);
}

void SessionAudit::Started(audit::SessionStartEvent start) {
  start.protocol = protocol_;
  series_ = metrics_->For(protocol_, start.who.connection);
  series_->started->Inc();
  series_->active->Add(1);
  Emit(start);
  started_ = true;
  // Requests in flight are noted where a killed agent keeps them (agent/audit/inflight.h).
  if (inflight_ != nullptr) inflight_slot_ = inflight_->Acquire(session_id_, 0);
}

void SessionAudit::Ended(absl::string_view reason, absl::Duration duration,
                         int64_t bytes_from_client, int64_t bytes_from_server) {
  audit::SessionEndEvent end;
  end.reason = std::string(reason);
  end.totals = audit::SessionTotals{absl::ToInt64Microseconds(duration), statements_,
                                    bytes_from_client, bytes_from_server};
  if (series_ != nullptr) {
    series_->active->Add(-1);
    (reason == "closed" ? series_->closed : series_->error)->Inc();
  }
  Emit(end);
}

void SessionAudit::Answered() {
  ++statements_;
  if (series_ != nullptr) {
    series_->allowed->Inc();
    if (answered_.failed()) series_->statement_errors->Inc();
    series_->duration->Observe(static_cast<double>(answered_.duration_us) * 1e-6);
  }
  Emit(answered_, /*settles=*/true);
}

audit::GuardrailHit SessionAudit::HitOf(const GuardrailDecision& d) {
  return audit::GuardrailHit{d.guardrail, d.match, ActionName(d.action), d.target, d.approval};
}

void SessionAudit::StatementRefused(audit::StatementText text, const Refuse& refusal,
                                    absl::string_view code) {
  audit::StatementEvent event;
  event.text = std::move(text);
  event.decision = refusal.decision;
  event.refusal_kind = refusal.kind;
  if (refusal.guardrail) event.guardrail = HitOf(*refusal.guardrail);
  event.reason = refusal.message;
  event.sqlstate = std::string(code);
  ++statements_;
  if (series_ != nullptr) {
    const absl::string_view decision = refusal.decision;
    (decision == audit::StatementEvent::kBlocked  ? series_->blocked
     : decision == audit::StatementEvent::kDenied ? series_->denied
                                                  : series_->refused)
        ->Inc();
    if (refusal.kind == RefusalKind::kUpstreamUnavailable) series_->upstream_errors->Inc();
  }
  Emit(event);
}

void SessionAudit::Alerted(audit::StatementText text, const GuardrailDecision& guardrail) {
  audit::AlertEvent alert;
  alert.text = std::move(text);
  alert.guardrail = HitOf(guardrail);
  if (series_ != nullptr) series_->alerts->Inc();
  Emit(alert);
}

namespace {

// How an approval outcome is recorded: its decision, and the refusal when it was not approved.
struct ApprovalVerdict {
  const char* decision;
  RefusalKind kind;
};

ApprovalVerdict VerdictOf(ApprovalOutcome::Kind kind) {
  switch (kind) {
    case ApprovalOutcome::kApproved:
      return {audit::ApprovalEvent::kApproved, RefusalKind::kNone};
    case ApprovalOutcome::kCancelled:
      return {audit::ApprovalEvent::kCancelled, RefusalKind::kCancelled};
    case ApprovalOutcome::kUnavailable:
      return {audit::ApprovalEvent::kUnavailable, RefusalKind::kApprovalUnavailable};
    case ApprovalOutcome::kTimedOut:
      return {audit::ApprovalEvent::kDenied, RefusalKind::kApprovalTimedOut};
    case ApprovalOutcome::kDenied:
      break;
  }
  return {audit::ApprovalEvent::kDenied, RefusalKind::kApprovalDenied};
}

}  // namespace

// An approved statement is counted as allowed once the server answered it.
void SessionAudit::CountApproval(ApprovalOutcome::Kind kind) {
  switch (kind) {
    case ApprovalOutcome::kApproved:
      series_->approved->Inc();
      return;
    case ApprovalOutcome::kCancelled:
      series_->approval_cancelled->Inc();
      series_->cancelled->Inc();
      return;
    case ApprovalOutcome::kUnavailable:
      series_->approval_unavailable->Inc();
      series_->unavailable->Inc();
      return;
    case ApprovalOutcome::kTimedOut:
    case ApprovalOutcome::kDenied:
      break;
  }
  series_->approval_denied->Inc();
  series_->denied->Inc();
}

audit::ApprovalEvent SessionAudit::ApprovalEventOf(audit::StatementText text,
                                                   const GuardrailDecision& guardrail,
                                                   uint64_t approval_id,
                                                   const ApprovalOutcome& outcome) {
  const ApprovalVerdict verdict = VerdictOf(outcome.kind);
  audit::ApprovalEvent event;
  event.text = std::move(text);
  event.decision = verdict.decision;
  event.refusal_kind = verdict.kind;
  event.approval_id = static_cast<int64_t>(approval_id);
  event.guardrail = guardrail.guardrail;
  event.match = guardrail.match;
  event.approval_policy = guardrail.approval;
  event.approvers = outcome.approvers;
  event.reason = outcome.reason;
  return event;
}

const char* SessionAudit::Approval(audit::StatementText text, const GuardrailDecision& guardrail,
                                   uint64_t approval_id, const ApprovalOutcome& outcome) {
  if (outcome.kind != ApprovalOutcome::kApproved) ++statements_;
  if (series_ != nullptr) CountApproval(outcome.kind);
  Emit(ApprovalEventOf(std::move(text), guardrail, approval_id, outcome));
  return VerdictOf(outcome.kind).decision;
}

void SessionAudit::EmitJson(absl::string_view type, absl::string_view json, bool failed,
                            bool settles) {
  absl::string_view recording = recorder_ != nullptr ? recorder_->data() : absl::string_view();
  EventSink::Inflight inflight;
  if (inflight_slot_ >= 0) {
    inflight = {inflight_, inflight_slot_, settles, type == audit::SessionEndEvent::kType};
    if (inflight.release) inflight_slot_ = -1;
  }
  const bool queued = events_->Emit(type, session_id_, json, failed, recording, inflight);
  if (recorder_ != nullptr) recorder_->Clear();
  if (!queued) {
    failed_ = true;
    if (inflight.release)
      inflight_->Account(inflight.slot, 0, false, true);  // the slot is free all the same
    LogError("audit buffer full: an event of session ", session_id_, " could not be queued");
  }
}

}  // namespace sluice::agent::session
