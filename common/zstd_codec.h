// zstd frames: the control plane's recording blocks (controlplane/store/recording_files.h) and
// stored event chunks (event_chunks.records), and the recording slices the agent compresses
// before they travel (agent/audit/event_sink.h). A frame carries its content size, so reading one
// back allocates once and within a cap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct ZSTD_CCtx_s;

namespace sluice {

// The first four bytes of a zstd frame, read little-endian.
inline constexpr uint32_t kZstdMagic = 0xFD2FB528;

// Whether `bytes` starts like a zstd frame.
bool IsZstdFrame(absl::string_view bytes);

// One compression context, reused (not thread-safe: its owner's lock guards it).
class ZstdCompressor {
 public:
  // `checksum`: the frame also carries a checksum of its content.
  ZstdCompressor(int level, bool checksum);
  ~ZstdCompressor();
  ZstdCompressor(const ZstdCompressor&) = delete;
  ZstdCompressor& operator=(const ZstdCompressor&) = delete;

  // Appends `raw` to `out` as one frame.
  absl::Status AppendFrame(absl::string_view raw, std::string* out);

 private:
  std::unique_ptr<ZSTD_CCtx_s, size_t (*)(ZSTD_CCtx_s*)> ctx_;
};

// The content of the one frame `frame` holds, if it is at most `max_bytes`; otherwise an error
// that says what is wrong (the caller names where the frame came from).
absl::StatusOr<std::string> ZstdInflate(absl::string_view frame, uint64_t max_bytes);

}  // namespace sluice
