#include "common/wire/postgres/wire.h"

namespace sluice::wire::postgres {

bool WireReader::Need(size_t n) {
  if (!ok_ || data_.size() - pos_ < n) {
    ok_ = false;
    return false;
  }
  return true;
}

uint8_t WireReader::Byte() {
  if (!Need(1)) return 0;
  return static_cast<uint8_t>(data_[pos_++]);
}

int16_t WireReader::Int16() {
  if (!Need(2)) return 0;
  auto b = [&](size_t i) { return static_cast<uint16_t>(static_cast<uint8_t>(data_[pos_ + i])); };
  uint16_t v = static_cast<uint16_t>((b(0) << 8) | b(1));
  pos_ += 2;
  return static_cast<int16_t>(v);
}

int32_t WireReader::Int32() {
  if (!Need(4)) return 0;
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i])); };
  uint32_t v = (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
  pos_ += 4;
  return static_cast<int32_t>(v);
}

std::string WireReader::CString() { return std::string(CStringView()); }

absl::string_view WireReader::CStringView() {
  if (!ok_) return {};
  size_t end = data_.find('\0', pos_);
  if (end == absl::string_view::npos) {
    ok_ = false;
    return {};
  }
  absl::string_view out = data_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return out;
}

std::string WireReader::Bytes(size_t n) {
  if (!Need(n)) return "";
  std::string out(data_.substr(pos_, n));
  pos_ += n;
  return out;
}

void WireReader::Skip(size_t n) {
  if (Need(n)) pos_ += n;
}

std::string WireReader::Rest() { return Bytes(remaining()); }

void WireWriter::Int16(int16_t v) {
  uint16_t u = static_cast<uint16_t>(v);
  out_.push_back(static_cast<char>(u >> 8));
  out_.push_back(static_cast<char>(u & 0xff));
}

void WireWriter::Int32(int32_t v) {
  uint32_t u = static_cast<uint32_t>(v);
  for (int shift = 24; shift >= 0; shift -= 8)
    out_.push_back(static_cast<char>((u >> shift) & 0xff));
}

void WireWriter::CString(absl::string_view s) {
  out_.append(s.data(), s.size());
  out_.push_back('\0');
}

std::string Frame(char type, absl::string_view payload) {
  WireWriter w;
  if (type != 0) w.Byte(static_cast<uint8_t>(type));
  w.Int32(static_cast<int32_t>(payload.size() + 4));
  w.Bytes(payload);
  return w.Take();
}

}  // namespace sluice::wire::postgres
