#include "agent/session/metrics.h"

namespace sluice::agent::session {
namespace {

// Room for every label set of kMaxConnections connections (and "_other") in each family; the
// families' own cap is the backstop.
constexpr size_t kSeriesCap = (SessionMetrics::kMaxConnections + 1) * 8;

}  // namespace

SessionMetrics::SessionMetrics(metrics::Registry* registry)
    : sessions_started_(registry->AddCounter("sluice_agent_sessions_started_total",
                                             "Sessions admitted (logged in upstream for a "
                                             "database; one per request on Cloud Storage).",
                                             {"protocol", "connection"}, kSeriesCap)),
      sessions_active_(registry->AddGauge("sluice_agent_sessions_active", "Sessions open now.",
                                          {"protocol", "connection"}, kSeriesCap)),
      sessions_(registry->AddCounter(
          "sluice_agent_sessions_total",
          "Sessions by outcome: closed (ended normally), error (ended by an error, the client or "
          "the database gone included), refused (at login; connection empty when refused before "
          "the connection was known).",
          {"protocol", "connection", "outcome"}, kSeriesCap)),
      refusals_(registry->AddCounter("sluice_agent_session_refusals_total",
                                     "Sessions refused at login, by refusal kind.",
                                     {"protocol", "kind"})),
      statements_(registry->AddCounter(
          "sluice_agent_statements_total",
          "Statements (requests on Cloud Storage) by decision: allowed (sent to the server), "
          "refused (by the agent's own checks), blocked (by a guardrail), denied (approval "
          "denied or timed out, or needed where none can be held), unavailable (approval could "
          "not be asked for), cancelled (by the client while held).",
          {"protocol", "connection", "decision"}, kSeriesCap)),
      statement_errors_(
          registry->AddCounter("sluice_agent_statement_errors_total",
                               "Allowed statements the server answered with an error.",
                               {"protocol", "connection"}, kSeriesCap)),
      alerts_(registry->AddCounter("sluice_agent_guardrail_alerts_total",
                                   "Statements an alert guardrail let through.",
                                   {"protocol", "connection"}, kSeriesCap)),
      approvals_(registry->AddCounter(
          "sluice_agent_approvals_total",
          "Statements held for approval, by outcome: approved, denied, unavailable, cancelled.",
          {"protocol", "connection", "outcome"}, kSeriesCap)),
      upstream_errors_(registry->AddCounter(
          "sluice_agent_upstream_errors_total",
          "Sessions and statements refused because the upstream could not be reached, logged "
          "in to or asked (refusal kind upstream_unavailable).",
          {"protocol", "connection"}, kSeriesCap)),
      duration_(registry->AddHistogram(
          "sluice_agent_statement_duration_seconds",
          "Time from a statement's arrival to the end of the server's answer, for allowed "
          "statements.",
          {"protocol", "connection"}, metrics::LatencyBuckets(), kSeriesCap)) {}

SessionMetrics& SessionMetrics::Default() {
  static SessionMetrics* m = new SessionMetrics(&metrics::DefaultRegistry());
  return *m;
}

const SessionMetrics::Series* SessionMetrics::For(absl::string_view protocol,
                                                  absl::string_view connection) {
  absl::MutexLock lock(&mu_);
  auto key = std::make_pair(std::string(protocol), std::string(connection));
  auto it = series_.find(key);
  if (it != series_.end()) return it->second.get();
  if (series_.size() >= kMaxConnections) {
    key.second = metrics::kOverflowValue;
    connection = metrics::kOverflowValue;
    it = series_.find(key);
    if (it != series_.end()) return it->second.get();
  }
  auto s = std::make_unique<Series>();
  s->started = sessions_started_->Get({protocol, connection});
  s->active = sessions_active_->Get({protocol, connection});
  s->closed = sessions_->Get({protocol, connection, "closed"});
  s->error = sessions_->Get({protocol, connection, "error"});
  s->session_refused = sessions_->Get({protocol, connection, "refused"});
  s->allowed = statements_->Get({protocol, connection, "allowed"});
  s->refused = statements_->Get({protocol, connection, audit::StatementEvent::kRefused});
  s->blocked = statements_->Get({protocol, connection, audit::StatementEvent::kBlocked});
  s->denied = statements_->Get({protocol, connection, audit::StatementEvent::kDenied});
  s->unavailable = statements_->Get({protocol, connection, audit::ApprovalEvent::kUnavailable});
  s->cancelled = statements_->Get({protocol, connection, audit::ApprovalEvent::kCancelled});
  s->statement_errors = statement_errors_->Get({protocol, connection});
  s->alerts = alerts_->Get({protocol, connection});
  s->approved = approvals_->Get({protocol, connection, audit::ApprovalEvent::kApproved});
  s->approval_denied = approvals_->Get({protocol, connection, audit::ApprovalEvent::kDenied});
  s->approval_unavailable =
      approvals_->Get({protocol, connection, audit::ApprovalEvent::kUnavailable});
  s->approval_cancelled = approvals_->Get({protocol, connection, audit::ApprovalEvent::kCancelled});
  s->upstream_errors = upstream_errors_->Get({protocol, connection});
  s->duration = duration_->Get({protocol, connection});
  const Series* out = s.get();
  series_.emplace(std::move(key), std::move(s));
  return out;
}

bool SessionMetrics::ConnectionKnown(audit::RefusalKind kind) {
  using audit::RefusalKind;
  return kind == RefusalKind::kTokenRejected || kind == RefusalKind::kNoAccessRule ||
         kind == RefusalKind::kSessionLimit || kind == RefusalKind::kUpstreamUnavailable;
}

void SessionMetrics::SessionRefused(absl::string_view protocol, absl::string_view connection,
                                    audit::RefusalKind kind) {
  const Series* s = For(protocol, ConnectionKnown(kind) ? connection : "");
  s->session_refused->Inc();
  refusals_->Get({protocol, audit::RefusalKindName(kind)})->Inc();
  if (kind == audit::RefusalKind::kUpstreamUnavailable) s->upstream_errors->Inc();
}

}  // namespace sluice::agent::session
