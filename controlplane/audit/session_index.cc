#include "controlplane/audit/session_index.h"

#include <cstring>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/audit/events.h"

namespace sluice::controlplane {

v1::SessionSummary SummaryFromEvent(const std::string& agent_id, const v1::AuditEvent& e) {
  audit::Who who;
  v1::SessionSummary s;
  if (e.type() == audit::SessionStartEvent::kType) {
    audit::SessionStartEvent start = audit::SessionStartEvent::Read(e.json());
    who = std::move(start.who);
    s.set_access(start.access);
    s.set_rule(start.rule);
  } else {
    who = audit::SessionRefusedEvent::Read(e.json()).who;
  }
  s.set_session_id(e.session_id());
  s.set_agent_id(agent_id);
  s.set_connection(who.connection);
  s.set_subject(who.subject);
  s.set_issuer(who.issuer);
  for (const auto& g : who.groups) s.add_groups(g);
  s.mutable_attribution()->insert(who.attribution.begin(), who.attribution.end());
  s.set_client_addr(who.client_addr);
  s.set_started_unix_ms(e.time_unix_ms());
  s.set_tls(who.tls);
  return s;
}

std::optional<SessionTags> EventTags(const v1::AuditEvent& e) {
  // Most statement events carry neither (a search of the body, not a parse: 6% of ingest).
  if (audit::IsPlainStatementBody(e.json())) return std::nullopt;
  std::string decision, masked_by;
  std::vector<std::string> rules;
  if (e.type() == audit::StatementEvent::kType) {
    audit::StatementEvent s = audit::StatementEvent::Read(e.json());
    decision = std::move(s.decision);
    masked_by = std::move(s.masked_by);
    rules = {std::move(s.guardrail.guardrail), std::move(s.guardrail.approval_policy)};
  } else if (e.type() == audit::AlertEvent::kType) {
    audit::AlertEvent a = audit::AlertEvent::Read(e.json());
    decision = audit::AlertEvent::kDecision;
    rules = {std::move(a.guardrail.guardrail), std::move(a.guardrail.approval_policy)};
  } else if (e.type() == audit::ApprovalEvent::kType) {
    audit::ApprovalEvent a = audit::ApprovalEvent::Read(e.json());
    decision = std::move(a.decision);
    rules = {std::move(a.guardrail), std::move(a.approval_policy)};
  }
  if (decision.empty() && masked_by.empty()) return std::nullopt;
  SessionTags t;
  if (!decision.empty()) t.decisions.insert(decision);
  for (std::string& r : rules) {
    if (!r.empty()) t.rules.insert(std::move(r));
  }
  for (absl::string_view r : absl::StrSplit(masked_by, ',', absl::SkipEmpty())) t.rules.emplace(r);
  return t;
}

std::string TagList(const std::set<std::string>& tags) {
  return tags.empty() ? std::string() : absl::StrCat(",", absl::StrJoin(tags, ","), ",");
}

std::string MergeTagList(const std::string& stored, const std::set<std::string>& add) {
  std::set<std::string> all(add);
  for (absl::string_view v : absl::StrSplit(stored, ',', absl::SkipEmpty())) all.emplace(v);
  return TagList(all);
}

std::string AttributionJson(const v1::SessionSummary& summary) {
  nlohmann::json attribution = nlohmann::json::object();
  for (const auto& [k, v] : summary.attribution()) attribution[k] = v;
  return attribution.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string EventReason(const v1::AuditEvent& e) {
  if (e.type() == audit::SessionRefusedEvent::kType)
    return audit::SessionRefusedEvent::Read(e.json()).reason;
  if (e.type() == audit::SessionEndEvent::kType)
    return audit::SessionEndEvent::Read(e.json()).reason;
  return "";
}

SessionIndexBatch IndexBatch(const std::string& agent_id, const std::vector<v1::AuditEvent>& events,
                             size_t first_new) {
  SessionIndexBatch out;
  // Decisions and rules per session, for the session filters. Only events that name one are
  // parsed (most statement events do not).
  auto tag = [&out](const v1::AuditEvent& e) {
    auto t = EventTags(e);
    if (!t) return;
    SessionTags& into = out.tags[e.session_id()];
    into.decisions.insert(t->decisions.begin(), t->decisions.end());
    into.rules.insert(t->rules.begin(), t->rules.end());
  };
  using Kind = SessionIndexBatch::Change::Kind;
  for (size_t i = first_new; i < events.size(); ++i) {
    const v1::AuditEvent& e = events[i];
    out.sessions.insert(e.session_id());
    const std::string& type = e.type();
    if (type == audit::StatementEvent::kType) {
      SessionIndexBatch::Counts& c = out.counts[e.session_id()];
      ++c.statements;
      if (e.failed()) ++c.errors;
      tag(e);
      continue;
    }
    if (type == audit::AlertEvent::kType || type == audit::ApprovalEvent::kType) {
      tag(e);
      continue;
    }
    SessionIndexBatch::Change change;
    if (type == audit::SessionEndEvent::kType) {
      change.kind = Kind::kEnd;
    } else if (type == audit::SessionStartEvent::kType) {
      change.kind = Kind::kStart;
    } else if (type == audit::SessionRefusedEvent::kType) {
      change.kind = Kind::kRefused;
    } else {
      continue;
    }
    change.session_id = e.session_id();
    change.time_ms = e.time_unix_ms();
    change.reason = EventReason(e);
    if (change.kind != Kind::kEnd) change.summary = SummaryFromEvent(agent_id, e);
    out.changes.push_back(std::move(change));
  }
  return out;
}

void DeriveSession(const std::string& agent_id, const v1::AuditEvent& e, int64_t chunk,
                   DerivedSession* s) {
  if (s->chunks.empty() || s->chunks.back() != chunk) s->chunks.push_back(chunk);
  if (!e.purged_hash().empty()) {
    s->purged = true;
    return;
  }
  const std::string& type = e.type();
  if (type == audit::StatementEvent::kType || type == audit::AlertEvent::kType ||
      type == audit::ApprovalEvent::kType) {
    if (type == audit::StatementEvent::kType && s->started) {
      ++s->statements;
      if (e.failed()) ++s->errors;
    }
    if (auto t = EventTags(e); t && s->started) {
      s->tags.decisions.insert(t->decisions.begin(), t->decisions.end());
      s->tags.rules.insert(t->rules.begin(), t->rules.end());
    }
    return;
  }
  if (type == audit::SessionEndEvent::kType) {
    if (!s->started) return;  // ingest's update finds no row
    s->ended_ms = e.time_unix_ms();
    s->outcome = "closed";
    s->reason = EventReason(e);
    return;
  }
  if (type != audit::SessionStartEvent::kType && type != audit::SessionRefusedEvent::kType) return;
  if (s->started) return;  // the first start wins (INSERT OR IGNORE)
  const bool refused = type == audit::SessionRefusedEvent::kType;
  s->started = true;
  s->summary = SummaryFromEvent(agent_id, e);
  s->ended_ms = refused ? e.time_unix_ms() : 0;
  s->outcome = refused ? "refused" : "open";
  s->reason = EventReason(e);
}

}  // namespace sluice::controlplane
