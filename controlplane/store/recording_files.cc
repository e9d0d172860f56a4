#include "controlplane/store/recording_files.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/base/internal/endian.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/audit/records.h"
#include "common/status_macros.h"
#include "common/zstd_codec.h"
#include "controlplane/store/disk_fault.h"

namespace sluice::controlplane {
namespace {

// Blocks are bounded by what one batch can carry.
constexpr uint64_t kMaxBlockBytes = 64 << 20;
constexpr uint64_t kMaxInflatedBytes = 256 << 20;
// A block with slices the agents compressed (common/audit/recording.h) is stored as it is, after
// this marker (neither a zstd frame's magic nor a zlib header), unless its uncompressed slices
// come to this many bytes.
constexpr absl::string_view kStoredAsIs = "SLRW";
constexpr size_t kCompressBlockFrom = 4096;

// A disk fault (no space, a quota, read-only, I/O error) is named as such (disk_fault.h): the
// batch is not stored, and the store refuses writes until the disk takes them again.
absl::Status Errno(absl::string_view what, const std::string& path) {
  return FileError(what, path, errno);
}

}  // namespace

// Level 1: most of a recording is protocol framing and repeated text; speed matters more. The
// frame carries a checksum of its content (as zlib's stream did).
RecordingFiles::RecordingFiles(std::string dir, uint64_t rotate_bytes)
    : zstd_(std::make_unique<ZstdCompressor>(1, true)),
      dir_(std::move(dir)),
      rotate_bytes_(rotate_bytes) {}

RecordingFiles::~RecordingFiles() = default;

absl::Status RecordingFiles::OpenCurrent() {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    return Errno("cannot create the recordings directory", dir_);
  // Go on with the newest file (by number), or start at 1.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    uint64_t number = 0;
    if (name.size() == 14 && absl::EndsWith(name, ".rec") &&
        absl::SimpleAtoi(name.substr(0, 10), &number) && number > current_number_) {
      current_number_ = number;
      current_size_ = entry.file_size(ec);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir_, ": ", ec.message()));
  if (current_number_ == 0 || current_size_ >= rotate_bytes_) {
    ++current_number_;
    current_size_ = 0;
  }
  current_ = absl::StrFormat("%010u.rec", current_number_);
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, std::vector<RecordingBlock>>> RecordingFiles::Append(
    const std::vector<const std::vector<RecordingSlice>*>& groups) {
  if (current_.empty() || current_size_ >= rotate_bytes_) {
    if (!current_.empty()) {
      ++current_number_;
      current_size_ = 0;
      current_ = absl::StrFormat("%010u.rec", current_number_);
    } else {
      RETURN_IF_ERROR(OpenCurrent());
    }
  }
  std::string out;
  std::vector<size_t> starts;
  std::string raw;
  for (const auto* slices : groups) {
    raw.clear();
    size_t plain = 0;
    bool agent_compressed = false;
    for (const RecordingSlice& s : *slices) {
      char head[12];
      absl::little_endian::Store64(head, s.sequence);
      absl::little_endian::Store32(head + 8, static_cast<uint32_t>(s.data.size()));
      raw.append(head, sizeof(head));
      raw.append(s.data);
      if (IsZstdFrame(s.data)) {
        agent_compressed = true;
      } else {
        plain += s.data.size();
      }
    }
    const size_t at = out.size();
    starts.push_back(at);
    out.resize(at + 8);
    if (agent_compressed && plain < kCompressBlockFrom) {
      out.append(kStoredAsIs.data(), kStoredAsIs.size());
      out.append(raw);
    } else {
      absl::Status compressed = zstd_->AppendFrame(raw, &out);
      if (!compressed.ok())
        return absl::InternalError(absl::StrCat("recording block: ", compressed.message()));
    }
    const size_t size = out.size() - at - 8;
    absl::little_endian::Store32(out.data() + at, static_cast<uint32_t>(size));
    absl::little_endian::Store32(out.data() + at + 4,
                                 audit::Crc32(absl::string_view(out).substr(at + 8, size)));
  }

  const std::string path = absl::StrCat(dir_, "/", current_);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot open recording file", path);
  off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) {
    absl::Status st = Errno("cannot find the end of recording file", path);
    ::close(fd);
    return st;
  }
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::write(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status st = Errno("cannot write recording file", path);
      // A torn block would be unreadable; cut it off again (if that fails too, the index never
      // points at it).
      int cut = ::ftruncate(fd, end);
      (void)cut;
      ::close(fd);
      return st;
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  current_size_ = static_cast<uint64_t>(end) + out.size();
  std::vector<RecordingBlock> blocks;
  for (size_t i = 0; i < starts.size(); ++i) {
    size_t next = i + 1 < starts.size() ? starts[i + 1] : out.size();
    blocks.push_back(RecordingBlock{static_cast<uint64_t>(end) + starts[i], next - starts[i]});
  }
  return std::make_pair(current_, std::move(blocks));
}

absl::StatusOr<std::vector<RecordingSlice>> RecordingFiles::Read(
    const std::string& file, const RecordingBlock& block) const {
  const std::string path = absl::StrCat(dir_, "/", file);
  auto damaged = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("recording file ", file, " at byte ", block.offset, ": ", what));
  };
  if (block.length < 8 || block.length > kMaxBlockBytes)
    return damaged("the index names an impossible block");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return damaged(absl::StrCat("cannot open the file: ", std::strerror(errno)));
  std::string bytes(block.length, '\0');
  ssize_t n = ::pread(fd, bytes.data(), bytes.size(), static_cast<off_t>(block.offset));
  ::close(fd);
  if (n != static_cast<ssize_t>(bytes.size()))
    return damaged("the file is shorter than the index says");
  uint32_t size = absl::little_endian::Load32(bytes.data());
  if (size != block.length - 8) return damaged("the block's length does not match the index");
  absl::string_view compressed = absl::string_view(bytes).substr(8);
  if (absl::little_endian::Load32(bytes.data() + 4) != audit::Crc32(compressed)) {
    return damaged("the block's checksum does not match (the file was changed)");
  }
  std::string raw;
  if (absl::StartsWith(compressed, kStoredAsIs)) {
    raw.assign(compressed.data() + kStoredAsIs.size(), compressed.size() - kStoredAsIs.size());
  } else if (IsZstdFrame(compressed)) {
    auto inflated = ZstdInflate(compressed, kMaxInflatedBytes);
    if (!inflated.ok()) return damaged(absl::StrCat("the block: ", inflated.status().message()));
    raw = std::move(*inflated);
  } else {
    // A zlib block (written before zstd): the inflated size is not stored, so grow until it
    // fits, within a cap.
    for (uLongf cap = static_cast<uLongf>(compressed.size()) * 4 + 1024;; cap *= 2) {
      if (cap > kMaxInflatedBytes) return damaged("the block inflates past the cap");
      raw.resize(cap);
      uLongf got = cap;
      int rc = uncompress(reinterpret_cast<Bytef*>(raw.data()), &got,
                          reinterpret_cast<const Bytef*>(compressed.data()),
                          static_cast<uLong>(compressed.size()));
      if (rc == Z_OK) {
        raw.resize(got);
        break;
      }
      if (rc != Z_BUF_ERROR) return damaged("the block does not decompress");
    }
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

absl::Status RecordingFiles::Erase(const std::string& file, const RecordingBlock& block) {
  const std::string path = absl::StrCat(dir_, "/", file);
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? absl::OkStatus() : Errno("cannot open recording file", path);
  const off_t offset = static_cast<off_t>(block.offset);
  const off_t length = static_cast<off_t>(block.length);
  absl::Status st;
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
    // A file system without holes: the bytes are overwritten instead.
    std::string zeros(block.length, '\0');
    if (::pwrite(fd, zeros.data(), zeros.size(), offset) != length)
      st = Errno("cannot erase in recording file", path);
  }
  ::close(fd);
  return st;
}

absl::Status RecordingFiles::RemoveIfDone(const std::string& file) {
  if (file == current_) return absl::OkStatus();
  const std::string path = absl::StrCat(dir_, "/", file);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return Errno("cannot delete recording file", path);
  return absl::OkStatus();
}

}  // namespace sluice::controlplane
