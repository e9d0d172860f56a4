// Agent audit events for store tests: built as an agent builds them, linked into its hash chain.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/audit/records.h"
#include "controlplane/store/store.h"

namespace sluice::controlplane {

// An event at time sequence * 10 ms.
inline v1::AuditEvent Event(uint64_t sequence, const std::string& type, const std::string& session,
                            const std::string& json, bool failed = false) {
  v1::AuditEvent e;
  e.set_sequence(sequence);
  e.set_time_unix_ms(static_cast<int64_t>(sequence) * 10);
  e.set_type(type);
  e.set_session_id(session);
  e.set_json(json);
  e.set_failed(failed);
  return e;
}

// Links events the way an agent does: each event's prev_hash is the SHA-256 of the record payload
// of the event one sequence before it (events are built again, identically, when resent).
class Chain {
 public:
  EventBatch BatchOf(std::vector<v1::AuditEvent> events) {
    EventBatch b;
    for (auto& e : events) {
      auto it = hashes_.find(e.sequence() - 1);
      e.set_prev_hash(it == hashes_.end() ? "" : it->second);
      std::string payload = e.SerializeAsString();
      hashes_[e.sequence()] = audit::ChainHash(payload);
      b.offsets.push_back(b.records.size());
      audit::AppendRecord(&b.records, payload);
    }
    b.events = std::move(events);
    return b;
  }
  // The agent restarted: its sequence resumes at `next`, and the chain goes on from `last`.
  void Restart(uint64_t last, uint64_t next) { hashes_[next - 1] = hashes_.at(last); }
  // The chain hash of the record `sequence` (built already).
  const std::string& HashOf(uint64_t sequence) const { return hashes_.at(sequence); }

 private:
  std::map<uint64_t, std::string> hashes_;
};

}  // namespace sluice::controlplane
