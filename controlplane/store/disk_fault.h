// Disk faults of the control plane's data directory: its volume full, a quota reached, a
// read-only or failing file system. Such an error is not the request's fault, and the same write
// fails for every caller until the disk changes: the store refuses writes until a probe finds
// them possible again (guarded_store.h). These helpers tell a disk fault from other errors, name
// the file and the fault, and measure and probe a volume.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/disk_space.h"  // VolumeSpaceOf, FormatBytes

namespace sluice::controlplane {

// ENOSPC, EDQUOT, EROFS, EIO, EFBIG: the disk's fault, not the request's.
bool IsDiskErrno(int err);

// An error for a disk fault (Unavailable): `message` names the file and the fault.
// IsDiskFault(status) is true for it and for nothing else.
absl::Status DiskFaultError(absl::string_view message);
bool IsDiskFault(const absl::Status& status);

// An error for `what` on the file `path` from errno `err`: a disk fault when IsDiskErrno(err),
// else Internal. "cannot write recording file /d/recordings/0000000001.rec: No space left on
// device".
absl::Status FileError(absl::string_view what, const std::string& path, int err);

// The status of SQLite's last failure on `db`. A failure of its files (SQLITE_FULL, SQLITE_IOERR,
// SQLITE_READONLY, SQLITE_CANTOPEN) is a disk fault naming the database and the system's error:
// "cannot write the store /d/sluice.db (or its -wal or -shm file): database or disk is full (No
// space left on device)" ("cannot read", "cannot open" when that failed). Anything else is
// Internal("sqlite: <message>").
absl::Status SqliteError(sqlite3* db, absl::string_view message = "");

// Whether the volume takes new writes: `path` is created, `bytes` of it allocated, written and
// synced, and it is removed again. The error names the file and the fault.
absl::Status ProbeWrite(const std::string& path, uint64_t bytes);

}  // namespace sluice::controlplane
