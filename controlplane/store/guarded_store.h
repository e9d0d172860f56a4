// The store as the control plane uses it, failing closed on disk faults of its data directory
// (no space, a quota, a read-only or failing file system: disk_fault.h).
//
// The first write that meets a disk fault makes the store refuse every write at once — with the
// same error for every caller, naming the file, the fault and since when — until TryResume finds
// writes possible again. Nothing half-written is kept (SQLite rolls the transaction back), so an
// agent's audit batch that was refused is not acknowledged and the agent sends it again. Reads go
// on. The change of state is logged once each way; WriteFault() serves /metrics, /readyz and
// `sluicectl agents list`.
//
// Called from the store's owner thread (the worker) like any Store; WriteFault() from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/store/store.h"

namespace sluice::controlplane {

class GuardedStore : public Store {
 public:
  // Writes resume only with this much free on the data directory's volume, so that a few freed
  // bytes do not turn refusals on and off.
  static constexpr uint64_t kResumeFreeBytes = 8 << 20;
  // TryResume probes at most this often.
  static constexpr int64_t kProbeIntervalMs = 1000;

  // `inner` (not owned) keeps its files in `data_dir`.
  GuardedStore(Store* inner, std::string data_dir)
      : inner_(inner), data_dir_(std::move(data_dir)) {}

  // Thread-safe. nullopt while the store takes writes.
  std::optional<StoreFault> WriteFault() const override;
  // Writes refused for a disk fault, since start (each refused call counts once).
  uint64_t refused_writes() const;
  // Times the store started refusing writes, since start.
  uint64_t faults() const;
  // Control-plane audit records (AppendAudit) that could not be stored, since start, whatever
  // their callers do next: each is counted here, and logged (an ERROR line with the record) unless
  // it was refused for a disk fault (that fault has its one ERROR line).
  uint64_t audit_records_lost() const;
  // While writes are refused: whether they work again (kResumeFreeBytes free on the volume, and
  // the inner store's ProbeWrites; at most every kProbeIntervalMs); when they do, the store takes
  // writes again and this returns true (once). False while the store takes writes.
  bool TryResume(int64_t now_ms);
  // The error every refused write gets (a disk fault, Unavailable).
  absl::Status Refusal() const;

