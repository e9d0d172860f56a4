#include "agent/audit/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/audit/event_sink.h"
#include "common/audit/records.h"
#include "common/disk_space.h"
#include "common/files.h"
#include "common/log.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// The sequence of a record's event; 0 when it does not parse.
uint64_t SequenceOf(absl::string_view payload) {
  v1::AuditEvent e;
  if (!e.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return 0;
  return e.sequence();
}

}  // namespace

uint64_t Spool::MinimumVolumeBytes(const Options& options) {
  return Journal::FileBytes(options.journal_half_bytes) +
         InflightTable::FileBytes(options.inflight_slots) + options.segment_bytes;
}

Spool::Spool(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(Options options) {
  if (absl::Status st = EnsureDir(options.dir, 0700); !st.ok()) return st;
  // A volume this small can never hold the spool: said at once rather than found out when the
  // first segment cannot be written.
  auto volume = VolumeSpaceOf(options.dir);
  if (!volume.ok()) return volume.status();
  if (volume->total_bytes != 0 &&
      volume->total_bytes < MinimumVolumeBytes(options)) {  // 0: not told
    return absl::FailedPreconditionError(absl::StrCat(
        "the volume holding ", options.dir, " is ", FormatBytes(volume->total_bytes),
        "; the audit spool needs at least ", FormatBytes(MinimumVolumeBytes(options)),
        " (its journal of ", FormatBytes(Journal::FileBytes(options.journal_half_bytes)),
        " and in-flight table of ", FormatBytes(InflightTable::FileBytes(options.inflight_slots)),
        ", both allocated whole, and one segment of ", FormatBytes(options.segment_bytes),
        "): give the agent's --data-dir a larger volume"));
  }
  const std::string journal_path = options.dir + "/journal";
  const size_t half = options.journal_half_bytes;
  std::unique_ptr<Spool> spool(new Spool(std::move(options)));
  absl::Status st = spool->Recover();
  if (!st.ok()) return st;
  auto journal = Journal::Open(journal_path, half);
  if (!journal.ok()) return journal.status();
  // What the last run emitted after its last segment write: into a segment of its own now.
  EventChunk left;
  left.records = (*journal)->Recover(spool->last_sequence(), &left.count, &left.first_sequence,
                                     &left.last_sequence);
  if ((*journal)->faulted()) {
    // Read back as far as its pages could be read; the event sink refuses new sessions until
    // the file is mapped anew.
    LogError("audit spool: ", (*journal)->FaultMessage(),
             " while reading it back: events the previous run emitted ", "after sequence ",
             left.last_sequence, " may be lost (the control plane holds what it acknowledged)");
  }
  if (left.count > 0) {
    // The journal's copies were made before the spool thread filled in their chain (their
    // prev_hash is a placeholder): chained here from the segments' head.
    std::string head = spool->chain_head();
    if (absl::Status chained = audit::ChainRecords(&left.records, &head); !chained.ok()) {
      return absl::DataLossError(absl::StrCat("audit journal: ", chained.message()));
    }
    left.last_hash = head;
    st = spool->Append(left);
    if (st.ok()) {
      // Each record is sent again like a segment's.
      audit::RecordReader reader(left.records);
      while (!reader.done()) {
        size_t at = reader.offset();
        auto payload = reader.Next();
        if (!payload.ok()) break;  // checked by Journal::Recover and ChainRecords
        spool->AddRecovered(SequenceOf(*payload), reader.offset() - at);
      }
      st = spool->Sync();
      LogInfo("audit spool: ", left.count, " event(s) recovered from the journal, up to sequence ",
              left.last_sequence);
    } else {
      // A full or failing disk at start: the agent runs anyway (refusing new sessions), and these
      // records are sent from memory and written once the spool takes writes (EventSink).
      LogError("audit spool: cannot write the ", left.count,
               " event(s) recovered from the journal (", st.message(),
               "); they are kept in memory and in the journal until the spool can take them");
      spool->KeepUnwritten(left);
    }
    spool->open_status_ = st;
  }
  spool->journal_records_ = left.records;
  (*journal)->Reset();
  if (!spool->open_status_.ok()) {
    // Still only in the journal: copied back, so that another crash does not lose them either
    // (the event sink does not switch halves while the spool fails).
    audit::RecordReader reader(left.records);
    while (!reader.done()) {
      size_t at = reader.offset();
      if (!reader.Next().ok()) break;
      (*journal)->Append(absl::string_view(left.records).substr(at, reader.offset() - at));
    }
  }
  spool->journal_ = std::move(*journal);
  auto inflight =
      InflightTable::Open(spool->options_.dir + "/inflight", spool->options_.inflight_slots);
  if (!inflight.ok()) return inflight.status();
  spool->inflight_ = std::move(*inflight);
  spool->syncer_ = std::thread([s = spool.get()] { s->SyncLoop(); });
  return spool;
}

Spool::~Spool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (syncer_.joinable()) syncer_.join();
  Sync().IgnoreError();
  absl::MutexLock lock(&mu_);
  CloseLocked();
}

