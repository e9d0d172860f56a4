// The embedded store: one SQLite database in WAL mode under the control plane's data dir.
#pragma once

#include <sqlite3.h>

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/store/recording_files.h"
#include "controlplane/store/sqlite_stmt.h"
#include "controlplane/store/store.h"
#include "controlplane/store/zstd_codec.h"

namespace sluice::controlplane {

class SqliteStore : public Store {
 public:
  // Opens (creating if needed) the database at `path`, switches it to WAL mode and applies the
  // schema migrations. Session recordings go to files in the directory `recordings` beside it.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);
  ~SqliteStore() override;

  absl::StatusOr<uint64_t> PolicyVersion() override;
  absl::StatusOr<uint64_t> UpsertResources(const std::vector<StoredResource>& batch,
                                           const std::string& actor, int64_t now_ms) override;
  absl::StatusOr<uint64_t> DeleteResource(const std::string& kind, const std::string& name) override;
  absl::StatusOr<std::vector<StoredResource>> ListResources(const std::string& kind) override;
  absl::StatusOr<StoredResource> GetResource(const std::string& kind, const std::string& name) override;

  absl::Status CreateEnrollment(const EnrollmentRecord& enrollment) override;
  absl::StatusOr<AgentRecord> ConsumeEnrollment(const std::string& token_hash, const std::string& secret_hash,
                                                int64_t now_ms, const EnrollmentCheck& check) override;
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
  absl::StatusOr<uint64_t> AppendAgentEvents(const std::string& agent_id, const EventBatch& batch) override;
  absl::StatusOr<std::vector<v1::SessionSummary>> ListSessions(
      const v1::ListSessionsRequest& filter) override;
  absl::StatusOr<v1::SessionSummary> SetLegalHold(const std::string& session_id, const std::string& reason,
                                                  const std::string& actor, int64_t now_ms, bool release) override;
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
  absl::Status RegisterAuditKey(const std::string& id, const std::string& public_key, bool replace) override;
  absl::StatusOr<uint64_t> CreateApproval(const ApprovalRecord& record) override;
  absl::StatusOr<ApprovalRecord> GetApproval(uint64_t id) override;
  absl::Status UpdateApproval(const v1::Approval& approval) override;
  absl::StatusOr<std::vector<v1::Approval>> ListApprovals(const std::string& status, int limit) override;
  absl::StatusOr<std::vector<ApprovalRecord>> DueApprovals(int64_t now_ms) override;
  absl::StatusOr<ApprovalRecord> FindApproval(const std::string& agent_id, const std::string& agent_request_id) override;

 private:
  SqliteStore(sqlite3* db, std::string recordings_dir)
      : db_(db), statements_(db), recordings_(std::move(recordings_dir)), chunk_zstd_(1, false) {}
  absl::StatusOr<int64_t> AppendAuditLocked(const AuditRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::SessionSummary> ReadSessionLocked(const std::string& session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The recording slices of `session_id` with sequences above `after`, by sequence.
  absl::StatusOr<std::map<uint64_t, std::string>> ReadRecordingsLocked(const std::string& session_id, uint64_t after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> BumpVersionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What event_chunks.records holds for `records` (framed records): one zstd frame, valid until
  // the next call (ChunkRecords in the .cc reads it back).
  absl::StatusOr<absl::string_view> StoredChunkLocked(absl::string_view records) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<StoredResource>> QueryResourcesLocked(const std::string& where,
                                                                   const std::string& kind,
                                                                   const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  // Statements of the ingest path, prepared once.
  StmtCache statements_ ABSL_GUARDED_BY(mu_);
  RecordingFiles recordings_ ABSL_GUARDED_BY(mu_);
  // Stored event chunks are zstd frames (level 1; each record has its own CRC): a sixth of the
  // bytes through the WAL, its checkpoints and the database file. Chunks stored before are raw
  // records and read as they are.
  ZstdCompressor chunk_zstd_ ABSL_GUARDED_BY(mu_);
  std::string chunk_buffer_ ABSL_GUARDED_BY(mu_);  // StoredChunkLocked's result
};

}  // namespace sluice::controlplane
