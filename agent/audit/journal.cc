#include "agent/audit/journal.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/audit/records.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& path, size_t half_bytes) {
  auto file = MappedFile::Open(path, FileBytes(half_bytes));
  if (!file.ok()) return file.status();
  return std::unique_ptr<Journal>(new Journal(std::move(*file), half_bytes));
}

std::string Journal::Recover(uint64_t after, size_t* count, uint64_t* first, uint64_t* last) const {
  // Each half's run of records, oldest first. Within a half sequences only go up, by one — or by
  // more where the agent restarted and went on after records Spool::Open put back (a half is
  // closed at its first overflow, so a record left out never leaves a gap inside a half).
  struct Record {
    uint64_t sequence;
    absl::string_view framed;
  };
  std::vector<std::vector<Record>> runs(2);
  for (int h = 0; h < 2; ++h) {
    absl::string_view data(Half(h), half_);
    audit::RecordReader reader(data);
    uint64_t previous = 0;
    while (!reader.done()) {
      size_t at = reader.offset();
      auto payload = reader.Next();
      v1::AuditEvent e;
      if (!payload.ok() || payload->empty() ||
          !e.ParseFromArray(payload->data(), static_cast<int>(payload->size())) ||
          e.sequence() <= previous) {
        break;
      }
      previous = e.sequence();
      runs[h].push_back(Record{e.sequence(), data.substr(at, reader.offset() - at)});
    }
  }
  std::sort(runs.begin(), runs.end(),
            [](const std::vector<Record>& a, const std::vector<Record>& b) {
              return !a.empty() && (b.empty() || a.front().sequence < b.front().sequence);
            });
  // What follows `after`: from the half that holds after + 1 — or a later sequence when the agent
  // restarted since (its first records went only to the journal), or when nothing is on disk at
  // all — on into the other half if it follows without a gap (records left out of the journal
  // when a half overflowed are lost, and a chain cannot be mended across them).
  std::string out;
  *count = 0;
  *first = 0;
  *last = after;
  for (const std::vector<Record>& run : runs) {
    bool first_of_half = true;
    for (const Record& r : run) {
      if (r.sequence <= after) continue;
      if (*count > 0 && first_of_half && r.sequence != *last + 1) return out;
      if (*count == 0) *first = r.sequence;
      out.append(r.framed.data(), r.framed.size());
      ++*count;
      *last = r.sequence;
      first_of_half = false;
    }
  }
  return out;
}

bool Journal::Append(absl::string_view framed) {
  // Room for the record and for an empty header after it, which ends the half's run.
  if (file_->faulted()) return false;  // counted by the event sink as a spool error
  if (closed_ || pos_ + framed.size() + audit::kRecordHeaderBytes > half_) {
    // Closed until the next switch: a smaller record that still fits would leave a gap inside
    // the half, which Recover could not tell from a restart.
    closed_ = true;
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
  closed_ = false;
  std::memset(Half(active_), 0, audit::kRecordHeaderBytes);
}

absl::Status Journal::Repair() {
  if (absl::Status st = file_->Repair(); !st.ok()) return st;
  Reset();
  return file_->faulted() ? absl::DataLossError(file_->FaultMessage()) : absl::OkStatus();
}

void Journal::Reset() {
  for (int h = 0; h < 2; ++h) std::memset(Half(h), 0, audit::kRecordHeaderBytes);
  active_ = 0;
  pos_ = 0;
  closed_ = false;
}

}  // namespace sluice::agent
