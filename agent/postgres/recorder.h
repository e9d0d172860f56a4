// The recording of one PostgreSQL session (common/audit/recording.h): every message from the
// client as it arrived, every message sent to the client as it left the agent (after masking,
// with the agent's own refusals and notices), each with its time offset. Data messages (DataRow,
// CopyData) are kept up to a number of rows and bytes per result; the rest are counted in one
// omission entry before the result's end, so the counts are always there.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice::agent::postgres {

struct RecordingLimits {
  bool enabled = true;
  uint64_t max_rows = 100;         // data messages kept per result
  uint64_t max_bytes = 64 << 10;   // data bytes kept per result
};

class SessionRecorder {
 public:
  // A single message larger than this is not recorded (it is counted as an omission).
  static constexpr size_t kMaxMessageBytes = 256 << 10;

  SessionRecorder(const RecordingLimits& limits, absl::Time started) : limits_(limits), started_(started) {}

  bool enabled() const { return limits_.enabled; }
  // One message from the client (type and payload, as decoded), read at `at`.
  void FromClient(char type, absl::string_view payload, absl::Time at);
  // Bytes written to the client: whole framed messages back to back.
  void ToClient(absl::string_view wire);
  // The recording since the previous Clear (valid until the next call that records).
  absl::string_view data() const { return data_; }
  // Starts over. The buffer is kept (up to 64 KiB), so a session's next recording does not grow
  // it again from nothing.
  void Clear();
  size_t size() const { return data_.size(); }

 private:
  // Caps on the data messages of one result (one direction).
  struct Result {
    uint64_t rows = 0;
    uint64_t bytes = 0;
    uint64_t omitted = 0;
    uint64_t omitted_bytes = 0;
  };
  void Record(char kind, char type, absl::string_view payload, uint64_t offset, Result* result);
  uint64_t Offset(absl::Time at) const;

  RecordingLimits limits_;
  absl::Time started_;
  std::string data_;
  Result server_;
  Result client_;
};

}  // namespace sluice::agent::postgres
