// The control plane's audit domain: how agents' audit events become a stored trail that an
// auditor can prove intact and complete (docs/audit-and-evidence.md), independent of the store.
//
//   - Append: a batch of an agent's events is checked against its hash chain and signed
//     checkpoints, its recordings leave the events for the recording store, the session index is
//     derived from it, and the agent's signed trail head and the signed totals move on;
//   - Resume: an agent whose spool lost its tail goes on from an older record of its own, under a
//     signed chain resume;
//   - AnchorStored: trails stored before heads existed are anchored as found (an upgrade);
//   - Verify: every stored record is read again and the chain, the checkpoints, the signed rows and
//     the session index are checked against it.
//
// Rows come from and go to a TrailStorage (trail_storage.h); the store owns transactions and
// locks.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/audit/trail_anchor.h"
#include "controlplane/audit/trail_storage.h"
#include "controlplane/store/store.h"
#include "sluice/v1/admin.pb.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::controlplane {

// An ingested batch's new events (from `first_new`) checked against the agent's chain `head` and
// audit key `key` (empty: none registered): where the chain goes, and the batch's last signed
// checkpoint.
struct BatchChain {
  std::string head;        // the hash of the last new event
  std::string first_hash;  // of the first new event
  std::optional<AgentCheckpoint> last_checkpoint;
};
absl::StatusOr<BatchChain> CheckBatchChain(const std::string& agent_id, const EventBatch& batch,
                                           size_t first_new, std::string head,
                                           const std::string& key);

// The recording slices of the batch's new events, by session, and their records without them
// (`stripped_records`; both left empty when no new event carries a recording).
absl::Status SplitRecordings(const std::string& agent_id, const EventBatch& batch, size_t first_new,
                             std::string* stripped_records,
                             std::map<std::string, std::vector<RecordingSlice>>* slices);

// The chain hash of a stored record (`payload`, the event `e`): a purged record's kept hash, or the
// hash of the payload with its recording slice put back (read from `rows`; DataLoss when it is
// gone).
absl::StatusOr<std::string> StoredRecordHash(TrailStorage& rows, const v1::AuditEvent& e,
                                             absl::string_view payload);

// A checkpoint event's claim (the record `sequence` has `hash`, signed by the agent); nullopt for
// another event, sequence 0 (never valid) when malformed.
std::optional<AgentCheckpoint> ParseCheckpoint(const v1::AuditEvent& e);
// Whether the claim carries the signature of the agent's audit key `key`.
bool CheckpointSignatureValid(const std::string& key, const AgentCheckpoint& c);

// Retention's rewrite of a stored chunk: the records of the `purged` sessions replaced by purged
// records (type "purged", body `tombstone_body`, purged_hash the hash each had, which covers its
// recording slice from `slices`), folded into the agent's tombstone `t`; `out` counts them.
absl::StatusOr<std::string> PurgedChunk(
    int64_t chunk, const std::string& records, const absl::flat_hash_set<std::string>& purged,
    const std::string& tombstone_body,
    absl::flat_hash_map<std::string, std::map<uint64_t, std::string>>* slices, PurgeTombstone* t,
    v1::PurgeExpiredResponse* out);

// The start of a chain hash, for messages.
std::string HashPrefix(absl::string_view hash);

// What a chain resume means, in words (the operator audit record's detail, and the log).
std::string ResumeDetail(const ChainResume& resume);

class AuditTrail {
 public:
  explicit AuditTrail(const TrailSigner& signer) : signer_(signer) {}

  // Stores the new events of `batch` (those above the agent's committed sequence; a batch resent
  // whole changes nothing) and returns the agent's committed sequence after it. A break of the
  // chain, a checkpoint without the agent's signature, a record claiming to be purged or a
  // recording that does not match its size refuses the batch (nothing is stored).
  absl::StatusOr<uint64_t> Append(TrailStorage& rows, const std::string& agent_id,
                                  const EventBatch& batch) const;
  // Store::ResumeAgentChain's rules (store.h); the caller commits what it wrote.
  absl::StatusOr<AgentChainState> Resume(TrailStorage& rows, const std::string& agent_id,
                                         const AgentChainStart& start, int64_t now_ms) const;
  // Every agent's trail as stored gets a signed head (origin kUpgrade), and the totals are signed.
  absl::Status AnchorStored(TrailStorage& rows) const;
  // Store::VerifyAudit (store.h).
  absl::StatusOr<v1::VerifyAuditResponse> Verify(TrailStorage& rows,
                                                 const v1::VerifyAuditRequest& request,
                                                 const EventVisitor& visit) const;

  absl::Status PutTrailHead(TrailStorage& rows, const TrailHead& head) const;
  absl::Status PutTotals(TrailStorage& rows, const TrailTotals& totals) const;

 private:
  struct SequenceHash {
    uint64_t sequence = 0;
    std::string hash;
  };
  // After a batch is stored: the agent's trail head moves to `last` (`first` starts a new trail),
  // with the batch's last signed checkpoint (may be null), and the totals count `added` more
  // records. `committed`: the agent's committed sequence before the batch.
  absl::Status AdvanceTrail(TrailStorage& rows, const std::string& agent_id, uint64_t committed,
                            uint64_t added, const SequenceHash& first, const SequenceHash& last,
                            int64_t time_ms, const AgentCheckpoint* checkpoint) const;
  // The trail totals after a batch: counted up when a trail starts, counted again (marked lost)
  // when they are missing.
  absl::Status AdvanceTotals(TrailStorage& rows, bool new_trail, int64_t time_ms) const;
  // The stored record `sequence` of `agent_id`: its chain hash (nullopt when no record has that
  // sequence) and how many of its chunk's records come after it (`after_in_chunk`, may be null).
  absl::StatusOr<std::optional<std::string>> StoredHashAt(TrailStorage& rows,
                                                          const std::string& agent_id,
                                                          uint64_t sequence,
                                                          uint64_t* after_in_chunk) const;
  // Records a new chain resume for `start` (signed, with an operator audit record).
  absl::StatusOr<ChainResume> RecordResume(TrailStorage& rows, const std::string& agent_id,
                                           const AgentChainStart& start, uint64_t held,
                                           int64_t now_ms) const;

  const TrailSigner& signer_;
};

}  // namespace sluice::controlplane
