// Audit events produced in the data path (session start and end, statements, refused logins,
// protocol errors), waiting to be streamed to the control plane. Each gets a per-agent sequence
// number and is encoded once, on the thread that emits it, as a framed record
// (common/audit/records.h) appended to the open chunk. Chunks are what travels: the writer takes
// whole chunks (AuditBatch.records) and keeps them in flight until the control plane
// acknowledges the highest sequence it committed. A broken stream puts in-flight chunks back at
// the front, in order, so the control plane sees every sequence again and drops the ones it has.
//
// Events form a hash chain per agent: each carries in `prev_hash` the SHA-256 of the previous
// event's serialized record payload, so a changed, removed or inserted event breaks the chain at
// the next one (the control plane checks it on ingest and `sluicectl audit verify` from storage).
// With a spool the chain is filled in by the spool thread, over each sealed chunk before it is
// written or sent (audit::ChainRecords: Emit leaves a placeholder of the hash's size, and the
// journal's copies are chained when they are recovered); without one, Emit hashes inline.
//
// With a Spool attached (StartSpooling), every record is also copied, as it is emitted, into the
// spool's memory-mapped journal (agent/audit/journal.h: a killed agent loses nothing), and a
// thread of the sink appends every chunk to the agent's on-disk spool before the chunk can be
// sent (the open chunk is sealed at most 150 ms (kLinger) after its first event; the spool's own
// thread syncs the segments, so a slow disk sync does not hold chunks back), and what the control
// plane acknowledges is deleted from disk; chunks read back from the spool at start are sent
// first. Bounded in memory bytes and in spool bytes; when either is full, or the spool cannot be
// written or synced, new sessions are refused (fail closed).
//
// A spool that cannot be written (a full disk, a quota, a read-only or failing file system) is
// not a crash and not a hole: the chunks it could not take stay in memory (they are still sent,
// and never evicted) and are written, in order, when it takes writes again; while it fails the
// spool thread writes nothing else and tries again every Spool::Options::retry_interval (the
// oldest unwritten chunk, or Spool::Probe when none is left), so the agent recovers by itself
// when room returns. The failure and the recovery are events of their own (`audit_spool_failed`,
// `audit_spool_recovered`, no session) in the chain. Running sessions go on while their events
// fit in memory; a session whose event cannot be queued ends (Emit returns false).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/audit/records.h"

namespace sluice::agent {

// A run of consecutive records.
struct EventChunk {
  std::string records;
  uint64_t first_sequence = 0;
  uint64_t last_sequence = 0;
  size_t count = 0;
  bool sealed = false;        // nothing more is appended (it is being spooled)
  bool spooled = false;       // on disk: it may be sent
  bool evicted = false;       // on disk only: `records` is empty until it is read back to be sent
  bool on_disk = false;       // written to a spool segment (a failed write leaves it false)
  std::string last_hash;      // SHA-256 of its last record's payload (the chain head after it)
  int64_t first_emit_ms = 0;  // when its first record was emitted (read back: when it was read)
};

class InflightTable;
class Journal;
class Spool;

// Where an event is accounted in a session's in-flight slot (EventSink::Emit).
struct InflightAccount {
  InflightTable* table = nullptr;
  int slot = -1;
  bool settles = false;  // the event answers a request the session forwarded
  bool release = false;  // the session's last event
};

class EventSink {
 public:
  // Memory for records not yet on disk; spooled chunks beyond half of it are evicted (kept on
  // disk only, read back when they are sent), so the spool's size, not memory, bounds a backlog.
  static constexpr size_t kDefaultCapacityBytes = 64 << 20;
  // Chunks of up to 1 MiB, sealed at most kLinger after their first event: the control plane's
  // cost per batch (one transaction, its index pages, one compressed chunk, one recording-file
  // write) is then shared by thousands of events on a busy agent (with 256 KiB / 20 ms chunks its
  // ingest cost per event was 1.5 times as high as with 1 MiB / 60 ms; 150 ms instead of 60 took
  // another 1.2–2 µs per pgbench transaction off the control plane, where 60 ms sealed chunks of
  // ~450 KB). A process crash loses nothing meanwhile (the journal); a machine crash, at most
  // kLinger plus the spool's sync interval (longer while the disk is slow to sync, for what the
  // control plane has not acknowledged yet).
  static constexpr size_t kDefaultChunkBytes = audit::kChunkBytes;
  static constexpr absl::Duration kLinger = absl::Milliseconds(150);

