#include "agent/audit/inflight.h"

#include <algorithm>
#include <cstring>

namespace sluice::agent {

// 1 KiB, laid out for the file: fixed-size fields only.
struct InflightTable::Slot {
  static constexpr uint32_t kInUse = 0x534c4f54;  // "SLOT"
  uint32_t magic;
  uint32_t pending;
  uint64_t sequence;
  uint32_t head;  // texts[head % kTexts] is the oldest pending request's
  uint32_t kept;  // texts kept, of the oldest pending requests (later ones overflowed)
  uint8_t session_len;
  char session[63];
  uint16_t text_len[kTexts];
  char text[kTexts][kTextBytes];
  char spare[1024 - 4 - 4 - 8 - 4 - 4 - 1 - 63 - 2 * kTexts - kTexts * kTextBytes];
};

InflightTable::Slot* InflightTable::At(int slot) const { return slots_ + slot; }

absl::StatusOr<std::unique_ptr<InflightTable>> InflightTable::Open(const std::string& path,
                                                                   size_t slots) {
  auto file = MappedFile::Open(path, FileBytes(slots));
  if (!file.ok()) return file.status();
  return std::unique_ptr<InflightTable>(new InflightTable(std::move(*file), slots));
}

InflightTable::InflightTable(std::unique_ptr<MappedFile> file, size_t count)
    : file_(std::move(file)), slots_(reinterpret_cast<Slot*>(file_->data())), count_(count) {
  static_assert(sizeof(Slot) == kSlotBytes, "a slot is 1 KiB in the file");
  absl::MutexLock lock(&mu_);
  for (size_t i = count; i > 0; --i) free_.push_back(static_cast<int>(i - 1));
}

int InflightTable::Acquire(absl::string_view session_id, uint64_t sequence) {
  int slot = -1;
  {
    absl::MutexLock lock(&mu_);
    if (free_.empty()) {
      ++uncovered_;
      return -1;
    }
    slot = free_.back();
    free_.pop_back();
  }
  Slot* s = At(slot);
  s->pending = 0;
  s->head = 0;
  s->kept = 0;
  s->sequence = sequence;
  s->session_len = static_cast<uint8_t>(std::min(session_id.size(), sizeof(s->session)));
  std::memcpy(s->session, session_id.data(), s->session_len);
  s->magic = Slot::kInUse;  // last: a slot is only read back once it is whole
  return slot;
}

void InflightTable::Begin(int slot, absl::string_view text) {
  if (slot < 0) return;
  Slot* s = At(slot);
  if (s->kept == s->pending && s->kept < kTexts) {
    const size_t i = (s->head + s->kept) % kTexts;
    s->text_len[i] = static_cast<uint16_t>(std::min(text.size(), kTextBytes));
    std::memcpy(s->text[i], text.data(), s->text_len[i]);
    ++s->kept;
  }
  ++s->pending;
}

void InflightTable::Account(int slot, uint64_t sequence, bool settles, bool release) {
  if (slot < 0) return;
  Slot* s = At(slot);
  if (release) {
    s->magic = 0;
    absl::MutexLock lock(&mu_);
    free_.push_back(slot);
    return;
  }
  if (settles && s->pending > 0) {
    --s->pending;
    if (s->kept > 0) {
      --s->kept;
      ++s->head;
    }
  }
  s->sequence = sequence;
}

std::vector<InflightTable::Leftover> InflightTable::Recover() const {
  std::vector<Leftover> out;
  for (size_t i = 0; i < count_; ++i) {
    const Slot* s = At(static_cast<int>(i));
    if (s->magic != Slot::kInUse) continue;
    Leftover l;
    l.session_id.assign(s->session, std::min<size_t>(s->session_len, sizeof(s->session)));
    l.sequence = s->sequence;
    l.pending = s->pending;
    for (uint32_t k = 0;
         k < std::min<uint32_t>({s->kept, s->pending, static_cast<uint32_t>(kTexts)}); ++k) {
      const size_t at = (s->head + k) % kTexts;
      l.texts.emplace_back(s->text[at], std::min<size_t>(s->text_len[at], kTextBytes));
    }
    out.push_back(std::move(l));
  }
  return out;
}

void InflightTable::Reset() {
  for (size_t i = 0; i < count_; ++i) At(static_cast<int>(i))->magic = 0;
}

uint64_t InflightTable::uncovered() const {
  absl::MutexLock lock(&mu_);
  return uncovered_;
}

}  // namespace sluice::agent
