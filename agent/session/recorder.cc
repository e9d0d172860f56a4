#include "agent/session/recorder.h"

namespace sluice::agent::session {

uint64_t Recorder::Offset(absl::Time at) const {
  int64_t us = absl::ToInt64Microseconds(at - started_);
  return us < 0 ? 0 : static_cast<uint64_t>(us);
}

void Recorder::Record(char kind, char type, absl::string_view payload, bool data, uint64_t offset,
                      Result* result) {
  if (data) {
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
  if (result->omitted > 0)
    audit::AppendRecordedOmission(&data_, offset, result->omitted, result->omitted_bytes);
  *result = Result{};
  if (payload.size() > kMaxMessageBytes) {
    audit::AppendRecordedOmission(&data_, offset, 1, payload.size());
    return;
  }
  audit::AppendRecordedMessage(&data_, kind, offset, type, payload);
}

void Recorder::Clear() {
  constexpr size_t kKeptCapacity = 64 << 10;
  if (data_.capacity() > kKeptCapacity) {
    std::string().swap(data_);
  } else {
    data_.clear();
  }
}

}  // namespace sluice::agent::session
