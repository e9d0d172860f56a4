// The format of a session recording: what a client and the server said to each other through
// the agent, after masking, with time offsets. The agent attaches the recording made since a
// session's previous event to each event (AuditEvent.recording), so a session's recording is
// the concatenation of its events' slices in sequence order. Each slice is entries back to back:
//
//   byte    kind     'C' a message from the client, 'S' a message sent to the client,
//                    'O' data messages left out of the recording since the last entry
//   varint  offset   microseconds since the session started
//   'C'/'S': byte type, varint payload length, payload (the protocol message without its
//            length field)
//   'O':     varint messages, varint bytes
//
// The format knows nothing of a particular protocol; the PostgreSQL recorder and the replay
// renderer give the messages meaning.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice::audit {

inline constexpr char kRecordedFromClient = 'C';
inline constexpr char kRecordedToClient = 'S';
inline constexpr char kRecordedOmitted = 'O';

void AppendRecordedMessage(std::string* out, char kind, uint64_t offset_us, char type,
                           absl::string_view payload);
void AppendRecordedOmission(std::string* out, uint64_t offset_us, uint64_t messages,
                            uint64_t bytes);

struct RecordedEntry {
  char kind = 0;
  uint64_t offset_us = 0;
  char type = 0;              // 'C'/'S'
  absl::string_view payload;  // 'C'/'S'
  uint64_t messages = 0;      // 'O'
  uint64_t bytes = 0;         // 'O'
};

// Reads the entries of a slice (or of slices concatenated).
class RecordingReader {
 public:
  explicit RecordingReader(absl::string_view data) : data_(data) {}
  // False at the end or on a malformed entry (then status() says what was wrong).
  bool Next(RecordedEntry* entry);
  const absl::Status& status() const { return status_; }

 private:
  bool Varint(uint64_t* v);
  absl::string_view data_;
  size_t pos_ = 0;
  absl::Status status_;
};

}  // namespace sluice::audit
