#include "agent/audit/journal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/audit/records.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& path, size_t half_bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  // A sparse file: only the pages written take room.
  if (::ftruncate(fd, static_cast<off_t>(2 * half_bytes)) != 0) {
    absl::Status st = absl::InternalError(absl::StrCat("cannot size ", path, ": ", std::strerror(errno)));
    ::close(fd);
    return st;
  }
  void* base = ::mmap(nullptr, 2 * half_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    absl::Status st = absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(errno)));
    ::close(fd);
    return st;
  }
  return std::unique_ptr<Journal>(new Journal(fd, static_cast<char*>(base), half_bytes));
}

Journal::~Journal() {
  ::munmap(base_, 2 * half_);
  ::close(fd_);
}

std::string Journal::Recover(uint64_t after, size_t* count, uint64_t* last) const {
  // Each half's run of records, by sequence; then the run that follows `after`.
  std::map<uint64_t, absl::string_view> framed;
  for (int h = 0; h < 2; ++h) {
    absl::string_view data(Half(h), half_);
    audit::RecordReader reader(data);
    uint64_t previous = 0;
    while (!reader.done()) {
      size_t at = reader.offset();
      auto payload = reader.Next();
      v1::AuditEvent e;
      if (!payload.ok() || payload->empty() ||
          !e.ParseFromArray(payload->data(), static_cast<int>(payload->size())) || e.sequence() <= previous ||
          (previous != 0 && e.sequence() != previous + 1)) {
        break;
      }
      previous = e.sequence();
      framed.emplace(e.sequence(), data.substr(at, reader.offset() - at));
    }
  }
  std::string out;
  *count = 0;
  *last = after;
  for (auto it = framed.find(after + 1); it != framed.end() && it->first == *last + 1; ++it) {
    out.append(it->second.data(), it->second.size());
    ++*count;
    *last = it->first;
  }
  return out;
}

bool Journal::Append(absl::string_view framed) {
  // Room for the record and for an empty header after it, which ends the half's run.
  if (pos_ + framed.size() + audit::kRecordHeaderBytes > half_) {
    ++overflows_;
    return false;
  }
  char* at = Half(active_) + pos_;
  // The record after its header is in place before the header says it is there.
  std::memset(at + framed.size(), 0, audit::kRecordHeaderBytes);
  std::memcpy(at + audit::kRecordHeaderBytes, framed.data() + audit::kRecordHeaderBytes,
              framed.size() - audit::kRecordHeaderBytes);
  std::memcpy(at, framed.data(), audit::kRecordHeaderBytes);
  pos_ += framed.size();
  return true;
}

void Journal::Switch() {
  active_ = 1 - active_;
  pos_ = 0;
  std::memset(Half(active_), 0, audit::kRecordHeaderBytes);
}

void Journal::Reset() {
  for (int h = 0; h < 2; ++h) std::memset(Half(h), 0, audit::kRecordHeaderBytes);
  active_ = 0;
  pos_ = 0;
}

}  // namespace sluice::agent
