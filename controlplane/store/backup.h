// An online backup of a control plane's store, taken while it runs (`sluice-controlplane
// --data-dir DIR --backup-to DEST`): the SQLite database as of one instant (SQLite's backup API,
// one read transaction, so agents' events go on being stored meanwhile) and then the recording
// files. Recordings are only appended to, and a block is written before the index rows that
// name it are committed, so the copied files hold every block the copied database names. Keys
// (master key, trail key, admin token, TLS) are not copied: they are backed up apart
// (docs/deploy.md, "Back up").
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace sluice::controlplane {

struct BackupSummary {
  uint64_t database_bytes = 0;
  uint64_t policy_version = 0;
  int recording_files = 0;
  uint64_t recording_bytes = 0;
};

// Copies `data_dir`'s store to `dest` (a new or empty directory, made 0700). On an error the
// partial copy is removed and the error names what failed; the data dir is never written.
absl::StatusOr<BackupSummary> BackUpStore(const std::string& data_dir, const std::string& dest);

}  // namespace sluice::controlplane
