// The audit journal: a memory-mapped file (<data-dir>/spool/journal) that every event record is
// copied into the moment it is emitted, before the spool thread has written its chunk to a
// segment (which happens within ~150 ms). The mapping is shared with the kernel's page cache, so
// a killed agent (kill -9, a crash) loses none of these records: at the next start the spool
// reads them back from the journal. (A machine crash is covered by the spool's fdatasync.)
//
// Two halves, used in turn: records go to the active half; when the spool thread seals the
// chunks they belong to, it switches halves, and the half it switches to is emptied — its
// records were written to a segment in the previous round. Each half holds framed records
// (common/audit/records.h) from its start; reading stops at the first record that is not
// valid or whose sequence is not above the one before it (older leftovers).
//
// The file is allocated whole when it is opened (posix_fallocate): a page of a sparse mapped
// file that the file system cannot allocate when it is first written — a full disk — would kill
// the agent with SIGBUS on the data path. A page the kernel cannot read or keep later (a failing
// disk) is caught (agent/audit/mapped_file.h): the journal is then faulted — it takes no more
// records, the event sink refuses new sessions — until Repair() maps it anew.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/audit/mapped_file.h"

namespace sluice::agent {

class Journal {
 public:
  static constexpr size_t kDefaultHalfBytes = 16 << 20;

  // Creates (or reuses) the file, allocated whole (posix_fallocate: a full disk is an error here,
  // naming the file, its size and the volume's free space, never a SIGBUS when a page is first
  // written), and maps it.
  static absl::StatusOr<std::unique_ptr<Journal>> Open(const std::string& path,
                                                       size_t half_bytes = kDefaultHalfBytes);
  static constexpr size_t FileBytes(size_t half_bytes) { return 2 * half_bytes; }
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // The records the previous runs left after sequence `after` (what the spool's segments hold),
  // framed, oldest first: after + 1, + 2, ... — sequences jump where the agent restarted — up to
  // the first gap; `count`, `first` and `last` say how many, the first and the last sequence.
  std::string Recover(uint64_t after, size_t* count, uint64_t* first, uint64_t* last) const;
  // Copies one framed record into the active half; false when it does not fit (the record is
  // then only as safe as the spool thread makes it; nothing more goes to this half until the
  // next Switch).
  bool Append(absl::string_view framed);
  // The records written so far are being spooled: the other half becomes active, emptied.
  void Switch();
  // Empties both halves (everything is in the spool).
  void Reset();
  uint64_t overflows() const { return overflows_; }

  // A page of the file faulted (agent/audit/mapped_file.h): Append takes nothing until Repair.
  bool faulted() const { return file_->faulted(); }
  std::string FaultMessage() const { return file_->FaultMessage(); }
  // Maps the file anew and empties both halves: the caller has every record appended so far in
  // hand (the event sink calls it when it seals its chunks, which the spool then writes).
  absl::Status Repair();

 private:
  Journal(std::unique_ptr<MappedFile> file, size_t half) : file_(std::move(file)), half_(half) {}
  char* Half(int h) const { return file_->data() + static_cast<size_t>(h) * half_; }

  std::unique_ptr<MappedFile> file_;
  size_t half_;
  int active_ = 0;
  size_t pos_ = 0;
  bool closed_ = false;  // a record did not fit: the active half takes no more
  uint64_t overflows_ = 0;
};

}  // namespace sluice::agent
