#include "controlplane/store/recording_files.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "absl/base/internal/endian.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace sluice::controlplane {
namespace {

// Blocks are bounded by what one batch can carry.
constexpr uint64_t kMaxBlockBytes = 64 << 20;
constexpr uint64_t kMaxInflatedBytes = 256 << 20;

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

std::string RecordingFiles::FileName(absl::string_view session_id) {
  bool safe = !session_id.empty() && session_id.size() <= 64;
  for (char c : session_id) safe = safe && (absl::ascii_isalnum(c) || c == '-' || c == '_');
  if (safe) return absl::StrCat(session_id, ".rec");
  return absl::StrCat("h", Sha256Hex(session_id).substr(0, 32), ".rec");
}

absl::StatusOr<RecordingBlock> RecordingFiles::Append(const std::string& file,
                                                      const std::vector<RecordingSlice>& slices) {
  std::string raw;
  for (const RecordingSlice& s : slices) {
    char head[12];
    absl::little_endian::Store64(head, s.sequence);
    absl::little_endian::Store32(head + 8, static_cast<uint32_t>(s.data.size()));
    raw.append(head, sizeof(head));
    raw.append(s.data);
  }
  uLongf bound = compressBound(static_cast<uLong>(raw.size()));
  std::string block(8 + bound, '\0');
  uLongf size = bound;
  // Level 1: most of a recording is protocol framing and repeated text; speed matters more.
  if (compress2(reinterpret_cast<Bytef*>(block.data() + 8), &size, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), 1) != Z_OK) {
    return absl::InternalError("compressing a recording block failed");
  }
  block.resize(8 + size);
  absl::little_endian::Store32(block.data(), static_cast<uint32_t>(size));
  absl::little_endian::Store32(block.data() + 4, audit::Crc32(absl::string_view(block).substr(8)));

  RETURN_IF_ERROR(EnsureDir(dir_, 0700));
  const std::string path = absl::StrCat(dir_, "/", file);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot open recording file", path);
  off_t end = ::lseek(fd, 0, SEEK_END);
  size_t done = 0;
  while (done < block.size()) {
    ssize_t n = ::write(fd, block.data() + done, block.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status st = Errno("cannot write recording file", path);
      // A torn block would be unreadable; cut it off again (if that fails too, the index never
      // points at it).
      if (end >= 0) {
        int cut = ::ftruncate(fd, end);
        (void)cut;
      }
      ::close(fd);
      return st;
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  if (end < 0) return Errno("cannot find the end of recording file", path);
  return RecordingBlock{static_cast<uint64_t>(end), block.size()};
}

absl::StatusOr<std::vector<RecordingSlice>> RecordingFiles::Read(const std::string& file,
                                                                 const RecordingBlock& block) const {
  const std::string path = absl::StrCat(dir_, "/", file);
  auto damaged = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("recording file ", file, " at byte ", block.offset, ": ", what));
  };
  if (block.length < 8 || block.length > kMaxBlockBytes) return damaged("the index names an impossible block");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return damaged(absl::StrCat("cannot open the file: ", std::strerror(errno)));
  std::string bytes(block.length, '\0');
  ssize_t n = ::pread(fd, bytes.data(), bytes.size(), static_cast<off_t>(block.offset));
  ::close(fd);
  if (n != static_cast<ssize_t>(bytes.size())) return damaged("the file is shorter than the index says");
  uint32_t size = absl::little_endian::Load32(bytes.data());
  if (size != block.length - 8) return damaged("the block's length does not match the index");
  absl::string_view compressed = absl::string_view(bytes).substr(8);
  if (absl::little_endian::Load32(bytes.data() + 4) != audit::Crc32(compressed)) {
    return damaged("the block's checksum does not match (the file was changed)");
  }
  // The inflated size is not stored: grow until it fits, within a cap.
  std::string raw;
  for (uLongf cap = static_cast<uLongf>(compressed.size()) * 4 + 1024;; cap *= 2) {
    if (cap > kMaxInflatedBytes) return damaged("the block inflates past the cap");
    raw.resize(cap);
    uLongf got = cap;
    int rc = uncompress(reinterpret_cast<Bytef*>(raw.data()), &got, reinterpret_cast<const Bytef*>(compressed.data()),
                        static_cast<uLong>(compressed.size()));
    if (rc == Z_OK) {
      raw.resize(got);
      break;
    }
    if (rc != Z_BUF_ERROR) return damaged("the block does not decompress");
  }
  std::vector<RecordingSlice> out;
  absl::string_view rest = raw;
  while (!rest.empty()) {
    if (rest.size() < 12) return damaged("a slice header is cut short");
    RecordingSlice s;
    s.sequence = absl::little_endian::Load64(rest.data());
    uint32_t len = absl::little_endian::Load32(rest.data() + 8);
    if (len > rest.size() - 12) return damaged("a slice is cut short");
    s.data.assign(rest.data() + 12, len);
    rest.remove_prefix(12 + len);
    out.push_back(std::move(s));
  }
  return out;
}

absl::Status RecordingFiles::Remove(const std::string& file) {
  const std::string path = absl::StrCat(dir_, "/", file);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno("cannot delete recording file", path);
  return absl::OkStatus();
}

}  // namespace sluice::controlplane
