// The embedded store: one SQLite database in WAL mode under the control plane's data dir.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/zstd_codec.h"
#include "controlplane/audit/trail.h"
#include "controlplane/store/recording_files.h"
#include "controlplane/store/sqlite_stmt.h"
#include "controlplane/store/sqlite_trail_rows.h"
#include "controlplane/store/store.h"

namespace sluice::controlplane {

class SqliteStore : public Store {
 public:
  // Opens (creating if needed) the database at `path`, switches it to WAL mode and applies the
  // schema migrations. Session recordings go to files in the directory `recordings` beside it.
  // `trail_key_pem` is the control plane's trail key (Ed25519, PKCS#8 PEM: trail_anchor.h); empty:
  // `trail-key.pem` beside the database, created (0600) when missing. A store whose trails were
  // signed by another key is refused (FailedPrecondition): verification would fail for all of them.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                           const std::string& trail_key_pem = "");
  ~SqliteStore() override;

  absl::StatusOr<uint64_t> PolicyVersion() override;
  absl::StatusOr<uint64_t> UpsertResources(const std::vector<StoredResource>& batch,
                                           const std::string& actor, int64_t now_ms) override;
  absl::StatusOr<uint64_t> DeleteResource(const std::string& kind,
                                          const std::string& name) override;
  absl::StatusOr<std::vector<StoredResource>> ListResources(const std::string& kind) override;
  absl::StatusOr<StoredResource> GetResource(const std::string& kind,
                                             const std::string& name) override;
  absl::StatusOr<RolloutRecord> StartRollout(const std::vector<StoredResource>& batch,
                                             const std::map<std::string, std::string>& selector,
                                             const std::string& actor, int64_t now_ms) override;
  absl::StatusOr<std::optional<RolloutRecord>> GetRollout(int64_t id) override;
  absl::StatusOr<std::vector<StoredResource>> RolloutPreviousResources(int64_t id) override;
  absl::StatusOr<std::optional<RolloutRecord>> HaltRollout(uint64_t version,
                                                           const std::string& agent_id,
                                                           const std::string& error,
                                                           int64_t now_ms) override;
  absl::StatusOr<RolloutRecord> PromoteRollout(int64_t id, const std::string& actor,
                                               const std::string& reason, int64_t now_ms) override;
  absl::StatusOr<RolloutAbort> AbortRollout(int64_t id, const std::string& actor,
                                            const std::string& reason, int64_t now_ms) override;

  // What is sealed under the master key (controlplane/service/master_keys.h): the inline
  // secrets of the resources and of a rollout's saved documents, and the sealed keys. Each goes
  // through `reseal`, which returns what to store (the same bytes leave the row as it is); all
  // in one transaction, which an error from `reseal` rolls back. Returns how many rows changed.
  struct SealedRow {
    enum class Source { kResource, kRolloutResource, kKey };
    Source source = Source::kResource;
    std::string spec;  // the resource's (kResource, kRolloutResource)
    std::string name;  // the key's (kKey)
    std::string sealed;
  };
  using Resealer = std::function<absl::StatusOr<std::string>(const SealedRow&)>;
  absl::StatusOr<int> ResealAll(const Resealer& reseal);
  // A sealed key by name (nullopt when none is stored), and storing one that is not there yet.
  absl::StatusOr<std::optional<std::string>> SealedKey(const std::string& name);
  absl::Status AddSealedKey(const std::string& name, const std::string& sealed);

  absl::Status CreateEnrollment(const EnrollmentRecord& enrollment) override;
  absl::StatusOr<AgentRecord> ConsumeEnrollment(const std::string& token_hash,
                                                const std::string& secret_hash, int64_t now_ms,
                                                const EnrollmentCheck& check) override;
  absl::StatusOr<std::vector<AgentRecord>> ListAgents() override;
  absl::Status UpdateAgentHello(const std::string& id, const std::string& agent_version,
                                const std::vector<std::string>& capabilities,
                                int64_t now_ms) override;
  absl::Status UpdateAgentSeen(const std::string& id, int64_t now_ms) override;
  absl::Status RecordAck(const std::string& id, uint64_t version, int64_t now_ms) override;
  absl::Status RecordNack(const std::string& id, uint64_t version, const std::string& error,
                          int64_t now_ms) override;

