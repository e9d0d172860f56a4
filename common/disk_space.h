// Room on a volume: what it holds and has free, whether it is read-only, and files allocated
// whole up front. The agent's spool and the control plane's store check them at start (a volume
// too small or too full is named, with what it needs, instead of failing later), and the agent
// allocates its memory-mapped files whole: a page of a sparse mapped file that the file system
// cannot allocate when it is first touched (a full disk) is a SIGBUS, not an error.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice {

struct VolumeSpace {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // what an unprivileged writer may still use
  bool read_only = false;   // mounted read-only
};
// The volume that holds `path` (statvfs(3)); the error names the path and the system's error.
absl::StatusOr<VolumeSpace> VolumeSpaceOf(const std::string& path);

// Allocates bytes [0, size) of the open file `fd` (posix_fallocate(3)). The error names the file,
// the size and the free space of its volume: ResourceExhausted for no space, a quota or a file
// too large, FailedPrecondition otherwise.
absl::Status Preallocate(int fd, const std::string& path, uint64_t size);

// "4.0 MiB", "512 KiB", "300 bytes".
std::string FormatBytes(uint64_t bytes);

}  // namespace sluice
