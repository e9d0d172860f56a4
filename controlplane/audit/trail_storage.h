// What the audit domain (trail.h) needs of a store: rows, read and written, with no rule of their
// own. The rules that make the trail tamper-evident — the hash chain and the agents' signed
// checkpoints, the control plane's signed heads, totals and chain resumes, where recordings go,
// what the session index says — are written once, in controlplane/audit/, over this interface;
// a store implements storage only (controlplane/store/sqlite_trail_rows.h for SQLite).
//
// Ingest calls (AuditTrail::Append, Resume, AnchorStored) run inside the store's write
// transaction; verify's reads inside one read snapshot. An implementation is used from one thread
// at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/audit/session_index.h"
#include "controlplane/audit/trail_anchor.h"

namespace sluice::controlplane {

// The bytes one audit event carried as its session's recording, stored apart from the event.
struct RecordingSlice {
  uint64_t sequence = 0;
  std::string data;
};

// An agent's chain as stored: the highest stored sequence (0: nothing), the chain hash its next
// new event must name, and its registered audit key (raw Ed25519; empty: none).
struct AgentChainRow {
  uint64_t committed = 0;
  std::string head;
  std::string audit_key;
};

// The new events of one batch, stored as one chunk.
struct ChunkSpan {
  uint64_t first_sequence = 0;
  uint64_t last_sequence = 0;
  int64_t first_time_ms = 0;
  int64_t last_time_ms = 0;
  uint64_t events = 0;
};

// The stored chunks of one agent: the first and the last by id, their sequences and the records.
struct AgentChunks {
  std::string agent_id;
  int64_t first_chunk = 0;
  int64_t last_chunk = 0;
  uint64_t first_sequence = 0;
  uint64_t last_sequence = 0;
  uint64_t records = 0;
};

// The signed rows (trail_anchor.h) as stored, each with its signature.
struct StoredTrailHead {
  TrailHead head;
  std::string signature;
  AgentCheckpoint checkpoint;  // the latest kept with the head; sequence 0: none
};
struct StoredTotals {
  TrailTotals totals;
  std::string signature;
};
struct StoredTombstone {
  PurgeTombstone tombstone;
  std::string signature;
};
struct StoredResume {
  ChainResume resume;
  std::string signature;
};

// A session's row in the session index (what `sessions list` and `sessions show` read).
struct SessionIndexRow {
  std::string agent_id;
  std::string connection;
  std::string subject;
  std::string issuer;
  std::string summary;  // a serialized v1::SessionSummary
  int64_t started_ms = 0;
  int64_t ended_ms = 0;
  std::string outcome;
  std::string reason;
  int64_t statements = 0;
  int64_t errors = 0;
  std::string decisions;  // TagList form
  std::string rules;      // TagList form
  std::string attribution;
};

class TrailStorage {
 public:
  virtual ~TrailStorage() = default;

  // --- an agent's chain (ingest, resume) ---
  // NotFound when the agent is not enrolled.
  virtual absl::StatusOr<AgentChainRow> AgentChain(const std::string& agent_id) = 0;
  // Sets the agent's committed sequence and chain head (committed: nullopt leaves it).
  virtual absl::Status SetAgentChain(const std::string& agent_id, std::optional<uint64_t> committed,
                                     const std::string& head) = 0;
  // Stores `records` (framed records, without recordings) as a new chunk; returns its id.
  virtual absl::StatusOr<int64_t> PutChunk(const std::string& agent_id, const ChunkSpan& span,
                                           absl::string_view records) = 0;
  // Keeps recording slices, by session, so that Recordings() reads them back.
  virtual absl::Status PutRecordings(
      const std::string& agent_id,
      const std::map<std::string, std::vector<RecordingSlice>>& slices) = 0;
  // Applies a batch's session index changes; every session in it is linked to chunk `chunk`.
  virtual absl::Status PutSessionIndex(const std::string& agent_id, const SessionIndexBatch& batch,
                                       int64_t chunk) = 0;
  // The stored chunk that holds `sequence` of the agent, if any: its id, first sequence and
  // framed records.
  struct Chunk {
    int64_t id = 0;
    uint64_t first_sequence = 0;
    std::string records;
  };
  virtual absl::StatusOr<std::optional<Chunk>> ChunkHolding(const std::string& agent_id,
                                                            uint64_t sequence) = 0;
  // How many records of the agent are stored in chunks that start after `sequence`.
  virtual absl::StatusOr<uint64_t> RecordsInChunksAfter(const std::string& agent_id,
                                                        uint64_t sequence) = 0;
  // A chain resume of the agent after (sequence, hash) whose held_through_sequence is `held`
  // (exact) or, with `below`, the latest below it.
  virtual absl::StatusOr<std::optional<ChainResume>> FindResume(const std::string& agent_id,
                                                                uint64_t sequence,
                                                                const std::string& hash,
                                                                uint64_t held, bool below) = 0;
  virtual absl::Status PutResume(const ChainResume& resume, const std::string& signature) = 0;
  // A control-plane audit record (the store's own audit log).
  virtual absl::Status AppendOperatorRecord(int64_t time_ms, const std::string& actor,
                                            const std::string& action, const std::string& target,
                                            const std::string& detail) = 0;

