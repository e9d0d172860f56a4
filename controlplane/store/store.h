// The control plane's storage interface. SqliteStore is the embedded default; a PostgreSQL
// implementation for HA deployments satisfies the same interface (see docs/architecture.md).
//
// Implementations are called from one owner thread (the control plane's store worker), but must
// be safe to call from any single thread at a time. A reader (OpenReader) is a store of its own,
// used from another thread (the reader worker) at the same time as its writer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controlplane/audit/trail_anchor.h"
#include "sluice/v1/admin.pb.h"
#include "sluice/v1/agent.pb.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::controlplane {

// A resource as stored: the spec without its inline secret, and the secret sealed with
// AES-256-GCM under the master key (empty when the resource has none).
struct StoredResource {
  v1::Resource resource;  // meta is filled on reads
  std::string sealed_secret;
};

struct AgentRecord {
  std::string id;
  std::map<std::string, std::string> labels;
  std::string secret_hash;  // SHA-256 hex of the agent's secret
  int64_t enrolled_ms = 0;
  int64_t last_seen_ms = 0;
  std::string agent_version;
  std::vector<std::string> capabilities;
  uint64_t applied_version = 0;
  uint64_t last_nack_version = 0;
  std::string last_nack_error;
};

struct EnrollmentRecord {
  std::string token_hash;  // SHA-256 hex of the one-time token
  std::string agent_id;
  std::map<std::string, std::string> labels;
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
  std::vector<std::string> tls_names;  // names the agent's certificate may carry
};

// One operator action (admin API call) or control-plane event, for the audit trail.
struct AuditRecord {
  int64_t id = 0;  // assigned by the store
  int64_t time_ms = 0;
  std::string actor;    // who ("bootstrap-admin", "agent:<id>", "anonymous")
  std::string action;   // e.g. "AdminService.Apply"
  std::string target;   // e.g. "Connection/orders-prod"
  std::string outcome;  // "ok" or the error code name
  std::string detail;   // human-readable detail; never a secret
};

// A batch of an agent's audit events: the framed records as received (common/audit/records.h)
// and what they decode to.
struct EventBatch {
  std::string records;
  std::vector<v1::AuditEvent> events;  // in sequence order
  std::vector<size_t> offsets;         // offsets[i]: where events[i]'s record starts in `records`
};

// What retention may purge: for each connection, sessions that ended before its cutoff.
struct PurgeRequest {
  std::map<std::string, int64_t> cutoff_ms_by_connection;
  bool dry_run = false;
  std::string actor;  // for the audit record of the purge
  int64_t now_ms = 0;
  size_t max_sessions = 10000;  // per run; the rest wait for the next one
};

// What the store holds, for retention evidence (0 when there is nothing).
struct RecordsHeld {
  int64_t oldest_event_ms = 0;  // the oldest stored agent event
  int64_t oldest_audit_ms = 0;  // the oldest control-plane audit record
  int64_t audit_records = 0;
  int64_t legal_holds = 0;  // sessions under a legal hold now
};

// Where an agent's audit chain stands when it opens a stream (Hello): the last record its spool
// held when its process started (its chain goes on from it: sequence and chain hash), and the
// lowest sequence the process numbers its own events from.
struct AgentChainStart {
  uint64_t sequence = 0;
  std::string hash;
  uint64_t own_from = 0;
};

// What the control plane holds of an agent's chain, told to the agent at the start of a stream.
struct AgentChainState {
  uint64_t committed = 0;  // the highest stored sequence (0: nothing stored)
  std::string head;        // the chain hash the agent's next new event must name
  // The agent's spool lost records the control plane holds: where its chain goes on from.
  std::optional<ChainResume> resume;
  bool resumed_now = false;  // the resume was recorded by this call (else: earlier, for this start)
};

// Sees each stored agent event as VerifyAudit reads it, every agent's in sequence order.
// `linked`: its prev_hash names the record before it (true for an agent's first record; false
// where the chain breaks or a new chain starts). It runs inside the store's call: it must not
// call the store.
using EventVisitor =
    std::function<void(const std::string& agent_id, const v1::AuditEvent& event, bool linked)>;

// An approval request as stored, with what only the control plane needs.
struct ApprovalRecord {
  v1::Approval approval;
  std::string agent_request_id;  // the agent's id for it, echoed in the decision
};