// Syncs what was written, at most once per interval, outside the lock that Append and Ack take.
// The active segment's descriptor stays open while it is synced: Append retires a full segment's
// descriptor to this thread instead of closing it.
void Spool::SyncLoop() {
  mu_.Lock();
  while (true) {
    mu_.Await(absl::Condition(this, &Spool::SyncWanted));
    if (stopping_) break;  // the destructor syncs what is left
    const absl::Duration wait = options_.sync_interval - (absl::Now() - last_sync_);
    if (wait > absl::ZeroDuration() && mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait))
      break;
    std::vector<int> retired = std::move(retired_fds_);
    retired_fds_.clear();
    const int active = dirty_ ? fd_ : -1;
    dirty_ = false;
    sync_busy_ = true;
    const bool had_error = !sync_error_.empty();
    const absl::Time started = absl::Now();
    mu_.Unlock();
    const absl::Status synced = SyncFiles(retired, active);
    const absl::Duration took = absl::Now() - started;
    if (!synced.ok()) {
      if (!had_error)
        LogError(synced.message(), "; new sessions are refused until a sync succeeds");
    } else if (had_error) {
      LogInfo("audit spool: fdatasync succeeds again");
    } else if (took > absl::Seconds(1)) {
      LogWarning("audit spool: fdatasync took ", absl::FormatDuration(took),
                 " (a slow disk); events went on to the control plane meanwhile");
    }
    mu_.Lock();
    sync_busy_ = false;
    last_sync_ = started;
    sync_error_ = std::string(synced.message());
    if (!synced.ok() && fd_ >= 0) dirty_ = true;  // tried again after the interval
  }
  mu_.Unlock();
}

absl::Status Spool::SyncFiles(const std::vector<int>& retired, int active) const {
  absl::Status st;
  for (int fd : retired) {
    if (SyncFile(fd) != 0 && st.ok()) st = Errno("fdatasync of the audit spool");
    ::close(fd);
  }
  if (active >= 0 && SyncFile(active) != 0 && st.ok()) st = Errno("fdatasync of the audit spool");
  return st;
}

int Spool::SyncFile(int fd) const {
  return options_.sync_file ? options_.sync_file(fd) : ::fdatasync(fd);
}

ssize_t Spool::WriteFile(int fd, const void* data, size_t size) const {
  return options_.write_file ? options_.write_file(fd, data, size) : ::write(fd, data, size);
}

absl::Status Spool::Probe() {
  const std::string path = options_.dir + "/probe";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("create " + path);
  absl::Status st;
  // Room for a chunk at least, so that a volume that frees a few bytes does not flap between
  // accepting and refusing sessions.
  if (int err = ::posix_fallocate(fd, 0, static_cast<off_t>(options_.chunk_bytes)); err != 0) {
    st = absl::ResourceExhaustedError(absl::StrCat("cannot allocate ",
                                                   FormatBytes(options_.chunk_bytes),
                                                   " in the audit spool: ", std::strerror(err)));
  }
  static const std::string kBlock(4096, '\0');
  if (st.ok()) {
    ssize_t n = WriteFile(fd, kBlock.data(), kBlock.size());
    if (n < 0) {
      st = Errno("write to the audit spool (" + path + ")");
    } else if (static_cast<size_t>(n) != kBlock.size()) {
      st = absl::ResourceExhaustedError(
          absl::StrCat("write to the audit spool (", path, "): short write"));
    }
  }
  if (st.ok() && SyncFile(fd) != 0) st = Errno("fdatasync of the audit spool (" + path + ")");
  ::close(fd);
  ::unlink(path.c_str());
  return st;
}

absl::Status Spool::Sync() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](bool* busy) { return !*busy; }, &sync_busy_));  // it may hold fd_ or a retired one
  absl::Status st = SyncFiles(retired_fds_, dirty_ ? fd_ : -1);
  retired_fds_.clear();
  if (st.ok()) dirty_ = false;
  last_sync_ = absl::Now();
  return st;
}

absl::Status Spool::sync_status() const {
  absl::MutexLock lock(&mu_);
  return sync_error_.empty() ? absl::OkStatus() : absl::InternalError(sync_error_);
}

