#include "common/audit/recording.h"

#include "absl/strings/str_cat.h"

namespace sluice::audit {
namespace {

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace

void AppendRecordedMessage(std::string* out, char kind, uint64_t offset_us, char type, absl::string_view payload) {
  out->push_back(kind);
  PutVarint(out, offset_us);
  out->push_back(type);
  PutVarint(out, payload.size());
  out->append(payload.data(), payload.size());
}

void AppendRecordedOmission(std::string* out, uint64_t offset_us, uint64_t messages, uint64_t bytes) {
  out->push_back(kRecordedOmitted);
  PutVarint(out, offset_us);
  PutVarint(out, messages);
  PutVarint(out, bytes);
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
      return bad(absl::StrCat("unknown entry kind ", static_cast<int>(static_cast<uint8_t>(e->kind))));
  }
}

}  // namespace sluice::audit