// A staged rollout (docs/deploy.md, "Staged rollout"): policy `version` served first only to the
// agents whose labels match `selector`, the others kept on `previous_version`. In progress while
// canary or halted; then promoted (every agent gets it) or aborted (the documents of
// previous_version stored again as `restored_version`). At most one is in progress.
inline constexpr char kRolloutCanary[] = "canary";
inline constexpr char kRolloutHalted[] = "halted";
inline constexpr char kRolloutPromoted[] = "promoted";
inline constexpr char kRolloutAborted[] = "aborted";

struct RolloutRecord {
  int64_t id = 0;  // assigned by the store
  uint64_t version = 0;
  uint64_t previous_version = 0;
  std::map<std::string, std::string> selector;
  std::string state;   // kRolloutCanary, kRolloutHalted, kRolloutPromoted or kRolloutAborted
  std::string reason;  // why it was halted (the agent and its NACK), aborted or forced
  int64_t created_ms = 0;
  std::string created_by;
  int64_t updated_ms = 0;
  std::string updated_by;
  uint64_t restored_version = 0;

  bool in_progress() const { return state == kRolloutCanary || state == kRolloutHalted; }
};

// One resource an abort stored again: "Kind/name" and its Policy.* audit action.
struct ResourceChange {
  std::string target;
  std::string action;  // Policy.create, Policy.update or Policy.delete
};

// What AbortRollout did.
struct RolloutAbort {
  RolloutRecord rollout;                // as it is now (aborted)
  std::vector<ResourceChange> changes;  // what the new version changed (empty: no new version)
};

// Why a store refuses writes (guarded_store.h): its data directory is full, read-only or failing.
struct StoreFault {
  std::string error;  // the first failure: the file and the fault
  int64_t since_ms = 0;
  std::string waiting;  // why the last attempt to resume did not ("" before the first)
};

class Store {
 public:
  virtual ~Store() = default;

  // The current global policy version (0 before anything was applied).
  virtual absl::StatusOr<uint64_t> PolicyVersion() = 0;

  // Creates or replaces every resource of `batch` in one transaction and bumps the policy version
  // once; returns the new version. Each stored resource gets that version in its meta.
  // FailedPrecondition while a rollout is in progress (it says which, and how to end it).
  virtual absl::StatusOr<uint64_t> UpsertResources(const std::vector<StoredResource>& batch,
                                                   const std::string& actor, int64_t now_ms) = 0;
  // Deletes one resource and bumps the version. NotFound when it does not exist;
  // FailedPrecondition while a rollout is in progress.
  virtual absl::StatusOr<uint64_t> DeleteResource(const std::string& kind,
                                                  const std::string& name) = 0;

  // Staged rollouts (RolloutRecord). StartRollout stores `batch` as UpsertResources does and starts
  // a rollout of the new version to the agents matching `selector` (not empty), in one
  // transaction with its audit record (Rollout.start): the documents as they were before (the
  // previous version's) are kept with it, for the other agents and for an abort, until it ends.
  // FailedPrecondition while another rollout is in progress.
  virtual absl::StatusOr<RolloutRecord> StartRollout(
      const std::vector<StoredResource>& batch, const std::map<std::string, std::string>& selector,
      const std::string& actor, int64_t now_ms) = 0;
  // Rollout `id`, or the latest when `id` is 0; nullopt when there is none.
  virtual absl::StatusOr<std::optional<RolloutRecord>> GetRollout(int64_t id) = 0;
  // The documents of an in-progress rollout's previous version (as ListResources returns them).
  virtual absl::StatusOr<std::vector<StoredResource>> RolloutPreviousResources(int64_t id) = 0;
  // An agent NACKed `version`: the rollout of that version, if it is in canary, is halted (by
  // "agent:<agent_id>", the reason naming the agent and `error`), with an audit record
  // (Rollout.halt). Returns it, or nullopt when no rollout in canary has that version (only canary
  // agents are sent a version in canary, so any NACK of it is a canary's).
  virtual absl::StatusOr<std::optional<RolloutRecord>> HaltRollout(uint64_t version,
                                                                   const std::string& agent_id,
                                                                   const std::string& error,
                                                                   int64_t now_ms) = 0;
  // Ends in-progress rollout `id` as promoted, with an audit record (Rollout.promote). The caller
  // decided it may (every canary ACKed, or forced). FailedPrecondition unless it is in progress.
  virtual absl::StatusOr<RolloutRecord> PromoteRollout(int64_t id, const std::string& actor,
                                                       const std::string& reason,
                                                       int64_t now_ms) = 0;
  // Ends in-progress rollout `id` as aborted, in one transaction: the resources return to the
  // previous version's documents (those the rollout's version added are deleted), stored as a new
  // policy version (`restored_version`; the resources that change get it in their meta), with an
  // audit record (Rollout.abort). FailedPrecondition unless it is in progress.
  virtual absl::StatusOr<RolloutAbort> AbortRollout(int64_t id, const std::string& actor,
                                                    const std::string& reason, int64_t now_ms) = 0;
  // `kind` "" lists every kind. Ordered by kind, then name.
  virtual absl::StatusOr<std::vector<StoredResource>> ListResources(const std::string& kind) = 0;
  virtual absl::StatusOr<StoredResource> GetResource(const std::string& kind,
                                                     const std::string& name) = 0;

