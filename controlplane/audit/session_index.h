// The session index (the `sessions` table) as a function of the events: what ingest writes for
// each event, and what `audit verify` derives again from the stored events to compare with what
// the table holds. One definition for both, so that they cannot drift apart.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "sluice/v1/admin.pb.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::controlplane {

// The summary a session_start or session_refused event gives its session (its body read as
// common/audit/events.h defines it).
v1::SessionSummary SummaryFromEvent(const std::string& agent_id, const v1::AuditEvent& e);

// What the session filters look at: the decisions of a session's statements and the rules involved.
struct SessionTags {
  std::set<std::string> decisions;
  std::set<std::string> rules;
};
// The tags a statement, alert or approval event adds to its session; nullopt (quickly: the body is
// searched, not parsed) when it names no decision and no masking rule.
std::optional<SessionTags> EventTags(const v1::AuditEvent& e);
// The stored form of a tag set: ",a,b," (sorted), or "" when empty; MergeTagList adds `add` to a
// stored list.
std::string TagList(const std::set<std::string>& tags);
std::string MergeTagList(const std::string& stored, const std::set<std::string>& add);
// The stored form of a summary's attribution claims (the `attribution` column): a JSON object.
std::string AttributionJson(const v1::SessionSummary& summary);
// The `reason` of a session_refused or session_end event ("" when none, or another type).
std::string EventReason(const v1::AuditEvent& e);

// A session's index row as the events derive it.
struct DerivedSession {
  bool started = false;  // a session_start or session_refused event was seen: the index has a row
  bool purged = false;   // retention purged it: the index has no row
  v1::SessionSummary summary;  // from its first start event; ended, outcome, reason, counts below
  int64_t ended_ms = 0;
  std::string outcome;
  std::string reason;
  uint64_t statements = 0;
  uint64_t errors = 0;
  SessionTags tags;
  std::vector<int64_t> chunks;  // the stored chunks holding its events, ascending
};

// What one ingested batch changes in the session index, in the order ingest applies it.
struct SessionIndexBatch {
  // A session_start or session_refused event inserts its session's row (the first start wins); a
  // session_end event closes it. In event order.
  struct Change {
    enum class Kind { kStart, kRefused, kEnd } kind = Kind::kStart;
    std::string session_id;
    int64_t time_ms = 0;
    std::string reason;          // kRefused, kEnd
    v1::SessionSummary summary;  // kStart, kRefused
  };
  std::vector<Change> changes;
  struct Counts {
    int64_t statements = 0;
    int64_t errors = 0;
  };
  absl::flat_hash_map<std::string, Counts> counts;     // statements added per session
  absl::flat_hash_map<std::string, SessionTags> tags;  // decisions and rules added per session
  absl::flat_hash_set<std::string> sessions;           // every session with an event in the batch
};
// The index changes of events[first_new..] (one agent's batch, in sequence order).
SessionIndexBatch IndexBatch(const std::string& agent_id, const std::vector<v1::AuditEvent>& events,
                             size_t first_new);

// Feeds one stored event (in the agent's sequence order) into `s`, as ingest would have indexed
// it; `chunk` is the stored chunk that holds it.
void DeriveSession(const std::string& agent_id, const v1::AuditEvent& e, int64_t chunk,
                   DerivedSession* s);

}  // namespace sluice::controlplane
