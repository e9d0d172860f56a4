#include "agent/postgres/recorder.h"

#include "absl/time/clock.h"
#include "common/audit/recording.h"

namespace sluice::agent::postgres {
namespace {

bool IsData(char type) { return type == 'D' || type == 'd'; }

uint32_t ReadLength(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) | static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}

}  // namespace

uint64_t SessionRecorder::Offset(absl::Time at) const {
  int64_t us = absl::ToInt64Microseconds(at - started_);
  return us < 0 ? 0 : static_cast<uint64_t>(us);
}

void SessionRecorder::Record(char kind, char type, absl::string_view payload, uint64_t offset, Result* result) {
  if (IsData(type)) {
    if (result->rows < limits_.max_rows && result->bytes + payload.size() <= limits_.max_bytes) {
      ++result->rows;
      result->bytes += payload.size();
      audit::AppendRecordedMessage(&data_, kind, offset, type, payload);
    } else {
      ++result->omitted;
      result->omitted_bytes += payload.size();
    }
    return;
  }
  // Anything else ends the run of data messages: what was left out is counted before it.
  if (result->omitted > 0) audit::AppendRecordedOmission(&data_, offset, result->omitted, result->omitted_bytes);
  *result = Result{};
  if (payload.size() > kMaxMessageBytes) {
    audit::AppendRecordedOmission(&data_, offset, 1, payload.size());
    return;
  }
  audit::AppendRecordedMessage(&data_, kind, offset, type, payload);
}

void SessionRecorder::FromClient(char type, absl::string_view payload, absl::Time at) {
  if (!limits_.enabled) return;
  Record(audit::kRecordedFromClient, type, payload, Offset(at), &client_);
}

void SessionRecorder::ToClient(absl::string_view wire) {
  if (!limits_.enabled) return;
  const uint64_t offset = Offset(absl::Now());
  while (wire.size() >= 5) {
    uint32_t length = ReadLength(wire.data() + 1);
    if (length < 4 || length - 4 > wire.size() - 5) break;
    Record(audit::kRecordedToClient, wire[0], wire.substr(5, length - 4), offset, &server_);
    wire.remove_prefix(1 + length);
  }
  // Writes carry whole messages; anything else is counted, never guessed at.
  if (!wire.empty()) audit::AppendRecordedOmission(&data_, offset, 1, wire.size());
}

void SessionRecorder::Clear() {
  constexpr size_t kKeptCapacity = 64 << 10;
  if (data_.capacity() > kKeptCapacity) {
    std::string().swap(data_);
  } else {
    data_.clear();
  }
}

}  // namespace sluice::agent::postgres