  virtual absl::Status CreateEnrollment(const EnrollmentRecord& enrollment) = 0;
  // Consumes a one-time token: NotFound when unknown, FailedPrecondition when used or expired.
  // `check` (may be empty) sees the enrollment first; its error refuses the enrollment and
  // leaves the token unused. On success the agent is created (or its credential replaced) with
  // `secret_hash`.
  using EnrollmentCheck = std::function<absl::Status(const EnrollmentRecord&)>;
  virtual absl::StatusOr<AgentRecord> ConsumeEnrollment(const std::string& token_hash,
                                                        const std::string& secret_hash,
                                                        int64_t now_ms,
                                                        const EnrollmentCheck& check) = 0;
  virtual absl::StatusOr<std::vector<AgentRecord>> ListAgents() = 0;
  // Records what the agent said in Hello.
  virtual absl::Status UpdateAgentHello(const std::string& id, const std::string& agent_version,
                                        const std::vector<std::string>& capabilities,
                                        int64_t now_ms) = 0;
  virtual absl::Status UpdateAgentSeen(const std::string& id, int64_t now_ms) = 0;
  // Registers the agent's audit public key: at enrollment (`replace`: a new enrollment brings a
  // new key), or from Hello when it has none; FailedPrecondition when another key is registered
  // and `replace` is false.
  virtual absl::Status RegisterAuditKey(const std::string& id, const std::string& public_key,
                                        bool replace) = 0;
  virtual absl::Status RecordAck(const std::string& id, uint64_t version, int64_t now_ms) = 0;
  virtual absl::Status RecordNack(const std::string& id, uint64_t version, const std::string& error,
                                  int64_t now_ms) = 0;

  virtual absl::StatusOr<int64_t> AppendAudit(const AuditRecord& record) = 0;

