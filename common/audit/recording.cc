#include "common/audit/recording.h"

#include <google/protobuf/io/coded_stream.h>

#include "absl/strings/str_cat.h"
#include "common/audit/records.h"
#include "common/zstd_codec.h"

namespace sluice::audit {
namespace {

using google::protobuf::io::CodedOutputStream;

// Writes `v` as a base-128 varint at `p` (room for 10 bytes); the bytes written.
size_t EncodeVarint(uint64_t v, char* p) {
  auto* start = reinterpret_cast<uint8_t*>(p);
  return static_cast<size_t>(CodedOutputStream::WriteVarint64ToArray(v, start) - start);
}

}  // namespace

// Level 1 and no content checksum: the hash chain covers the slice, and speed is what matters
// on the agent's path (a recording is mostly protocol framing and repeated text).
absl::string_view CompressSlice(absl::string_view entries, std::string* scratch) {
  if (entries.size() < kCompressSliceFrom || entries.size() > kMaxRecordBytes) return entries;
  thread_local ZstdCompressor zstd(1, false);
  scratch->clear();
  if (!zstd.AppendFrame(entries, scratch).ok() || scratch->size() >= entries.size()) return entries;
  return *scratch;
}

absl::StatusOr<absl::string_view> SliceEntries(absl::string_view slice, std::string* buffer) {
  if (!IsZstdFrame(slice)) return slice;
  auto inflated = ZstdInflate(slice, kMaxRecordBytes);
  if (!inflated.ok()) {
    return absl::DataLossError(
        absl::StrCat("a compressed recording slice: ", inflated.status().message()));
  }
  *buffer = *std::move(inflated);
  return absl::string_view(*buffer);
}

// Every relayed message is recorded: the head is built on the stack and appended at once (byte
// by byte push_back was a measurable part of the agent's time per statement).
void AppendRecordedMessage(std::string* out, char kind, uint64_t offset_us, char type,
                           absl::string_view payload) {
  char head[2 + 2 * 10];
  size_t n = 0;
  head[n++] = kind;
  n += EncodeVarint(offset_us, head + n);
  head[n++] = type;
  n += EncodeVarint(payload.size(), head + n);
  out->append(head, n);
  out->append(payload.data(), payload.size());
}

void AppendRecordedOmission(std::string* out, uint64_t offset_us, uint64_t messages,
                            uint64_t bytes) {
  char head[1 + 3 * 10];
  size_t n = 0;
  head[n++] = kRecordedOmitted;
  n += EncodeVarint(offset_us, head + n);
  n += EncodeVarint(messages, head + n);
  n += EncodeVarint(bytes, head + n);
  out->append(head, n);
}

bool RecordingReader::Varint(uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) return false;
    uint8_t b = static_cast<uint8_t>(data_[pos_++]);
    *v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

bool RecordingReader::Next(RecordedEntry* e) {
  if (!status_.ok() || pos_ == data_.size()) return false;
  const size_t start = pos_;
  auto bad = [&](absl::string_view what) {
    status_ = absl::DataLossError(absl::StrCat("recording entry at byte ", start, ": ", what));
    return false;
  };
  *e = RecordedEntry{};
  e->kind = data_[pos_++];
  if (!Varint(&e->offset_us)) return bad("truncated time offset");
  switch (e->kind) {
    case kRecordedFromClient:
    case kRecordedToClient: {
      if (pos_ >= data_.size()) return bad("truncated message type");
      e->type = data_[pos_++];
      uint64_t n = 0;
      if (!Varint(&n) || n > data_.size() - pos_) return bad("truncated message");
      e->payload = data_.substr(pos_, n);
      pos_ += n;
      return true;
    }
    case kRecordedOmitted:
      if (!Varint(&e->messages) || !Varint(&e->bytes)) return bad("truncated omission counts");
      return true;
    default:
      return bad(
          absl::StrCat("unknown entry kind ", static_cast<int>(static_cast<uint8_t>(e->kind))));
  }
}

}  // namespace sluice::audit
