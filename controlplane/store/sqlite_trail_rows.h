// The SQLite store's rows of the audit domain (controlplane/audit/trail_storage.h): event chunks,
// recording blocks, the session index, agents' chains, trail heads, totals, resumes and
// tombstones, over the store's connection. Made by SqliteStore for one call, under its lock and
// inside its transaction; holds no rule of its own.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/zstd_codec.h"
#include "controlplane/audit/trail_storage.h"
#include "controlplane/store/recording_files.h"
#include "controlplane/store/sqlite_stmt.h"

namespace sluice::controlplane {

// The framed records of a stored chunk (common/audit/records.h): a zstd frame is inflated, raw
// records (chunks stored before compression) are returned as they are. DataLoss names the chunk.
absl::StatusOr<std::string> StoredChunkRecords(std::string stored, int64_t chunk);

class SqliteTrailRows : public TrailStorage {
 public:
  // `chunk_buffer` holds the compressed chunk StoredChunk returns, until its next call.
  SqliteTrailRows(sqlite3* db, StmtCache& statements, RecordingFiles& recordings,
                  ZstdCompressor& chunk_zstd, std::string& chunk_buffer)
      : db_(db),
        statements_(statements),
        recordings_(recordings),
        chunk_zstd_(chunk_zstd),
        chunk_buffer_(chunk_buffer) {}

  // What event_chunks.records holds for `records` (framed records): one zstd frame
  // (StoredChunkRecords reads it back), valid until the next call.
  absl::StatusOr<absl::string_view> StoredChunk(absl::string_view records);

  absl::StatusOr<AgentChainRow> AgentChain(const std::string& agent_id) override;
  absl::Status SetAgentChain(const std::string& agent_id, std::optional<uint64_t> committed,
                             const std::string& head) override;
  absl::StatusOr<int64_t> PutChunk(const std::string& agent_id, const ChunkSpan& span,
                                   absl::string_view records) override;
  absl::Status PutRecordings(
      const std::string& agent_id,
      const std::map<std::string, std::vector<RecordingSlice>>& slices) override;
  absl::Status PutSessionIndex(const std::string& agent_id, const SessionIndexBatch& batch,
                               int64_t chunk) override;
  absl::StatusOr<std::optional<Chunk>> ChunkHolding(const std::string& agent_id,
                                                    uint64_t sequence) override;
  absl::StatusOr<uint64_t> RecordsInChunksAfter(const std::string& agent_id,
                                                uint64_t sequence) override;
  absl::StatusOr<std::optional<ChainResume>> FindResume(const std::string& agent_id,
                                                        uint64_t sequence, const std::string& hash,
                                                        uint64_t held, bool below) override;
  absl::Status PutResume(const ChainResume& resume, const std::string& signature) override;
  absl::Status AppendOperatorRecord(int64_t time_ms, const std::string& actor,
                                    const std::string& action, const std::string& target,
                                    const std::string& detail) override;
  absl::StatusOr<std::optional<StoredTrailHead>> TrailHeadOf(const std::string& agent_id) override;
  absl::Status PutTrailHead(const TrailHead& head, const std::string& signature) override;
  absl::Status PutCheckpoint(const std::string& agent_id,
                             const AgentCheckpoint& checkpoint) override;
  absl::StatusOr<uint64_t> TrailHeadCount() override;
  absl::StatusOr<std::optional<StoredTotals>> Totals() override;
  absl::Status PutTotals(const TrailTotals& totals, const std::string& signature) override;
  absl::StatusOr<std::pair<uint64_t, uint64_t>> StoredExtent(const std::string& agent_id) override;
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> AuditKeys() override;
  absl::StatusOr<std::vector<StoredTrailHead>> TrailHeads() override;
  absl::StatusOr<std::vector<StoredTombstone>> Tombstones() override;
  absl::StatusOr<std::vector<StoredResume>> Resumes() override;
  absl::StatusOr<std::vector<AgentChunks>> ChunksByAgent() override;
  absl::StatusOr<std::string> ChunkRecords(int64_t chunk) override;
  absl::Status VisitChunks(const ChunkVisitor& visit) override;
  absl::StatusOr<std::map<uint64_t, std::string>> Recordings(const std::string& session_id,
                                                             uint64_t after) override;
  absl::StatusOr<std::optional<SessionIndexRow>> SessionRow(const std::string& session_id) override;
  absl::StatusOr<std::set<int64_t>> SessionChunks(const std::string& session_id) override;
  absl::Status VisitSessionRows(
      const std::function<void(const std::string& session_id, const std::string& agent_id,
                               int64_t started_ms)>& visit) override;
  IndexedSince IndexColumnsSince() override;

 private:
  absl::Status PutSessionChange(const std::string& agent_id,
                                const SessionIndexBatch::Change& change);

  sqlite3* db_;
  StmtCache& statements_;
  RecordingFiles& recordings_;
  ZstdCompressor& chunk_zstd_;
  std::string& chunk_buffer_;
};

}  // namespace sluice::controlplane