  // Stores a batch of an agent's data-path events in one transaction and updates the session
  // index. Events at or below the agent's committed sequence are skipped, so a resent batch is
  // harmless. Returns the agent's committed sequence after the batch.
  virtual absl::StatusOr<uint64_t> AppendAgentEvents(const std::string& agent_id,
                                                     const EventBatch& batch) = 0;
  // Compares where an agent's chain stands (Hello) with what is stored. When its spool ended
  // before the last stored record, on the stored chain (the stored record at start.sequence has
  // start.hash), and the stored records after it are not the process's own (they are below
  // start.own_from), the agent lost them (a machine crash before its spool made them durable):
  // the resume is recorded, signed, with an audit record, in one transaction, and the agent's
  // next new event must name start.hash (its sequence must be above the committed one). Recorded
  // once: the same start again gets the same resume back. FailedPrecondition when the agent's
  // head is not on the stored chain, saying what differs and what an operator can do (its
  // batches stay refused). Nothing changes for an agent whose chain is in step.
  virtual absl::StatusOr<AgentChainState> ResumeAgentChain(const std::string& agent_id,
                                                           const AgentChainStart& start,
                                                           int64_t now_ms) = 0;
  virtual absl::StatusOr<std::vector<v1::SessionSummary>> ListSessions(
      const v1::ListSessionsRequest& filter) = 0;
  // NotFound when there is no such session.
  // With request.recording, each event's recording slice is read from the recording files.
  virtual absl::StatusOr<v1::SessionDetail> GetSession(const v1::GetSessionRequest& request) = 0;
  absl::StatusOr<v1::SessionDetail> GetSession(const std::string& session_id) {
    v1::GetSessionRequest request;
    request.set_session_id(session_id);
    return GetSession(request);
  }
  // The most recent `limit` records, newest first.
  virtual absl::StatusOr<std::vector<AuditRecord>> ListAudit(int limit) = 0;
  // Puts a session under a legal hold (or releases it: `reason` unused); returns the session.
  // NotFound when there is no such session.
  virtual absl::StatusOr<v1::SessionSummary> SetLegalHold(const std::string& session_id,
                                                          const std::string& reason,
                                                          const std::string& actor, int64_t now_ms,
                                                          bool release) = 0;
  // Purges the sessions `request` selects that are not held, in one transaction: their rows,
  // their recordings, and their events, which stay in the hash chain as purged records (type
  // "purged", the body gone, purged_hash = the hash they had). One audit record says what went.
  virtual absl::StatusOr<v1::PurgeExpiredResponse> PurgeSessions(const PurgeRequest& request) = 0;
  // Re-verifies every stored agent event (checksums and hash chains) from storage. `visit` (may
  // be empty) sees every event that decodes, in the same pass.
  virtual absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit(const v1::VerifyAuditRequest& request,
                                                              const EventVisitor& visit) = 0;
  // Control-plane audit records with time in [from_ms, until_ms), oldest first. (Visitors, here
  // and below, run inside the call: they must not call the store.)
  virtual absl::Status VisitAudit(int64_t from_ms, int64_t until_ms,
                                  const std::function<void(const AuditRecord&)>& visit) = 0;
  // The index entries of these sessions (those that exist).
  virtual absl::StatusOr<std::vector<v1::SessionSummary>> FindSessions(
      const std::vector<std::string>& session_ids) = 0;
  virtual absl::StatusOr<RecordsHeld> Held() = 0;

  // Approval requests. Create assigns the id (returned, and set in the stored approval).
  virtual absl::StatusOr<uint64_t> CreateApproval(const ApprovalRecord& record) = 0;
  // NotFound when there is no such request.
  virtual absl::StatusOr<ApprovalRecord> GetApproval(uint64_t id) = 0;
  // Replaces the stored approval (status, votes, deliveries); NotFound when it does not exist.
  virtual absl::Status UpdateApproval(const v1::Approval& approval) = 0;
  // Newest first; `status` empty = any.
  virtual absl::StatusOr<std::vector<v1::Approval>> ListApprovals(const std::string& status,
                                                                  int limit) = 0;
  // The request an agent knows as `agent_request_id`; NotFound when there is none.
  virtual absl::StatusOr<ApprovalRecord> FindApproval(const std::string& agent_id,
                                                      const std::string& agent_request_id) = 0;
  // Requests created in [from_ms, until_ms), oldest first.
  virtual absl::Status VisitApprovals(int64_t from_ms, int64_t until_ms,
                                      const std::function<void(const v1::Approval&)>& visit) = 0;
  // Pending requests whose expiry is at or before `now_ms`.
  virtual absl::StatusOr<std::vector<ApprovalRecord>> DueApprovals(int64_t now_ms) = 0;

  // Long reads that must not hold up ingest (`audit verify`, the evidence export): a second store
  // over its own read-only connection to the same data, used from its own thread (one thread at a
  // time). Unimplemented when the store has none (its callers then read from this store).
  virtual absl::StatusOr<std::unique_ptr<Store>> OpenReader() {
    return absl::UnimplementedError("this store has no separate reader");
  }
  // Runs `read` (which calls this store's reads) inside one read transaction: everything it reads
  // is one consistent snapshot, whatever is written meanwhile through other connections.
  virtual absl::Status ReadSnapshot(const std::function<absl::Status()>& read) { return read(); }

  // Whether the store can write again after a disk fault (disk_fault.h): its files' volume takes
  // a new file, written and synced, and a write transaction commits. The error names the file and
  // the fault. Changes nothing the store holds.
  virtual absl::Status ProbeWrites() = 0;
  // Why the store refuses writes now; nullopt while it takes them (a store that does not guard
  // against disk faults never refuses). Thread-safe.
  virtual std::optional<StoreFault> WriteFault() const { return std::nullopt; }
};

}  // namespace sluice::controlplane
