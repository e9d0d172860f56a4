// Room for the agent's audit files: what a volume holds and has free, and the preallocation of
// the memory-mapped files (agent/audit/journal.h, agent/audit/inflight.h). A page of a mapped
// file that the file system cannot allocate when it is first touched — a sparse file on a full
// disk — kills the process with SIGBUS; allocated up front, a full disk is an error at start,
// named, instead of a crash later.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice::agent {

struct VolumeSpace {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // what an unprivileged writer may still use
};
// The volume that holds `path` (statvfs(3)).
absl::StatusOr<VolumeSpace> VolumeSpaceOf(const std::string& path);

// Allocates bytes [0, size) of the open file `fd` (posix_fallocate(3)). The error names the file,
// the size and the free space of its volume.
absl::Status Preallocate(int fd, const std::string& path, uint64_t size);

// "4.0 MiB", "512 KiB", "300 bytes".
std::string FormatBytes(uint64_t bytes);

}  // namespace sluice::agent
