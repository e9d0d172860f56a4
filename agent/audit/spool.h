// The agent's durable audit spool: segment files of framed records (common/audit/records.h)
// under <data-dir>/spool, each named by its first sequence. Chunks of events are appended before
// they are sent; segments are deleted once the control plane has acknowledged every record in
// them; after a restart the records still on disk are read back (checksums verified, a torn tail
// cut off) and sent again, and the control plane drops what it already holds.
//
// Written with write(2) as they come (a killed agent loses nothing that reached the spool) and
// made durable with fdatasync by a thread of the spool's own, about every `sync_interval` (a
// machine crash loses at most that while the disk keeps up). A chunk may be sent once it is
// written: a sync that takes seconds (a disk busy with other writers: with ext4's ordered mode one
// fdatasync can wait for everyone's dirty data) delays only this copy's durability, while the
// control plane receives and commits the events, instead of holding new events in memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/audit/inflight.h"
#include "agent/audit/journal.h"
#include "common/audit/records.h"

namespace sluice::agent {

struct EventChunk;

class Spool {
 public:
  struct Options {
    std::string dir;
    size_t max_bytes = size_t{1} << 30;
    size_t segment_bytes = 8 << 20;
    absl::Duration sync_interval = absl::Milliseconds(100);
    size_t journal_half_bytes = 16 << 20;  // agent/audit/journal.h
    size_t chunk_bytes =
        audit::kChunkBytes;  // what was on disk is sent again in chunks of this size
    size_t inflight_slots = InflightTable::kDefaultSlots;  // agent/audit/inflight.h
    // While the spool cannot be written, how often the event sink tries again (Probe).
    absl::Duration retry_interval = absl::Seconds(1);
    // Makes a segment durable (fdatasync(2) when empty); tests stand in a slow or failing disk.
    std::function<int(int fd)> sync_file;
    // Writes to a segment like write(2) (write(2) when empty); tests stand in a full or failing
    // disk.
    std::function<ssize_t(int fd, const void* data, size_t size)> write_file;
  };
  // Opens (creating the directory 0700) and reads back what is there: the segments, then the
  // records of the journal that follow them (written to a new segment at once). Fails, saying so,
  // when the directory's volume is smaller than the journal and the in-flight table (both
  // allocated whole) and one segment, or when they cannot be allocated (the volume is full).
  static absl::StatusOr<std::unique_ptr<Spool>> Open(Options options);
  // The bytes a volume must hold at least for a spool with these options: the journal, the
  // in-flight table and one segment.
  static uint64_t MinimumVolumeBytes(const Options& options);
  ~Spool();

  // What was on disk at Open, oldest first (once): chunks of at most Options::chunk_bytes, their
  // records left on disk (`evicted`: ReadRecords brings them when they are sent) — except, when
  // the journal's records could not be written at Open (open_status), those, with their records
  // and not `on_disk`.
  std::vector<EventChunk> TakeRecovered();
  // Why writing or syncing what the journal held failed at Open (the disk full or failing when
  // the agent started); the event sink then starts refusing new sessions, and retries.
  const absl::Status& open_status() const { return open_status_; }
  // The records with sequences first..last, read back from the segments.
  absl::StatusOr<std::string> ReadRecords(uint64_t first, uint64_t last) const;
  // The highest sequence on disk (0 when empty).
  uint64_t last_sequence() const;
  // The hash of the last record ever appended (kept in chain.head when the segments are gone),
  // so the event chain goes on after a restart; empty for a new spool.
  std::string chain_head() const;

  // Appends a chunk (its sequences follow the last appended) with write(2); the spool's sync
  // thread makes it durable. A write that fails (a full disk, a quota, a read-only or failing
  // file system) leaves no part of the chunk behind: the segment is cut back to its last whole
  // record (or, when it cannot be cut, the next chunk starts a new segment), so the chunk can be
  // appended again later.
  absl::Status Append(const EventChunk& chunk);
  // Whether the volume takes writes again after a failure: a file of Options::chunk_bytes is
  // allocated, written to, synced and removed. Used while nothing else is waiting to be written.
  absl::Status Probe();
  // Makes everything appended durable now, on the calling thread (at start and at shutdown).
  absl::Status Sync();
  // Why the sync thread's latest sync failed (OK once a later one succeeded).
  absl::Status sync_status() const;
  // Deletes the segments whose records are all at or below `sequence`.
  void Ack(uint64_t sequence);

  // Where the event sink copies each record as it is emitted (agent/audit/journal.h).
  Journal* journal() { return journal_.get(); }
  // The in-flight table (agent/audit/inflight.h), in the spool directory.
  InflightTable* inflight() { return inflight_.get(); }
  // The records Open recovered from the journal (once; for EventSink::RecoverInflight).
  std::string TakeJournalRecords() { return std::move(journal_records_); }

  // Bytes not yet acknowledged. Does not wait for the spool's lock, which is held while the spool
  // writes and syncs (milliseconds on a slow disk): a new session asks Full() on the data path.
  size_t bytes() const;
  size_t segments() const;
  bool Full() const { return bytes() >= options_.max_bytes; }
  const Options& options() const { return options_; }

 private:
  struct Segment {
    std::string path;
    uint64_t first = 0;
    uint64_t last = 0;
    size_t bytes = 0;
    size_t count = 0;        // records
    size_t acked_bytes = 0;  // of the segment being appended to: how much is acknowledged
  };
  explicit Spool(Options options);  // in spool.cc, where EventChunk is complete
  void SyncLoop();
  bool SyncWanted() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || dirty_ || !retired_fds_.empty();
  }
  // fdatasync(2), or the test's stand-in.
  int SyncFile(int fd) const;
  // write(2), or the test's stand-in.
  ssize_t WriteFile(int fd, const void* data, size_t size) const;
  // After a failed write to fd_: the segment is cut back to what segments_.back() counts.
  void CutTornWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Syncs and closes `retired`, then syncs `active` (none when negative); the first failure.
  absl::Status SyncFiles(const std::vector<int>& retired, int active) const;
  absl::Status Recover();
  // Adds a record read back at Open to the chunks it will be sent in (recovered_).
  void AddRecovered(uint64_t sequence, size_t record_bytes);
  // The journal's records that could not be written at Open: chunks in memory (recovered_).
  void KeepUnwritten(const EventChunk& left);
  absl::Status OpenSegmentLocked(uint64_t first) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes bytes() see the current count.
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<Segment> segments_
      ABSL_GUARDED_BY(mu_);  // back() is the one appended to, when fd_ >= 0
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;  // written since the sync thread last took fd_
  // Full segments no longer appended to, open until the sync thread has synced them.
  std::vector<int> retired_fds_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool sync_busy_ ABSL_GUARDED_BY(mu_) = false;  // the sync thread is syncing, outside the lock
  std::string sync_error_ ABSL_GUARDED_BY(mu_);
  absl::Time last_sync_ ABSL_GUARDED_BY(mu_);
  std::thread syncer_;
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<size_t> unacked_bytes_{0};  // bytes_ less what is acknowledged of the open segment
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::string chain_head_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<InflightTable> inflight_;
  std::string journal_records_;
  absl::Status open_status_;
  std::vector<EventChunk> recovered_;  // what Open found, as chunks without their records
  size_t recovered_bytes_ = 0;         // ... the bytes of the last of them
};

}  // namespace sluice::agent