  absl::StatusOr<int64_t> AppendAudit(const AuditRecord& record) override;
  absl::StatusOr<std::vector<AuditRecord>> ListAudit(int limit) override;
  absl::StatusOr<uint64_t> AppendAgentEvents(const std::string& agent_id,
                                             const EventBatch& batch) override;
  absl::StatusOr<AgentChainState> ResumeAgentChain(const std::string& agent_id,
                                                   const AgentChainStart& start,
                                                   int64_t now_ms) override;
  absl::StatusOr<std::vector<v1::SessionSummary>> ListSessions(
      const v1::ListSessionsRequest& filter) override;
  absl::StatusOr<v1::SessionSummary> SetLegalHold(const std::string& session_id,
                                                  const std::string& reason,
                                                  const std::string& actor, int64_t now_ms,
                                                  bool release) override;
  absl::StatusOr<v1::PurgeExpiredResponse> PurgeSessions(const PurgeRequest& request) override;
  using Store::GetSession;
  absl::StatusOr<v1::SessionDetail> GetSession(const v1::GetSessionRequest& request) override;
  absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit(const v1::VerifyAuditRequest& request,
                                                      const EventVisitor& visit) override;
  absl::Status VisitAudit(int64_t from_ms, int64_t until_ms,
                          const std::function<void(const AuditRecord&)>& visit) override;
  absl::StatusOr<std::vector<v1::SessionSummary>> FindSessions(
      const std::vector<std::string>& session_ids) override;
  absl::StatusOr<RecordsHeld> Held() override;
  absl::Status VisitApprovals(int64_t from_ms, int64_t until_ms,
                              const std::function<void(const v1::Approval&)>& visit) override;
  absl::Status RegisterAuditKey(const std::string& id, const std::string& public_key,
                                bool replace) override;
  absl::StatusOr<uint64_t> CreateApproval(const ApprovalRecord& record) override;
  absl::StatusOr<ApprovalRecord> GetApproval(uint64_t id) override;
  absl::Status UpdateApproval(const v1::Approval& approval) override;
  absl::StatusOr<std::vector<v1::Approval>> ListApprovals(const std::string& status,
                                                          int limit) override;
  absl::StatusOr<std::vector<ApprovalRecord>> DueApprovals(int64_t now_ms) override;
  absl::StatusOr<ApprovalRecord> FindApproval(const std::string& agent_id,
                                              const std::string& agent_request_id) override;
  // A 1 MiB file allocated, written, synced and removed beside the database (and a small one in
  // the recordings directory), then a write transaction that changes nothing.
  absl::Status ProbeWrites() override;
  // A second SqliteStore over a read-only connection (SQLITE_OPEN_READONLY, query_only) to the
  // same database and recordings: in WAL mode its reads run beside this store's writes. While it
  // holds a snapshot (ReadSnapshot), retention's purge leaves the purged recording bytes in place
  // (the snapshot may still read them) and erases them at its next run after the snapshot ends.
  absl::StatusOr<std::unique_ptr<Store>> OpenReader() override;
  // BEGIN (deferred) ... the first read takes the snapshot ... COMMIT.
  absl::Status ReadSnapshot(const std::function<absl::Status()>& read) override;

