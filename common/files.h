// Small file helpers with explicit permissions, for keys, tokens and snapshots.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice {

// Reads a whole file. Refuses files larger than `max_bytes`.
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes = 64 << 20);

// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename) with
// permission bits `mode` (e.g. 0600 for secrets).
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data, int mode);

// Creates a directory (and parents) with `mode` if it does not exist.
absl::Status EnsureDir(const std::string& path, int mode = 0700);

bool FileExists(const std::string& path);

}  // namespace sluice