  explicit EventSink(size_t capacity_bytes = kDefaultCapacityBytes,
                     size_t chunk_bytes = kDefaultChunkBytes);
  ~EventSink();

  // Makes the sink durable: what `spool` read back is queued first (sequences continue after
  // it), and a thread spools every chunk before it may be sent. Call before any Emit.
  void StartSpooling(Spool* spool);
  // Signs checkpoints: at least every second while events come, the spool thread emits a
  // `checkpoint` event whose body holds the sequence and chain hash of the last event before it
  // and `sign` of audit::CheckpointMessage(sequence, hash). Call before StartSpooling.
  using Signer = std::function<absl::StatusOr<std::string>(absl::string_view message)>;
  void SetCheckpointSigner(Signer sign) { sign_ = std::move(sign); }
  // What fills in the chain of each sealed chunk (audit::ChainRecords); tests replace it to see
  // what the sink does when a chunk cannot be chained. Call before StartSpooling.
  using Chainer = std::function<absl::Status(std::string* records, std::string* head)>;
  void SetChainerForTest(Chainer chain) { chain_ = std::move(chain); }

  // Queues an event whose body is serialized JSON, with the session's recording since its
  // previous event (common/audit/recording.h), if any; false when the buffer is full (the caller
  // must fail closed). The recording travels compressed when it is long enough
  // (audit::CompressSlice). A recording that would make the record too large is replaced by an
  // omission entry.
  // `inflight` (optional) is the session's slot in the in-flight table: the event is accounted
  // there in the same critical section that copies it into the journal (agent/audit/inflight.h).
  using Inflight = InflightAccount;
  bool Emit(absl::string_view type, absl::string_view session_id, absl::string_view json,
            bool failed = false, absl::string_view recording = {}, const Inflight& inflight = {});
  // After a restart (call after StartSpooling): the sessions the previous run left open become
  // events — a statement event with outcome "unknown" for each request the server may have run
  // whose answer the agent never saw, and a session_end. `journal_records` are the records the
  // spool recovered from the journal (the only place an event newer than its slot can be).
  void RecoverInflight(InflightTable* table, absl::string_view journal_records);
  bool Full() const;
  // Why new sessions are refused (Full), for the agent's status and the control plane; empty
  // when they are accepted.
  std::string RefusalReason() const;

  // Waits up to `timeout` for queued events; true when there are some.
  bool WaitForEvents(absl::Duration timeout);
  // Waits up to `timeout` until every event emitted so far is in the spool; false on timeout.
  bool WaitUntilSpooled(absl::Duration timeout);
  // Waits up to `linger` for a full chunk (call after WaitForEvents): sends fewer, larger batches
  // when the data path is busy.
  void WaitForChunk(absl::Duration linger);
  // The oldest queued chunk (the open one too, when nothing else is queued), now in flight; an
  // evicted chunk is read back from the spool (nullopt, and the spool in error, when it cannot be).
  // A chunk already in a spool segment gives its records to the caller (no copy), and stays in
  // flight as metadata: a resend after Requeue reads them back from the segment.
  std::optional<EventChunk> TakeChunk();
  // The control plane committed everything up to `sequence`.
  void Ack(uint64_t sequence);

  // Where this process's chain starts, for Hello (docs/audit-and-evidence.md, "When the agent's
  // spool lost its tail"): the last record the spool held when it was opened — its sequence and
  // chain hash (0 and empty without a spool, or for a new one) — and the lowest sequence this
  // process numbers its own events from.
  struct ChainStart {
    uint64_t sequence = 0;
    std::string hash;
    uint64_t own_from = 0;
  };
  ChainStart chain_start() const;
  // The control plane holds records this agent's spool lost (stored, then lost from the spool in
  // a machine crash before they were durable), and recorded that the chain goes on from the
  // spool's head: the trail says so with an `audit_chain_resumed` event (no session; once per
  // resume in this process), and new events are numbered above what the control plane holds.
  // False (nothing done) when the resume is not about where this process's chain started.
  bool ChainResumed(uint64_t after_sequence, absl::string_view after_hash, uint64_t held_through,
                    uint64_t held_records, int64_t recorded_ms);
  // The stream broke: everything in flight goes back to the front of the queue.
  void Requeue();