  // --- the signed rows ---
  virtual absl::StatusOr<std::optional<StoredTrailHead>> TrailHeadOf(
      const std::string& agent_id) = 0;
  virtual absl::Status PutTrailHead(const TrailHead& head, const std::string& signature) = 0;
  virtual absl::Status PutCheckpoint(const std::string& agent_id,
                                     const AgentCheckpoint& checkpoint) = 0;
  virtual absl::StatusOr<uint64_t> TrailHeadCount() = 0;
  virtual absl::StatusOr<std::optional<StoredTotals>> Totals() = 0;
  virtual absl::Status PutTotals(const TrailTotals& totals, const std::string& signature) = 0;
  // The agent's stored records: the lowest first sequence and how many (0, 0 when none).
  virtual absl::StatusOr<std::pair<uint64_t, uint64_t>> StoredExtent(
      const std::string& agent_id) = 0;

  // --- what verify reads (small tables whole; chunks in order) ---
  virtual absl::StatusOr<absl::flat_hash_map<std::string, std::string>> AuditKeys() = 0;
  virtual absl::StatusOr<std::vector<StoredTrailHead>> TrailHeads() = 0;
  virtual absl::StatusOr<std::vector<StoredTombstone>> Tombstones() = 0;
  // By agent, then held_through_sequence.
  virtual absl::StatusOr<std::vector<StoredResume>> Resumes() = 0;
  // Every agent with stored chunks, by agent id.
  virtual absl::StatusOr<std::vector<AgentChunks>> ChunksByAgent() = 0;
  // The framed records of one chunk (DataLoss when they cannot be read back).
  virtual absl::StatusOr<std::string> ChunkRecords(int64_t chunk) = 0;
  // Every stored chunk, by agent then id, with its framed records or why they cannot be read.
  // Stops at the first error `visit` returns, and returns it.
  using ChunkVisitor = std::function<absl::Status(int64_t chunk, const std::string& agent_id,
                                                  absl::StatusOr<std::string> records)>;
  virtual absl::Status VisitChunks(const ChunkVisitor& visit) = 0;
  // The recording slices of `session_id` with sequences above `after`, by sequence.
  virtual absl::StatusOr<std::map<uint64_t, std::string>> Recordings(const std::string& session_id,
                                                                     uint64_t after) = 0;
  virtual absl::StatusOr<std::optional<SessionIndexRow>> SessionRow(
      const std::string& session_id) = 0;
  // The chunks the index links a session to.
  virtual absl::StatusOr<std::set<int64_t>> SessionChunks(const std::string& session_id) = 0;
  // Every row of the session index: its id, agent and start.
  virtual absl::Status VisitSessionRows(
      const std::function<void(const std::string& session_id, const std::string& agent_id,
                               int64_t started_ms)>& visit) = 0;
  // Since when index rows hold the columns added after the first schema (rows written before hold
  // their defaults and are not compared on them): 0 (always) when the store was created with
  // them, else when it was upgraded. `tags_ms`: decisions, rules, attribution; `summaries_ms`:
  // the summary as the start event gives it.
  struct IndexedSince {
    int64_t tags_ms = 0;
    int64_t summaries_ms = 0;
  };
  virtual IndexedSince IndexColumnsSince() = 0;
};

}  // namespace sluice::controlplane
