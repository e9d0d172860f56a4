// A file of the agent's spool mapped into memory (the journal, agent/audit/journal.h, and the
// in-flight table, agent/audit/inflight.h), allocated whole, whose page faults cannot kill the
// agent.
//
// The kernel answers a page of a shared file mapping that it cannot read in or keep (an I/O
// error on a failing disk, an ext4 forced shutdown, the file cut shorter under the agent) with
// SIGBUS at the instruction that touched it. A process-wide SIGBUS handler knows the ranges of
// every open MappedFile: a fault inside one puts a private, zero-filled page in place of the
// faulting one (mmap MAP_FIXED), notes the file as faulted and lets the instruction run again, on
// memory that no longer reaches the file. Nothing is lost that is not also in memory elsewhere
// (the event sink's chunks); what is lost is the file's cover of it against a kill. The owner
// polls faulted() (one atomic load), refuses new sessions while it is set, and calls Repair() to
// allocate and map the file again. A SIGBUS at any other address goes to the handler that was
// installed before (or the default action: the process ends, as it would have).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace sluice::agent {

class MappedFile {
 public:
  // Creates (or reuses) `path`, allocates it whole to `bytes` (posix_fallocate: a full disk is an
  // error here that names the file, its size and the volume's free space) and maps it shared,
  // guarded as above.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path, size_t bytes);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Whether a page of the mapping faulted since it was opened or last repaired.
  bool faulted() const;
  // The error to report while faulted().
  std::string FaultMessage() const;
  // Allocates the file whole again (what was cut off it grows back), maps it over the same
  // addresses and copies the current content back in (the zero-filled pages that replaced faulted
  // ones included). An error when the file cannot be allocated, mapped or written again (a page
  // faulted again: the disk still fails). Writers racing with Repair may see their last write
  // lost; the owner calls it under its own lock where that matters.
  absl::Status Repair();

 private:
  MappedFile(int fd, char* data, size_t size, std::string path, int guard_slot)
      : fd_(fd), data_(data), size_(size), path_(std::move(path)), guard_slot_(guard_slot) {}

  int fd_;
  char* data_;
  size_t size_;
  std::string path_;
  int guard_slot_;
};

}  // namespace sluice::agent