absl::Status Spool::Recover() {
  std::vector<std::pair<uint64_t, std::string>> files;
  DIR* dir = ::opendir(options_.dir.c_str());
  if (dir == nullptr) return Errno("opendir " + options_.dir);
  while (dirent* e = ::readdir(dir)) {
    absl::string_view name(e->d_name);
    uint64_t first = 0;
    if (name.size() == 24 && absl::EndsWith(name, ".seg") &&
        absl::SimpleAtoi(name.substr(0, 20), &first)) {
      files.emplace_back(first, options_.dir + "/" + std::string(name));
    }
  }
  ::closedir(dir);
  std::sort(files.begin(), files.end());
  absl::MutexLock lock(&mu_);
  // The head when every segment was acknowledged and deleted; the segments' last record wins.
  if (auto head = ReadFile(options_.dir + "/chain.head", 4096); head.ok()) {
    std::vector<std::string> parts = absl::StrSplit(*head, ' ');
    uint64_t seq = 0;
    absl::string_view hex = parts.size() == 2 ? absl::StripAsciiWhitespace(parts[1]) : "";
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &seq) && hex.size() == 64) {
      last_sequence_ = seq;
      chain_head_ = absl::HexStringToBytes(hex);
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& path = files[i].second;
    auto data = ReadFile(path, options_.segment_bytes + (64 << 20));
    if (!data.ok()) return data.status();
    audit::RecordReader reader(*data);
    Segment seg{path, 0, 0, 0};
    size_t good = 0;
    absl::string_view last;  // the last good record's payload: the chain head after this segment
    while (!reader.done()) {
      size_t at = reader.offset();
      auto payload = reader.Next();
      uint64_t seq = payload.ok() ? SequenceOf(*payload) : 0;
      if (!payload.ok() || seq == 0 || seq <= last_sequence_) {
        // A torn or damaged tail (the agent died while writing): what follows is not trusted.
        LogWarning("audit spool ", path, ": cut at byte ", good, " of ", data->size(), " (",
                   payload.ok() ? "a record out of sequence" : payload.status().message(), ")");
        break;
      }
      if (seg.first == 0) seg.first = seq;
      seg.last = seq;
      ++seg.count;
      last_sequence_ = seq;
      last = *payload;
      good = reader.offset();
      AddRecovered(seq, good - at);
    }
    if (!last.empty()) chain_head_ = audit::ChainHash(last);
    if (good < data->size() && ::truncate(path.c_str(), static_cast<off_t>(good)) != 0) {
      return Errno("truncate " + path);
    }
    if (good == 0) {
      ::unlink(path.c_str());
      continue;
    }
    seg.bytes = good;
    bytes_ += good;
    segments_.push_back(seg);
  }
  PublishLocked();
  if (!segments_.empty()) {
    LogInfo("audit spool: ", segments_.size(), " segment(s), ", bytes_,
            " bytes not yet acknowledged, up to sequence ", last_sequence_);
  }
  return absl::OkStatus();
}

void Spool::KeepUnwritten(const EventChunk& left) {
  // In chunks of at most chunk_bytes, like what is read back from segments (a batch the control
  // plane takes), with their records.
  audit::RecordReader reader(left.records);
  while (!reader.done()) {
    const size_t at = reader.offset();
    auto payload = reader.Next();
    if (!payload.ok()) break;  // checked by Journal::Recover and ChainRecords
    const uint64_t seq = SequenceOf(*payload);
    if (recovered_.empty() || recovered_.back().on_disk ||
        recovered_.back().records.size() >= options_.chunk_bytes) {
      EventChunk& c = recovered_.emplace_back();
      c.first_sequence = seq;
      c.spooled = c.sealed = true;
    }
    EventChunk& c = recovered_.back();
    c.records.append(left.records, at, reader.offset() - at);
    c.last_sequence = seq;
    ++c.count;
    c.last_hash = audit::ChainHash(*payload);
  }
  absl::MutexLock lock(&mu_);
  // The chain and the sequences go on after them.
  last_sequence_ = std::max(last_sequence_, left.last_sequence);
  chain_head_ = left.last_hash;
}

void Spool::AddRecovered(uint64_t sequence, size_t record_bytes) {
  if (recovered_.empty() || recovered_bytes_ >= options_.chunk_bytes) {
    EventChunk& c = recovered_.emplace_back();
    c.first_sequence = sequence;
    c.spooled = c.sealed = c.evicted = c.on_disk = true;
    recovered_bytes_ = 0;
  }
  EventChunk& c = recovered_.back();
  c.last_sequence = sequence;
  ++c.count;
  recovered_bytes_ += record_bytes;
}

std::vector<EventChunk> Spool::TakeRecovered() { return std::move(recovered_); }

