// Bounds-checked big-endian readers and writers for PostgreSQL protocol payloads.
// https://www.postgresql.org/docs/current/protocol-message-types.html
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace sluice::wire::postgres {

// Reads from a payload; every read checks bounds. After a failed read ok() is false and every
// later read fails too, so a decoder can read a whole message and check once.
class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }
  bool AtEnd() const { return ok_ && pos_ == data_.size(); }

  uint8_t Byte();
  int16_t Int16();
  int32_t Int32();
  // A NUL-terminated string (the NUL is consumed, not returned).
  std::string CString();
  // The same, as a view into the message (valid while the message is).
  absl::string_view CStringView();
  // `n` raw bytes.
  std::string Bytes(size_t n);
  // Skips `n` bytes.
  void Skip(size_t n);
  // Everything left.
  std::string Rest();

 private:
  bool Need(size_t n);
  absl::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

class WireWriter {
 public:
  void Byte(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void Int16(int16_t v);
  void Int32(int32_t v);
  void CString(absl::string_view s);
  void Bytes(absl::string_view s) { out_.append(s.data(), s.size()); }
  const std::string& data() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Frames a payload: type byte (0 = none, for startup-phase messages) + Int32 length that counts
// itself and the payload.
std::string Frame(char type, absl::string_view payload);

}  // namespace sluice::wire::postgres
