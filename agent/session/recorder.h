// The recording of one session (common/audit/recording.h), for any protocol: every message from
// the client as it arrived, every message sent to the client as it left the agent (after
// masking, with the agent's own refusals and notices), each with its time offset. Data messages
// (a protocol's result rows) are kept up to a number of rows and bytes per result; the rest are
// counted in one omission entry before the result's end, so the counts are always there.
//
// Recorder is the protocol-neutral part; FramedRecorder<Framing> adds the protocol's framing
// hook, resolved at compile time (the recorder sees every relayed message: no indirect call per
// message). A Framing is a type with two static functions:
//
//   // Whether messages of `type` are result data (capped per result).
//   static bool IsData(char type);
//   // Takes the first whole message off the front of `*wire` (bytes written to the client):
//   // its type and payload. False, `*wire` unchanged, when no whole message is there.
//   static bool Next(absl::string_view* wire, char* type, absl::string_view* payload);
//
// (agent/postgres/recorder.h is PostgreSQL's.) Nothing is allocated per message beyond the
// recording buffer's growth, which Clear keeps.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/audit/recording.h"

namespace sluice::agent::session {

struct RecordingLimits {
  bool enabled = true;
  uint64_t max_rows = 100;        // data messages kept per result
  uint64_t max_bytes = 64 << 10;  // data bytes kept per result
};

class Recorder {
 public:
  // A single message larger than this is not recorded (it is counted as an omission).
  static constexpr size_t kMaxMessageBytes = 256 << 10;

  Recorder(const RecordingLimits& limits, absl::Time started)
      : limits_(limits), started_(started) {}

  bool enabled() const { return limits_.enabled; }
  // The recording since the previous Clear (valid until the next call that records).
  absl::string_view data() const { return data_; }
  // Starts over. The buffer is kept (up to 64 KiB), so a session's next recording does not grow
  // it again from nothing.
  void Clear();
  size_t size() const { return data_.size(); }

 protected:
  // Caps on the data messages of one result (one direction).
  struct Result {
    uint64_t rows = 0;
    uint64_t bytes = 0;
    uint64_t omitted = 0;
    uint64_t omitted_bytes = 0;
  };
  // One message (`kind`: audit::kRecordedFromClient / kRecordedToClient); `data`: a result data
  // message, kept while the result is under the limits.
  void Record(char kind, char type, absl::string_view payload, bool data, uint64_t offset,
              Result* result);
  // Bytes written to the client that are not a whole message: counted, never guessed at.
  void Unframed(uint64_t offset, size_t bytes) {
    audit::AppendRecordedOmission(&data_, offset, 1, bytes);
  }
  uint64_t Offset(absl::Time at) const;

  Result client_;
  Result server_;

 private:
  RecordingLimits limits_;
  absl::Time started_;
  std::string data_;
};

template <typename Framing>
class FramedRecorder : public Recorder {
 public:
  using Recorder::Recorder;

  // One message from the client (type and payload, as decoded), read at `at`.
  void FromClient(char type, absl::string_view payload, absl::Time at) {
    if (!enabled()) return;
    Record(audit::kRecordedFromClient, type, payload, Framing::IsData(type), Offset(at), &client_);
  }

  // Bytes written to the client: whole framed messages back to back.
  void ToClient(absl::string_view wire) {
    if (!enabled()) return;
    const uint64_t offset = Offset(absl::Now());
    char type = 0;
    absl::string_view payload;
    while (Framing::Next(&wire, &type, &payload)) {
      Record(audit::kRecordedToClient, type, payload, Framing::IsData(type), offset, &server_);
    }
    // Writes carry whole messages; anything else is counted, never guessed at.
    if (!wire.empty()) Unframed(offset, wire.size());
  }
};

}  // namespace sluice::agent::session
