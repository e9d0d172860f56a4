#include "controlplane/store/disk_fault.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace sluice::controlplane {
namespace {

constexpr absl::string_view kDiskFaultPayload = "sluice.dev/store-disk-fault";

}  // namespace

bool IsDiskErrno(int err) {
  return err == ENOSPC || err == EDQUOT || err == EROFS || err == EIO || err == EFBIG;
}

absl::Status DiskFaultError(absl::string_view message) {
  absl::Status st = absl::UnavailableError(message);
  st.SetPayload(kDiskFaultPayload, absl::Cord("1"));
  return st;
}

bool IsDiskFault(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kDiskFaultPayload).has_value();
}

absl::Status FileError(absl::string_view what, const std::string& path, int err) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  return IsDiskErrno(err) ? DiskFaultError(message) : absl::InternalError(message);
}

absl::Status SqliteError(sqlite3* db, absl::string_view message) {
  const std::string text = message.empty() ? std::string(sqlite3_errmsg(db)) : std::string(message);
  const int code = sqlite3_extended_errcode(db);
  const int primary = code & 0xff;
  // What a failing disk's reads look like to SQLite may be a damaged page: with the system's
  // error of a disk fault beside it, it is the disk's.
  const bool unreadable = (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) &&
                          IsDiskErrno(sqlite3_system_errno(db));
  if (primary != SQLITE_FULL && primary != SQLITE_IOERR && primary != SQLITE_READONLY &&
      primary != SQLITE_CANTOPEN && !unreadable) {
    return absl::InternalError(absl::StrCat("sqlite: ", text));
  }
  const char* file = sqlite3_db_filename(db, "main");
  const bool shm = code == SQLITE_IOERR_SHMSIZE || code == SQLITE_IOERR_SHMMAP ||
                   code == SQLITE_IOERR_SHMOPEN || code == SQLITE_IOERR_SHMLOCK;
  // SQLite keeps no errno for a full disk (SQLITE_FULL is its own reading of ENOSPC).
  int err = sqlite3_system_errno(db);
  if (err == 0 && primary == SQLITE_FULL) err = ENOSPC;
  const bool read = code == SQLITE_IOERR_READ || code == SQLITE_IOERR_SHORT_READ || unreadable;
  const char* verb = primary == SQLITE_CANTOPEN ? "open" : read ? "read" : "write";
  return DiskFaultError(
      absl::StrCat("cannot ", verb, " the store ", file != nullptr ? file : "(in memory)",
                   shm ? " (its -shm file)" : " (or its -wal or -shm file)", ": ", text,
                   err != 0 ? absl::StrCat(" (", std::strerror(err), ")") : std::string()));
}

absl::Status ProbeWrite(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return FileError("cannot create", path, errno);
  absl::Status st;
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  while (err == EINTR) err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  // A file system without fallocate: the bytes are written instead (below).
  if (err != 0 && err != EOPNOTSUPP)
    st = FileError(absl::StrCat("cannot allocate ", FormatBytes(bytes), " in"), path, err);
  const std::string block(64 << 10, '\0');
  for (uint64_t done = 0; st.ok() && done < bytes;) {
    ssize_t n = ::pwrite(fd, block.data(), std::min<uint64_t>(block.size(), bytes - done),
                         static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) st = FileError("cannot write", path, n < 0 ? errno : ENOSPC);
    if (n > 0) done += static_cast<uint64_t>(n);
  }
  if (st.ok() && ::fdatasync(fd) != 0) st = FileError("cannot sync", path, errno);
  ::close(fd);
  if (::unlink(path.c_str()) != 0 && st.ok() && errno != ENOENT)
    st = FileError("cannot remove", path, errno);
  return st;
}

}  // namespace sluice::controlplane
