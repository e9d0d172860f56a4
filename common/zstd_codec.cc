#include "common/zstd_codec.h"

#include <zstd.h>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"

namespace sluice {

bool IsZstdFrame(absl::string_view bytes) {
  return bytes.size() >= 4 && absl::little_endian::Load32(bytes.data()) == kZstdMagic;
}

ZstdCompressor::ZstdCompressor(int level, bool checksum) : ctx_(ZSTD_createCCtx(), &ZSTD_freeCCtx) {
  if (ctx_ != nullptr) {
    ZSTD_CCtx_setParameter(ctx_.get(), ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(ctx_.get(), ZSTD_c_checksumFlag, checksum ? 1 : 0);
  }
}

ZstdCompressor::~ZstdCompressor() = default;

absl::Status ZstdCompressor::AppendFrame(absl::string_view raw, std::string* out) {
  if (ctx_ == nullptr)
    return absl::ResourceExhaustedError("no memory for a zstd compression context");
  const size_t bound = ZSTD_compressBound(raw.size());
  const size_t at = out->size();
  out->resize(at + bound);
  const size_t size = ZSTD_compress2(ctx_.get(), out->data() + at, bound, raw.data(), raw.size());
  if (ZSTD_isError(size)) {
    out->resize(at);
    return absl::InternalError(absl::StrCat("zstd compression failed: ", ZSTD_getErrorName(size)));
  }
  out->resize(at + size);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ZstdInflate(absl::string_view frame, uint64_t max_bytes) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
    return absl::DataLossError("not a zstd frame with its size");
  }
  if (size > max_bytes) return absl::DataLossError("it inflates past the cap");
  std::string raw(static_cast<size_t>(size), '\0');
  const size_t got = ZSTD_decompress(raw.data(), raw.size(), frame.data(), frame.size());
  if (ZSTD_isError(got) || got != raw.size()) return absl::DataLossError("it does not decompress");
  return raw;
}

}  // namespace sluice