  struct Stats {
    uint64_t emitted = 0;
    size_t queued_events = 0;
    size_t in_flight_events = 0;
    size_t bytes = 0;           // queued and in flight, in memory
    size_t evicted_events = 0;  // waiting to be sent, on disk only (memory was short, or a restart)
    size_t unspooled_events = 0;  // not on disk yet (the open chunk, for at most ~150 ms)
    size_t unwritten_events = 0;  // sealed, but the spool could not write them: in memory only
    size_t spool_bytes = 0;
    size_t spool_segments = 0;
    std::string spool_error;
    int64_t spool_error_since_ms = 0;  // when the spool started to fail (0 while it does not)
    std::string refusing;              // RefusalReason()
    uint64_t journal_overflows = 0;    // records too many for the journal's half (not journaled)
    uint64_t inflight_uncovered = 0;   // sessions the in-flight table had no slot for
    // When the oldest event the control plane has not acknowledged was emitted (0: none waits):
    // the audit delivery lag is now minus this.
    int64_t oldest_unacked_ms = 0;
  };
  Stats stats() const;

 private:
  bool HasFullChunk() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasSendable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasUnspooled() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AllSpooled() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool OpenChunkFull() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SpoolLoop();
  // The disk failed (`error`): new sessions are refused until a retry succeeds.
  absl::Status MappedFilesLocked(bool repair) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DiskFailedLocked(absl::string_view error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends to the spool, oldest first, the chunks a failed write left in memory only (spool
  // thread); `written` counts them. Stops at the first failure.
  absl::Status WriteUnwritten(size_t* written);
  // The oldest such chunk whose first sequence is above `after`, if any.
  EventChunk* OldestUnwrittenLocked(uint64_t after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Emits audit_spool_failed / audit_spool_recovered when the disk's state changed (spool thread).
  void ReportDiskState();
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Leaves `chunk` on disk only: its records leave memory (returned) and `bytes_` drops.
  std::string TakeRecordsLocked(EventChunk& chunk) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeCheckpoint();

  const size_t capacity_bytes_;
  const size_t chunk_bytes_;
  mutable absl::Mutex mu_;
  // queued_.back() is the open chunk records are appended to.
  std::deque<EventChunk> queued_ ABSL_GUARDED_BY(mu_);
  std::deque<EventChunk> in_flight_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t queued_events_ ABSL_GUARDED_BY(mu_) = 0;
  size_t in_flight_events_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_);
  // With a spool the chain is filled in by the spool thread (audit::ChainRecords) over each sealed
  // chunk: these are its head after the last chunk it chained. Without one, Emit hashes inline.
  std::string chain_head_ ABSL_GUARDED_BY(mu_);      // SHA-256 of the last chained record's payload
  uint64_t head_sequence_ ABSL_GUARDED_BY(mu_) = 0;  // ... and its sequence
  std::string spool_head_;                           // spool thread only: the running chain head
  uint64_t emitted_ ABSL_GUARDED_BY(mu_) = 0;
  ChainStart chain_start_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> resumes_reported_ ABSL_GUARDED_BY(mu_);  // held_through of each reported
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;  // the highest sequence the control plane committed
  Spool* spool_ = nullptr;                   // set once, before use
  Journal* journal_ ABSL_GUARDED_BY(mu_) = nullptr;  // the spool's: every record is copied there
  // Why the spool cannot be used (what Full and RefusalReason report): the disk's error, else a
  // chunk that cannot be chained.
  std::string spool_error_ ABSL_GUARDED_BY(mu_);
  // The disk failed (a write, a sync, a read back): cleared only by a round that writes (or
  // probes) successfully, tried at most every retry interval (next_retry_).
  std::string disk_error_ ABSL_GUARDED_BY(mu_);
  int64_t disk_error_since_ms_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time next_retry_ ABSL_GUARDED_BY(mu_);
  // For ReportDiskState: the disk failed since it last ran, with this error, first at this time.
  bool failed_since_report_ ABSL_GUARDED_BY(mu_) = false;
  std::string failed_error_ ABSL_GUARDED_BY(mu_);
  int64_t failed_since_ms_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread spooler_;
  Signer sign_;
  Chainer chain_ = audit::ChainRecords;
  absl::Time last_checkpoint_;
  uint64_t checkpointed_sequence_ = 0;  // spool thread only
  std::string reported_disk_error_;  // spool thread only: the failure reported by an event, until
  int64_t reported_since_ms_ = 0;    // ... its recovery is; and since when
};

}  // namespace sluice::agent
