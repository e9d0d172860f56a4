// Session recordings at the control plane: files under <data-dir>/recordings, one per session,
// indexed in SQLite (recording_blocks). Each ingested batch adds one block per session to the
// session's file:
//
//   uint32 little-endian  length of the compressed bytes
//   uint32 little-endian  CRC-32 of the compressed bytes
//   zlib-compressed       entries back to back: uint64 LE sequence, uint32 LE size, the slice
//
// A slice is what one audit event carried (AuditEvent.recording). The hash chain covers every
// slice (common/audit/records.h JoinRecording), so `audit verify` finds a changed file.
// Appends are not synced on their own: they are as durable as the SQLite store's commits (both
// survive a crash of the process; the database's WAL is synced at checkpoints).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::controlplane {

struct RecordingSlice {
  uint64_t sequence = 0;
  std::string data;
};

struct RecordingBlock {
  uint64_t offset = 0;
  uint64_t length = 0;  // header included
};

class RecordingFiles {
 public:
  explicit RecordingFiles(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  // The file (a name under dir()) of a session: its id when that is a safe file name, else a
  // hash of it.
  static std::string FileName(absl::string_view session_id);
  // Appends one block holding `slices` to `file`.
  absl::StatusOr<RecordingBlock> Append(const std::string& file, const std::vector<RecordingSlice>& slices);
  // Reads one block back; DataLoss names what is wrong (short file, checksum, compression, framing).
  absl::StatusOr<std::vector<RecordingSlice>> Read(const std::string& file, const RecordingBlock& block) const;
  // Deletes a session's file (NotFound is not an error).
  absl::Status Remove(const std::string& file);

 private:
  std::string dir_;
};

}  // namespace sluice::controlplane
