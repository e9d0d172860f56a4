// Session recordings at the control plane: append-only files under <data-dir>/recordings
// (0000000001.rec, 0000000002.rec, ...; a new one after 256 MiB), indexed in SQLite
// (recording_blocks). Each ingested batch adds one block per session, all in one write to the
// current file:
//
//   uint32 little-endian  length of the compressed bytes
//   uint32 little-endian  CRC-32 of the compressed bytes
//   compressed            entries back to back: uint64 LE sequence, uint32 LE size, the slice
//
// The entries are one zstd frame (level 1, with its content size and checksum), or, when the
// slices came compressed from the agent (common/audit/recording.h) and the rest is short, "SLRW"
// followed by the entries as they are (compressing them again would cost time for nothing);
// blocks written before zstd are zlib streams. The three are told apart by their first bytes,
// and all are read. zstd level 1 compresses recordings about 4 times as fast as zlib level 1 did,
// and smaller.
//
// A slice is what one audit event carried (AuditEvent.recording). The hash chain covers every
// slice (common/audit/records.h JoinRecording), so `audit verify` finds a changed file.
// Appends are not synced on their own: they are as durable as the SQLite store's commits (both
// survive a crash of the process; the database's WAL is synced at checkpoints). Retention erases
// a purged session's blocks in place (the file system frees them: a hole is punched) and deletes
// a file once none of its blocks is indexed any more.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/audit/trail_storage.h"

namespace sluice {
class ZstdCompressor;
}  // namespace sluice

namespace sluice::controlplane {

struct RecordingBlock {
  uint64_t offset = 0;
  uint64_t length = 0;  // header included
};

class RecordingFiles {
 public:
  static constexpr uint64_t kRotateBytes = 256 << 20;

  explicit RecordingFiles(std::string dir, uint64_t rotate_bytes = kRotateBytes);
  ~RecordingFiles();
  RecordingFiles(const RecordingFiles&) = delete;
  RecordingFiles& operator=(const RecordingFiles&) = delete;

  const std::string& dir() const { return dir_; }
  // Appends one block per group of slices to the current file, in one write. Returns the file's
  // name (under dir()) and each group's block, in order.
  absl::StatusOr<std::pair<std::string, std::vector<RecordingBlock>>> Append(
      const std::vector<const std::vector<RecordingSlice>*>& groups);
  // Reads one block back; DataLoss names what is wrong (short file, checksum, compression,
  // framing).
  absl::StatusOr<std::vector<RecordingSlice>> Read(const std::string& file,
                                                   const RecordingBlock& block) const;
  // Erases a block's bytes (they read as zeros afterwards).
  absl::Status Erase(const std::string& file, const RecordingBlock& block);
  // Deletes a file none of whose blocks is kept, unless it is the one appended to.
  absl::Status RemoveIfDone(const std::string& file);

 private:
  absl::Status OpenCurrent();

  // One compression context, reused for every block (Append runs under the store's lock).
  std::unique_ptr<ZstdCompressor> zstd_;
  std::string dir_;
  uint64_t rotate_bytes_;
  std::string current_;  // the file appended to ("" until the first append)
  uint64_t current_size_ = 0;
  uint64_t current_number_ = 0;
};

}  // namespace sluice::controlplane
