// The recording of one MySQL session: the session core's recorder (agent/session/recorder.h) fed
// packet by packet by the session, which knows what each packet is (a MySQL packet does not say
// it: a text row and an OK can begin with the same byte). Each recorded message's type is the
// command byte for what the client sent, and one of the letters below for what it was sent.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "agent/session/recorder.h"

namespace sluice::agent::mysql {

// Types of recorded packets sent to the client.
inline constexpr char kRecordedOk = 'O';
inline constexpr char kRecordedErr = 'E';
inline constexpr char kRecordedEof = 'F';          // EOF, or the OK ending a result set
inline constexpr char kRecordedColumnCount = 'N';  // a result set's header
inline constexpr char kRecordedColumn = 'C';       // ColumnDefinition41
inline constexpr char kRecordedTextRow = 'D';
inline constexpr char kRecordedBinaryRow = 'B';
inline constexpr char kRecordedPrepareOk = 'P';  // COM_STMT_PREPARE's answer
inline constexpr char kRecordedOther = 'S';      // COM_STATISTICS' text, and the like

class SessionRecorder : public session::Recorder {
 public:
  using Recorder::Recorder;

  // A command from the client (its first byte is the recorded type), read at `at`.
  void FromClient(absl::string_view payload, absl::Time at) {
    if (!enabled() || payload.empty()) return;
    Record(audit::kRecordedFromClient, payload[0], payload.substr(1), false, Offset(at), &client_);
  }
  // A packet sent to the client: `type` one of the kRecorded letters; rows are result data.
  void ToClient(char type, absl::string_view payload) {
    if (!enabled()) return;
    const bool data = type == kRecordedTextRow || type == kRecordedBinaryRow;
    Record(audit::kRecordedToClient, type, payload, data, Offset(absl::Now()), &server_);
  }
};

}  // namespace sluice::agent::mysql