 private:
  // What a writer and its readers share: readers in a snapshot hold `gate` shared; a purge erases
  // recording bytes only when it can hold it exclusively, and otherwise leaves them in `deferred`.
  struct Shared {
    absl::Mutex gate;
    absl::Mutex mu;
    std::vector<std::pair<std::string, RecordingBlock>> deferred ABSL_GUARDED_BY(mu);
  };
  SqliteStore(sqlite3* db, std::string path, std::string dir, std::string trail_key_pem,
              std::unique_ptr<TrailSigner> signer, std::shared_ptr<Shared> shared, bool reader)
      : path_(std::move(path)),
        dir_(std::move(dir)),
        trail_key_pem_(std::move(trail_key_pem)),
        reader_(reader),
        shared_(std::move(shared)),
        db_(db),
        statements_(db),
        recordings_(dir_ + "/recordings"),
        chunk_zstd_(1, false),
        signer_(std::move(signer)),
        trail_(*signer_) {}
  // After a purge's commit: erases the purged blocks (and those left by earlier purges while a
  // reader held a snapshot), then removes the files none of whose blocks is indexed any more.
  void EraseRecordingsLocked(std::vector<std::pair<std::string, RecordingBlock>> blocks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Migration 12's data step: every agent's trail as stored now gets a signed head (origin
  // kUpgrade: taken as found), and the totals are signed.
  absl::Status AnchorStoredTrailsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the trail key's public half, or refuses a store anchored under another key.
  absl::Status CheckTrailKeyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The sessions a purge takes: ended before their connection's cutoff, not held (those are
  // counted in `out`), at most req.max_sessions.
  absl::StatusOr<std::vector<std::string>> DueSessionsLocked(const PurgeRequest& req,
                                                             v1::PurgeExpiredResponse* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A purged session's recording block (erased after the purge's commit).
  struct DueBlock {
    std::string session;
    std::string file;
    RecordingBlock block;
  };
  // The purge's recording blocks (their bytes counted in `out`) and the chunks holding the due
  // sessions' events.
  absl::Status PurgeScopeLocked(const std::vector<std::string>& due, std::vector<DueBlock>* blocks,
                                std::set<int64_t>* chunks, v1::PurgeExpiredResponse* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A dry run: the events of `purged` sessions in `chunks`, counted in `out`.
  absl::Status CountPurgedEventsLocked(const std::set<int64_t>& chunks,
                                       const absl::flat_hash_set<std::string>& purged,
                                       v1::PurgeExpiredResponse* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The chunks rewritten with purged records (PurgedChunk) and one signed tombstone per agent,
  // naming the purge's audit record out->audit_id().
  absl::Status RewritePurgedChunksLocked(
      const std::set<int64_t>& chunks, const absl::flat_hash_set<std::string>& purged,
      int64_t now_ms, absl::flat_hash_map<std::string, std::map<uint64_t, std::string>>* slices,
      v1::PurgeExpiredResponse* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The purged sessions' index rows, chunk links and recording blocks go; the purge's audit
  // record says what went.
  absl::Status DeletePurgedRowsLocked(const std::vector<std::string>& due,
                                      const v1::PurgeExpiredResponse& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The audit domain's rows over this store's connection (under mu_, for the call).
  SqliteTrailRows RowsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return SqliteTrailRows(db_, statements_, recordings_, chunk_zstd_, chunk_buffer_);
  }
  absl::StatusOr<int64_t> AppendAuditLocked(const AuditRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::SessionSummary> ReadSessionLocked(const std::string& session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The recording slices of `session_id` with sequences above `after`, by sequence.
  absl::StatusOr<std::map<uint64_t, std::string>> ReadRecordingsLocked(
      const std::string& session_id, uint64_t after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> BumpVersionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `batch` at a new policy version (inside the caller's transaction); returns it.
  absl::StatusOr<uint64_t> UpsertResourcesLocked(const std::vector<StoredResource>& batch,
                                                 const std::string& actor, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rollout `id` (the latest when 0, the one in progress when -1); nullopt when there is none.
  absl::StatusOr<std::optional<RolloutRecord>> ReadRolloutLocked(int64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailedPrecondition naming the rollout in progress, if there is one: policy changes wait.
  absl::Status RefuseDuringRolloutLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets an in-progress rollout's state, reason and who changed it; FailedPrecondition unless it is
  // in progress (or in `only_from`, when given).
  absl::StatusOr<RolloutRecord> EndRolloutLocked(int64_t id, const std::string& state,
                                                 const std::string& reason,
                                                 const std::string& actor, int64_t now_ms,
                                                 const std::string& only_from = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<StoredResource>> QueryResourcesLocked(const std::string& where,
                                                                   const std::string& kind,
                                                                   const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;  // the database file
  const std::string dir_;   // the database's directory
  const std::string trail_key_pem_;
  const bool reader_;  // a read-only connection (OpenReader)
  const std::shared_ptr<Shared> shared_;
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  // Statements of the ingest path, prepared once.
  StmtCache statements_ ABSL_GUARDED_BY(mu_);
  RecordingFiles recordings_ ABSL_GUARDED_BY(mu_);
  // Stored event chunks are zstd frames (level 1; each record has its own CRC): a sixth of the
  // bytes through the WAL, its checkpoints and the database file. Chunks stored before are raw
  // records and read as they are.
  ZstdCompressor chunk_zstd_ ABSL_GUARDED_BY(mu_);
  std::string chunk_buffer_ ABSL_GUARDED_BY(mu_);  // SqliteTrailRows::StoredChunk's result
  const std::unique_ptr<TrailSigner> signer_;      // the trail key: signs heads, totals, tombstones
  const AuditTrail trail_;                         // the audit domain's rules, signing with signer_
};

}  // namespace sluice::controlplane
