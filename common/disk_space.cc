#include "common/disk_space.h"

#include <fcntl.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sluice {

absl::StatusOr<VolumeSpace> VolumeSpaceOf(const std::string& path) {
  struct statvfs s;
  if (::statvfs(path.c_str(), &s) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot measure the volume of ", path, ": ", std::strerror(errno)));
  }
  VolumeSpace v;
  v.total_bytes = static_cast<uint64_t>(s.f_blocks) * s.f_frsize;
  v.free_bytes = static_cast<uint64_t>(s.f_bavail) * s.f_frsize;
  v.read_only = (s.f_flag & ST_RDONLY) != 0;
  return v;
}

absl::Status Preallocate(int fd, const std::string& path, uint64_t size) {
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  while (err == EINTR) err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (err == 0) return absl::OkStatus();
  std::string room;
  if (auto space = VolumeSpaceOf(path); space.ok()) {
    room = absl::StrCat("; its volume has ", FormatBytes(space->free_bytes), " free of ",
                        FormatBytes(space->total_bytes));
  }
  std::string message = absl::StrCat("cannot preallocate ", path, " (", FormatBytes(size),
                                     "): ", std::strerror(err), room);
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) return absl::ResourceExhaustedError(message);
  return absl::FailedPreconditionError(message);
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30))
    return absl::StrFormat("%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  if (bytes >= (uint64_t{1} << 20))
    return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  if (bytes >= (uint64_t{1} << 10))
    return absl::StrFormat("%.0f KiB", static_cast<double>(bytes) / (1 << 10));
  return absl::StrCat(bytes, " bytes");
}

}  // namespace sluice