absl::StatusOr<std::string> Spool::ReadRecords(uint64_t first, uint64_t last) const {
  std::vector<std::string> paths;
  {
    absl::MutexLock lock(&mu_);
    for (const Segment& seg : segments_) {
      if (seg.last >= first && seg.first <= last) paths.push_back(seg.path);
    }
  }
  std::string out;
  for (const std::string& path : paths) {
    auto data = ReadFile(path, options_.segment_bytes + (64 << 20));
    if (!data.ok()) return data.status();
    audit::RecordReader reader(*data);
    while (!reader.done()) {
      size_t at = reader.offset();
      auto payload = reader.Next();
      if (!payload.ok()) break;  // the tail being written
      uint64_t seq = SequenceOf(*payload);
      if (seq > last) break;
      if (seq >= first) out.append(*data, at, reader.offset() - at);
    }
  }
  return out;
}

std::string Spool::chain_head() const {
  absl::MutexLock lock(&mu_);
  return chain_head_;
}

uint64_t Spool::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return last_sequence_;
}

absl::Status Spool::OpenSegmentLocked(uint64_t first) {
  std::string path = absl::StrFormat("%s/%020u.seg", options_.dir, first);
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) return Errno("open " + path);
  segments_.push_back(Segment{path, first, first, 0});
  PublishLocked();  // the segment before it, if acknowledged, counts again until it is deleted
  return absl::OkStatus();
}

void Spool::CloseLocked() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

absl::Status Spool::Append(const EventChunk& chunk) {
  {
    absl::MutexLock lock(&mu_);
    if (chunk.records.empty()) return absl::OkStatus();
    if (fd_ >= 0 && segments_.back().bytes >= options_.segment_bytes) {
      retired_fds_.push_back(fd_);  // the sync thread syncs and closes it
      fd_ = -1;
    }
    if (fd_ < 0) {
      absl::Status st = OpenSegmentLocked(chunk.first_sequence);
      if (!st.ok()) return st;
    }
    const char* p = chunk.records.data();
    size_t left = chunk.records.size();
    while (left > 0) {
      ssize_t n = WriteFile(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        absl::Status st = Errno("write to the audit spool (" + segments_.back().path + ")");
        CutTornWriteLocked();
        return st;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    Segment& seg = segments_.back();
    seg.bytes += chunk.records.size();
    seg.count += chunk.count;
    seg.last = chunk.last_sequence;
    bytes_ += chunk.records.size();
    last_sequence_ = std::max(last_sequence_, chunk.last_sequence);
    if (!chunk.last_hash.empty()) chain_head_ = chunk.last_hash;
    dirty_ = true;
    PublishLocked();
  }
  return absl::OkStatus();
}

// Part of the chunk may be in the segment (a write that filled the disk halfway): cut off, or
// the records appended after it, once the disk takes them, would follow a torn one and never be
// read back.
void Spool::CutTornWriteLocked() {
  const Segment& seg = segments_.back();
  if (::ftruncate(fd_, static_cast<off_t>(seg.bytes)) == 0) return;
  LogWarning("audit spool: cannot cut ", seg.path, " back to ", seg.bytes,
             " bytes after a failed write (", std::strerror(errno),
             "); the next chunk starts a new segment");
  retired_fds_.push_back(
      fd_);  // the sync thread syncs and closes it; the torn tail is cut at the next start
  fd_ = -1;
}

void Spool::Ack(uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  // The segment being appended to stays until it is full, even when all of it is acknowledged:
  // a busy agent would otherwise create, sync and delete a file for every acknowledgement. (After
  // a restart its acknowledged records are sent again; the control plane drops them.)
  const bool keep_active = fd_ >= 0;
  if (!keep_active && !segments_.empty() && segments_.back().last <= sequence &&
      !chain_head_.empty()) {
    // Everything goes: keep the chain's head (and the sequence) for the next start.
    std::string head = absl::StrCat(last_sequence_, " ", absl::BytesToHexString(chain_head_), "\n");
    absl::Status kept = WriteFileAtomic(options_.dir + "/chain.head", head, 0600);
    if (!kept.ok()) {
      LogError("audit spool: cannot keep the chain head (", kept.message(),
               "); the chain restarts after the next restart");
    }
  }
  while (!segments_.empty() && segments_.front().last <= sequence) {
    if (keep_active && segments_.size() == 1) {
      segments_.front().acked_bytes = segments_.front().bytes;
      break;
    }
    ::unlink(segments_.front().path.c_str());
    bytes_ -= segments_.front().bytes;
    segments_.pop_front();
  }
  PublishLocked();
}

void Spool::PublishLocked() {
  unacked_bytes_.store(bytes_ - (segments_.empty() ? 0 : segments_.back().acked_bytes),
                       std::memory_order_relaxed);
}

size_t Spool::bytes() const { return unacked_bytes_.load(std::memory_order_relaxed); }

size_t Spool::segments() const {
  absl::MutexLock lock(&mu_);
  return segments_.size();
}

}  // namespace sluice::agent