  absl::StatusOr<uint64_t> PolicyVersion() override {
    return Read([&] { return inner_->PolicyVersion(); });
  }
  absl::StatusOr<uint64_t> UpsertResources(const std::vector<StoredResource>& batch,
                                           const std::string& actor, int64_t now_ms) override;
  absl::StatusOr<uint64_t> DeleteResource(const std::string& kind,
                                          const std::string& name) override;
  absl::StatusOr<std::vector<StoredResource>> ListResources(const std::string& kind) override {
    return Read([&] { return inner_->ListResources(kind); });
  }
  absl::StatusOr<StoredResource> GetResource(const std::string& kind,
                                             const std::string& name) override {
    return Read([&] { return inner_->GetResource(kind, name); });
  }
  absl::StatusOr<RolloutRecord> StartRollout(const std::vector<StoredResource>& batch,
                                             const std::map<std::string, std::string>& selector,
                                             const std::string& actor, int64_t now_ms) override;
  absl::StatusOr<std::optional<RolloutRecord>> GetRollout(int64_t id) override {
    return Read([&] { return inner_->GetRollout(id); });
  }
  absl::StatusOr<std::vector<StoredResource>> RolloutPreviousResources(int64_t id) override {
    return Read([&] { return inner_->RolloutPreviousResources(id); });
  }
  absl::StatusOr<std::optional<RolloutRecord>> HaltRollout(uint64_t version,
                                                           const std::string& agent_id,
                                                           const std::string& error,
                                                           int64_t now_ms) override;
  absl::StatusOr<RolloutRecord> PromoteRollout(int64_t id, const std::string& actor,
                                               const std::string& reason, int64_t now_ms) override;
  absl::StatusOr<RolloutAbort> AbortRollout(int64_t id, const std::string& actor,
                                            const std::string& reason, int64_t now_ms) override;
  absl::Status CreateEnrollment(const EnrollmentRecord& enrollment) override;
  absl::StatusOr<AgentRecord> ConsumeEnrollment(const std::string& token_hash,
                                                const std::string& secret_hash, int64_t now_ms,
                                                const EnrollmentCheck& check) override;
  absl::StatusOr<std::vector<AgentRecord>> ListAgents() override {
    return Read([&] { return inner_->ListAgents(); });
  }
  absl::Status UpdateAgentHello(const std::string& id, const std::string& agent_version,
                                const std::vector<std::string>& capabilities,
                                int64_t now_ms) override;
  absl::Status UpdateAgentSeen(const std::string& id, int64_t now_ms) override;
  absl::Status RegisterAuditKey(const std::string& id, const std::string& public_key,
                                bool replace) override;
  absl::Status RecordAck(const std::string& id, uint64_t version, int64_t now_ms) override;
  absl::Status RecordNack(const std::string& id, uint64_t version, const std::string& error,
                          int64_t now_ms) override;
  absl::StatusOr<int64_t> AppendAudit(const AuditRecord& record) override;
  absl::StatusOr<uint64_t> AppendAgentEvents(const std::string& agent_id,
                                             const EventBatch& batch) override;
  absl::StatusOr<AgentChainState> ResumeAgentChain(const std::string& agent_id,
                                                   const AgentChainStart& start,
                                                   int64_t now_ms) override;
  absl::StatusOr<std::vector<v1::SessionSummary>> ListSessions(
      const v1::ListSessionsRequest& filter) override {
    return Read([&] { return inner_->ListSessions(filter); });
  }
  using Store::GetSession;
  absl::StatusOr<v1::SessionDetail> GetSession(const v1::GetSessionRequest& request) override {
    return Read([&] { return inner_->GetSession(request); });
  }
  absl::StatusOr<std::vector<AuditRecord>> ListAudit(int limit) override {
    return Read([&] { return inner_->ListAudit(limit); });
  }
  absl::StatusOr<v1::SessionSummary> SetLegalHold(const std::string& session_id,
                                                  const std::string& reason,
                                                  const std::string& actor, int64_t now_ms,
                                                  bool release) override;
  absl::StatusOr<v1::PurgeExpiredResponse> PurgeSessions(const PurgeRequest& request) override;
  absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit(const v1::VerifyAuditRequest& request,
                                                      const EventVisitor& visit) override {
    return Read([&] { return inner_->VerifyAudit(request, visit); });
  }
  // The reader is the inner store's own (reads only: nothing to refuse).
  absl::StatusOr<std::unique_ptr<Store>> OpenReader() override { return inner_->OpenReader(); }
  absl::Status ReadSnapshot(const std::function<absl::Status()>& read) override {
    return inner_->ReadSnapshot(read);
  }
  absl::Status VisitAudit(int64_t from_ms, int64_t until_ms,
                          const std::function<void(const AuditRecord&)>& visit) override {
    return Read([&] { return inner_->VisitAudit(from_ms, until_ms, visit); });
  }
  absl::StatusOr<std::vector<v1::SessionSummary>> FindSessions(
      const std::vector<std::string>& ids) override {
    return Read([&] { return inner_->FindSessions(ids); });
  }
  absl::StatusOr<RecordsHeld> Held() override {
    return Read([&] { return inner_->Held(); });
  }
  absl::StatusOr<uint64_t> CreateApproval(const ApprovalRecord& record) override;
  absl::StatusOr<ApprovalRecord> GetApproval(uint64_t id) override {
    return Read([&] { return inner_->GetApproval(id); });
  }
  absl::Status UpdateApproval(const v1::Approval& approval) override;
  absl::StatusOr<std::vector<v1::Approval>> ListApprovals(const std::string& status,
                                                          int limit) override {
    return Read([&] { return inner_->ListApprovals(status, limit); });
  }
  absl::StatusOr<ApprovalRecord> FindApproval(const std::string& agent_id,
                                              const std::string& agent_request_id) override {
    return Read([&] { return inner_->FindApproval(agent_id, agent_request_id); });
  }
  absl::Status VisitApprovals(int64_t from_ms, int64_t until_ms,
                              const std::function<void(const v1::Approval&)>& visit) override {
    return Read([&] { return inner_->VisitApprovals(from_ms, until_ms, visit); });
  }
  absl::StatusOr<std::vector<ApprovalRecord>> DueApprovals(int64_t now_ms) override {
    return Read([&] { return inner_->DueApprovals(now_ms); });
  }
  // The probe itself is the inner store's (TryResume calls it).
  absl::Status ProbeWrites() override { return inner_->ProbeWrites(); }

 private:
  // Runs a write: refused at once while writes are refused; a disk fault it meets starts the
  // refusals (and is answered with the same refusal).
  template <typename Fn>
  auto Write(Fn fn) -> decltype(fn());
  // Runs a read. One that fails while writes are refused says why as well: a failing disk's
  // reads may look like anything ("database disk image is malformed").
  template <typename Fn>
  auto Read(Fn fn) -> decltype(fn()) {
    auto result = fn();
    absl::Status st = StatusOf(result);
    if (st.ok()) return result;
    absl::Status refusal = Refusal();
    if (refusal.ok()) return result;
    absl::Status said(st.code(), absl::StrCat(st.message(), " (", refusal.message(), ")"));
    st.ForEachPayload([&said](absl::string_view url, const absl::Cord& payload) {
      said.SetPayload(url, payload);
    });
    return said;
  }
  static absl::Status StatusOf(const absl::Status& st) { return st; }
  template <typename T>
  static absl::Status StatusOf(const absl::StatusOr<T>& result) {
    return result.status();
  }
  // Refused now? Counts the refusal.
  bool Refusing();
  // A write met `error` (a disk fault): writes are refused from now on.
  void Fail(const absl::Status& error, int64_t now_ms);

  Store* inner_;
  const std::string data_dir_;
  mutable absl::Mutex mu_;
  std::optional<StoreFault> fault_ ABSL_GUARDED_BY(mu_);
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t faults_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t audit_records_lost_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_probe_ms_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::controlplane
