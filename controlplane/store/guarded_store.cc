#include "controlplane/store/guarded_store.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/log.h"
#include "controlplane/store/disk_fault.h"

namespace sluice::controlplane {
namespace {

std::string FormatTimeMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

}  // namespace

std::optional<StoreFault> GuardedStore::WriteFault() const {
  absl::MutexLock lock(&mu_);
  return fault_;
}

uint64_t GuardedStore::refused_writes() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

uint64_t GuardedStore::audit_records_lost() const {
  absl::MutexLock lock(&mu_);
  return audit_records_lost_;
}

uint64_t GuardedStore::faults() const {
  absl::MutexLock lock(&mu_);
  return faults_;
}

absl::Status GuardedStore::Refusal() const {
  absl::MutexLock lock(&mu_);
  if (!fault_) return absl::OkStatus();
  return DiskFaultError(absl::StrCat(
      "the control plane's store refuses writes since ", FormatTimeMs(fault_->since_ms), ": ",
      fault_->error, "; it takes them again by itself once ", data_dir_,
      " can be written (with at least ", FormatBytes(kResumeFreeBytes), " free)"));
}

bool GuardedStore::Refusing() {
  absl::MutexLock lock(&mu_);
  if (!fault_) return false;
  ++refused_;
  return true;
}

void GuardedStore::Fail(const absl::Status& error, int64_t now_ms) {
  {
    absl::MutexLock lock(&mu_);
    ++refused_;
    if (fault_) return;
    fault_ = StoreFault{std::string(error.message().substr(0, 1024)), now_ms, ""};
    ++faults_;
  }
  LogError("the control plane's store refuses writes: ", error.message().substr(0, 1024),
           ". Agents keep the audit events it cannot store (not acknowledged) and send them again "
           "once it can; "
           "changes (apply, delete, approvals, enrollments) are refused meanwhile. It tries again "
           "every second: "
           "free space on ",
           data_dir_, " or make it writable (/readyz is not ready until then)");
}

bool GuardedStore::TryResume(int64_t now_ms) {
  std::string waiting;
  {
    absl::MutexLock lock(&mu_);
    if (!fault_ || now_ms < next_probe_ms_) return false;
    next_probe_ms_ = now_ms + kProbeIntervalMs;
  }
  auto space = VolumeSpaceOf(data_dir_);
  if (!space.ok()) {
    waiting = std::string(space.status().message());
  } else if (space->read_only) {
    waiting = absl::StrCat("the volume holding ", data_dir_, " is mounted read-only");
  } else if (space->free_bytes < kResumeFreeBytes) {
    waiting =
        absl::StrCat("the volume holding ", data_dir_, " has ", FormatBytes(space->free_bytes),
                     " free of ", FormatBytes(space->total_bytes), "; writes resume with at least ",
                     FormatBytes(kResumeFreeBytes), " free");
  } else if (absl::Status probe = inner_->ProbeWrites(); !probe.ok()) {
    waiting = std::string(probe.message().substr(0, 1024));
  }
  StoreFault was;
  {
    absl::MutexLock lock(&mu_);
    if (!waiting.empty()) {
      bool changed = fault_->waiting != waiting;
      fault_->waiting = waiting;
      if (changed) LogInfo("the control plane's store still refuses writes: ", waiting);
      return false;
    }
    was = *fault_;
    fault_.reset();
  }
  LogInfo("the control plane's store takes writes again, after ",
          absl::FormatDuration(absl::Milliseconds(((now_ms - was.since_ms) / 100) * 100)),
          "; agents send what it did not acknowledge");
  return true;
}

template <typename Fn>
auto GuardedStore::Write(Fn fn) -> decltype(fn()) {
  if (Refusing()) return Refusal();
  auto result = fn();
  absl::Status st = StatusOf(result);
  if (!IsDiskFault(st)) return result;
  Fail(st, NowUnixMs());
  return Refusal();
}

absl::StatusOr<uint64_t> GuardedStore::UpsertResources(const std::vector<StoredResource>& batch,
                                                       const std::string& actor, int64_t now_ms) {
  return Write([&] { return inner_->UpsertResources(batch, actor, now_ms); });
}

absl::StatusOr<uint64_t> GuardedStore::DeleteResource(const std::string& kind,
                                                      const std::string& name) {
  return Write([&] { return inner_->DeleteResource(kind, name); });
}

absl::StatusOr<RolloutRecord> GuardedStore::StartRollout(
    const std::vector<StoredResource>& batch, const std::map<std::string, std::string>& selector,
    const std::string& actor, int64_t now_ms) {
  return Write([&] { return inner_->StartRollout(batch, selector, actor, now_ms); });
}

absl::StatusOr<std::optional<RolloutRecord>> GuardedStore::HaltRollout(uint64_t version,
                                                                       const std::string& agent_id,
                                                                       const std::string& error,
                                                                       int64_t now_ms) {
  return Write([&] { return inner_->HaltRollout(version, agent_id, error, now_ms); });
}

absl::StatusOr<RolloutRecord> GuardedStore::PromoteRollout(int64_t id, const std::string& actor,
                                                           const std::string& reason,
                                                           int64_t now_ms) {
  return Write([&] { return inner_->PromoteRollout(id, actor, reason, now_ms); });
}

absl::StatusOr<RolloutAbort> GuardedStore::AbortRollout(int64_t id, const std::string& actor,
                                                        const std::string& reason, int64_t now_ms) {
  return Write([&] { return inner_->AbortRollout(id, actor, reason, now_ms); });
}

absl::Status GuardedStore::CreateEnrollment(const EnrollmentRecord& enrollment) {
  return Write([&] { return inner_->CreateEnrollment(enrollment); });
}

absl::StatusOr<AgentRecord> GuardedStore::ConsumeEnrollment(const std::string& token_hash,
                                                            const std::string& secret_hash,
                                                            int64_t now_ms,
                                                            const EnrollmentCheck& check) {
  return Write([&] { return inner_->ConsumeEnrollment(token_hash, secret_hash, now_ms, check); });
}

absl::Status GuardedStore::UpdateAgentHello(const std::string& id, const std::string& agent_version,
                                            const std::vector<std::string>& capabilities,
                                            int64_t now_ms) {
  return Write([&] { return inner_->UpdateAgentHello(id, agent_version, capabilities, now_ms); });
}

absl::Status GuardedStore::UpdateAgentSeen(const std::string& id, int64_t now_ms) {
  return Write([&] { return inner_->UpdateAgentSeen(id, now_ms); });
}

absl::Status GuardedStore::RegisterAuditKey(const std::string& id, const std::string& public_key,
                                            bool replace) {
  return Write([&] { return inner_->RegisterAuditKey(id, public_key, replace); });
}

absl::Status GuardedStore::RecordAck(const std::string& id, uint64_t version, int64_t now_ms) {
  return Write([&] { return inner_->RecordAck(id, version, now_ms); });
}

absl::Status GuardedStore::RecordNack(const std::string& id, uint64_t version,
                                      const std::string& error, int64_t now_ms) {
  return Write([&] { return inner_->RecordNack(id, version, error, now_ms); });
}

absl::StatusOr<int64_t> GuardedStore::AppendAudit(const AuditRecord& record) {
  absl::StatusOr<int64_t> id = Write([&] { return inner_->AppendAudit(record); });
  if (!id.ok()) {
    {
      absl::MutexLock lock(&mu_);
      ++audit_records_lost_;
    }
    // A disk fault was logged once, when the store started refusing writes (one line per fault,
    // not one per record refused meanwhile); anything else is logged with the record.
    if (!IsDiskFault(id.status())) {
      LogError("cannot store the control plane's audit record (", record.actor, " ", record.action,
               " ", record.target, ": ", record.outcome, "; ", record.detail.substr(0, 500),
               "): ", id.status().message());
    }
  }
  return id;
}

absl::StatusOr<uint64_t> GuardedStore::AppendAgentEvents(const std::string& agent_id,
                                                         const EventBatch& batch) {
  return Write([&] { return inner_->AppendAgentEvents(agent_id, batch); });
}

absl::StatusOr<AgentChainState> GuardedStore::ResumeAgentChain(const std::string& agent_id,
                                                               const AgentChainStart& start,
                                                               int64_t now_ms) {
  return Write([&] { return inner_->ResumeAgentChain(agent_id, start, now_ms); });
}

absl::StatusOr<v1::SessionSummary> GuardedStore::SetLegalHold(const std::string& session_id,
                                                              const std::string& reason,
                                                              const std::string& actor,
                                                              int64_t now_ms, bool release) {
  return Write([&] { return inner_->SetLegalHold(session_id, reason, actor, now_ms, release); });
}

absl::StatusOr<v1::PurgeExpiredResponse> GuardedStore::PurgeSessions(const PurgeRequest& request) {
  return Write([&] { return inner_->PurgeSessions(request); });
}

absl::StatusOr<uint64_t> GuardedStore::CreateApproval(const ApprovalRecord& record) {
  return Write([&] { return inner_->CreateApproval(record); });
}

absl::Status GuardedStore::UpdateApproval(const v1::Approval& approval) {
  return Write([&] { return inner_->UpdateApproval(approval); });
}

}  // namespace sluice::controlplane
