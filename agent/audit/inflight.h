// Statements in flight, kept where a killed agent cannot lose them: a memory-mapped table
// (<data-dir>/spool/inflight) with one slot per open session. A session notes each request
// (Query, Execute) in its slot just before forwarding it to the server; the statement event that
// answers it settles it, in the same critical section in which the event sink copies the event
// into the journal (EventSink::Emit). Every event of the session records its sequence in the
// slot, so after a kill exactly one of the session's events can be newer than the slot says —
// the one being written — and the journal holds it.
//
// At the next start the agent turns what is left into events: one statement event with outcome
// "unknown" for each request the server may have run whose answer the agent never saw, and a
// session_end for each session (see RecoverInflight in event_sink.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/audit/mapped_file.h"

namespace sluice::agent {

class InflightTable {
 public:
  static constexpr size_t kDefaultSlots = 4096;
  static constexpr size_t kTexts = 4;        // texts kept per slot (the oldest pending requests)
  static constexpr size_t kTextBytes = 200;  // of each

  static constexpr size_t kSlotBytes = 1024;

  // Creates (or reuses) the file, allocated whole (posix_fallocate: a full disk is an error here,
  // naming the file, its size and the volume's free space, never a SIGBUS later), and maps it.
  static absl::StatusOr<std::unique_ptr<InflightTable>> Open(const std::string& path,
                                                             size_t slots = kDefaultSlots);
  static constexpr size_t FileBytes(size_t slots) { return slots * kSlotBytes; }
  InflightTable(const InflightTable&) = delete;
  InflightTable& operator=(const InflightTable&) = delete;

  // A slot for a session whose last event so far has sequence `sequence`; -1 when the table is
  // full (the session is then not covered; counted in uncovered()).
  int Acquire(absl::string_view session_id, uint64_t sequence);
  // The session forwards a request with this text (called by the session's thread only).
  void Begin(int slot, absl::string_view text);
  // The session emitted event `sequence`: it answers a request (`settles`), ends the session
  // (`release`: the slot is freed), or neither. Called inside EventSink::Emit's critical section.
  void Account(int slot, uint64_t sequence, bool settles, bool release);

  struct Leftover {
    std::string session_id;
    uint64_t sequence = 0;           // the last event accounted
    uint32_t pending = 0;            // requests forwarded, not answered by an accounted event
    std::vector<std::string> texts;  // the oldest pending requests' texts (at most kTexts)
  };
  // The slots in use, as the previous run left them.
  std::vector<Leftover> Recover() const;
  // Frees every slot.
  void Reset();
  uint64_t uncovered() const;

  // A page of the file faulted (agent/audit/mapped_file.h): what sessions note there no longer
  // reaches the file, until Repair() maps it anew with the table's current content (a note made
  // by a session at that very instant may be lost: it matters only after a kill during a repair).
  bool faulted() const { return file_->faulted(); }
  std::string FaultMessage() const { return file_->FaultMessage(); }
  absl::Status Repair() { return file_->Repair(); }

 private:
  struct Slot;
  InflightTable(std::unique_ptr<MappedFile> file, size_t count);
  Slot* At(int slot) const;

  std::unique_ptr<MappedFile> file_;
  Slot* slots_;
  size_t count_;
  mutable absl::Mutex mu_;
  std::vector<int> free_ ABSL_GUARDED_BY(mu_);
  uint64_t uncovered_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::agent
