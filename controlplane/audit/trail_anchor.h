// What makes a stored audit trail provably complete, not only intact (docs/audit-and-evidence.md,
// "Completeness"): the control plane's own Ed25519 key signs, apart from the event rows,
//
//   - each agent's trail head: where the trail starts (its genesis: the first record stored for
//     the agent), where it ends (the last record's sequence and chain hash) and how many records
//     it holds, updated in the transaction that stores each batch;
//   - how many trails there are (signed when a trail starts), so a trail removed whole, with its
//     head, shows;
//   - one tombstone per retention purge and agent: which records the purge replaced by purged
//     records (a digest of their sequences and kept hashes), so a purged record nobody purged
//     shows;
//   - each chain resume: where an agent whose spool lost its tail went on from an older record of
//     its own, so that break of its chain is accepted there and nowhere else.
//
// Someone who can write the database can delete these rows but cannot forge them; `audit verify`
// reports a missing or unsigned one. This file holds the signed texts and the signer; the store
// keeps the rows (controlplane/store/sqlite_store.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::controlplane {

// How a trail head came to be anchored.
enum class TrailOrigin : int {
  // The control plane stored the agent's first record under this head: the whole trail is anchored.
  kGenesis = 0,
  // The store was upgraded to anchored trails with records already stored: they were taken as
  // found (through `anchored_through`); the trail's start and those records are anchored only from
  // the upgrade on.
  kUpgrade = 1,
  // The head was missing when the agent's next batch was stored (someone removed it): a new head
  // was signed from there, and `audit verify` reports the trail before it as not proven.
  kLost = 2,
};

// An agent's trail as the control plane last stored it.
struct TrailHead {
  std::string agent_id;
  uint64_t genesis_sequence = 0;  // the first stored record
  std::string genesis_hash;       // its chain hash
  uint64_t last_sequence = 0;     // the last stored record
  std::string last_hash;          // its chain hash (a purged record's: the hash it had)
  uint64_t records = 0;           // records stored for the agent
  TrailOrigin origin = TrailOrigin::kGenesis;
  uint64_t anchored_through = 0;  // kUpgrade, kLost: records up to this sequence are not anchored
  int64_t time_ms = 0;            // the time of the last record stored
};

// An agent's signed checkpoint claim (docs/audit-and-evidence.md, "Signed checkpoints"): the
// record `sequence` has chain hash `hash`, signed with the agent's own key. The latest is kept with
// the agent's trail head, apart from the events.
struct AgentCheckpoint {
  uint64_t sequence = 0;
  std::string hash;
  std::string signature;
};

// The text a head's signature covers:
// "sluice-trail-head v1 agent=<len>:<id> genesis=<seq>:<hex> last=<seq>:<hex> records=<n>
//  origin=<0|1|2> anchored_through=<seq> time=<ms>" (one line).
std::string TrailHeadMessage(const TrailHead& head);

// How many trails the store holds (agents with a trail head), signed again whenever a trail starts:
// each trail's records are counted by its own head.
struct TrailTotals {
  uint64_t agents = 0;
  // kLost: the totals were missing when a batch was stored (someone removed them) and were counted
  // again from the heads then; kGenesis otherwise.
  TrailOrigin origin = TrailOrigin::kGenesis;
  int64_t time_ms = 0;  // when a trail last started
};
// "sluice-trail-totals v1 agents=<n> origin=<0|2> time=<ms>".
std::string TrailTotalsMessage(const TrailTotals& totals);

// What one retention purge did to one agent's trail.
struct PurgeTombstone {
  int64_t audit_id = 0;  // the purge's Retention.purge record, which each purged record names
  std::string agent_id;
  int64_t time_ms = 0;
  uint64_t events = 0;          // records the purge replaced by purged records
  uint64_t first_sequence = 0;  // the lowest of them
  uint64_t last_sequence = 0;   // the highest
  std::string digest;           // PurgeDigest over them, in sequence order
};
// "sluice-trail-tombstone v1 audit=<id> agent=<len>:<id> time=<ms> events=<n> first=<seq>
//  last=<seq> digest=<hex>".
std::string PurgeTombstoneMessage(const PurgeTombstone& tombstone);

// An agent's chain went on from an older record of its own (docs/audit-and-evidence.md, "When the
// agent's spool lost its tail"): a machine crash lost the records after `resumed_after` from the
// agent's spool before they were durable there, after the control plane had stored them (through
// `held_through`). Recorded when the agent says where its chain stands at the start of a stream;
// the agent's next new record names resumed_after's hash in prev_hash, and `audit verify`
// accepts that break of the chain only where a resume signed with the trail key says so.
struct ChainResume {
  std::string agent_id;
  uint64_t resumed_after_sequence = 0;  // the last record the agent's spool held
  std::string resumed_after_hash;       // its chain hash
  uint64_t held_through_sequence = 0;   // the last record stored for the agent then
  std::string held_through_hash;        // its chain hash
  uint64_t held_records = 0;            // records stored after resumed_after, through held_through
  int64_t time_ms = 0;                  // when it was recorded
};
// "sluice-trail-resume v1 agent=<len>:<id> after=<seq>:<hex> held_through=<seq>:<hex>
//  held_records=<n> time=<ms>".
std::string ChainResumeMessage(const ChainResume& resume);

// The digest of a purge's records: starting from 32 zero bytes, each record (in sequence order)
// folds in as SHA-256(digest || sequence as 8 bytes big-endian || its kept hash).
std::string PurgeDigestStart();
void PurgeDigestAdd(std::string* digest, uint64_t sequence, absl::string_view purged_hash);

// The control plane's trail key: an Ed25519 private key (PKCS#8 PEM), loaded once.
class TrailSigner {
 public:
  static absl::StatusOr<std::unique_ptr<TrailSigner>> FromPem(const std::string& private_pem);
  ~TrailSigner();
  TrailSigner(const TrailSigner&) = delete;
  TrailSigner& operator=(const TrailSigner&) = delete;

  absl::StatusOr<std::string> Sign(absl::string_view message) const;  // 64 bytes
  // Whether `signature` is this key's signature of `message`.
  bool Verify(absl::string_view message, absl::string_view signature) const;
  const std::string& public_key() const { return public_key_; }  // raw, 32 bytes

 private:
  struct Key;
  TrailSigner(std::unique_ptr<Key> key, std::string public_key);
  std::unique_ptr<Key> key_;
  std::string public_key_;
};

}  // namespace sluice::controlplane
