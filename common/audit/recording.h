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
//
// A slice of at least kCompressSliceFrom bytes travels and is stored compressed when that makes
// it smaller: one zstd frame of the entries (CompressSlice). An entry never begins with the
// frame's first byte, so a reader tells the two apart (SliceEntries). The hash chain covers the
// slice as it travels, so the control plane verifies and stores it without inflating it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

inline constexpr size_t kCompressSliceFrom = 512;

// `entries` as it travels: the zstd frame that holds them (written to `*scratch`), or `entries`
// itself when it is short, does not compress, or is too large for an event (the caller replaces
// it by an omission then). Not thread-safe for one `scratch`; the compression context is per
// thread.
absl::string_view CompressSlice(absl::string_view entries, std::string* scratch);

// The entries of a slice as it travels or is stored: `slice` itself, or the content of its zstd
// frame (written to `*buffer`). DataLoss says why a frame cannot be read; a frame that inflates
// past kMaxRecordBytes (more than an event can carry) is refused.
absl::StatusOr<absl::string_view> SliceEntries(absl::string_view slice, std::string* buffer);

// Reads the entries of a slice (or of slices concatenated), already inflated (SliceEntries).
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
