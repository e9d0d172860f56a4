#include "common/json_writer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sluice {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not valid.
size_t Utf8Length(absl::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n;
  uint32_t min;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    n = 2, min = 0x80, cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, min = 0x800, cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

}  // namespace

void AppendJsonString(std::string* out, absl::string_view s) {
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
      ++i;
    } else if (c < 0x20) {
      switch (c) {
        case '\n':
          out->append("\\n");
          break;
        case '\r':
          out->append("\\r");
          break;
        case '\t':
          out->append("\\t");
          break;
        default:
          absl::StrAppendFormat(out, "\\u%04x", c);
      }
      ++i;
    } else if (c < 0x80) {
      // Copy the run of plain ASCII in one go.
      size_t j = i + 1;
      while (j < s.size()) {
        unsigned char d = static_cast<unsigned char>(s[j]);
        if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') break;
        ++j;
      }
      out->append(s.data() + i, j - i);
      i = j;
    } else {
      size_t n = Utf8Length(s, i);
      if (n == 0) {
        out->append("\xef\xbf\xbd");  // U+FFFD
        ++i;
      } else {
        out->append(s.data() + i, n);
        i += n;
      }
    }
  }
  out->push_back('"');
}

void JsonObjectWriter::Key(absl::string_view key) {
  if (!first_) out_->push_back(',');
  first_ = false;
  AppendJsonString(out_, key);
  out_->push_back(':');
}

JsonObjectWriter& JsonObjectWriter::Str(absl::string_view key, absl::string_view value) {
  Key(key);
  AppendJsonString(out_, value);
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Int(absl::string_view key, int64_t value) {
  Key(key);
  absl::StrAppend(out_, value);
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Double(absl::string_view key, double value) {
  Key(key);
  absl::StrAppendFormat(out_, "%.3f", value);
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Millis(absl::string_view key, int64_t microseconds) {
  Key(key);
  if (microseconds < 0) microseconds = 0;
  absl::StrAppend(out_, microseconds / 1000, ".");
  int64_t frac = microseconds % 1000;
  out_->push_back(static_cast<char>('0' + frac / 100));
  out_->push_back(static_cast<char>('0' + frac / 10 % 10));
  out_->push_back(static_cast<char>('0' + frac % 10));
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Bool(absl::string_view key, bool value) {
  Key(key);
  out_->append(value ? "true" : "false");
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Raw(absl::string_view key, absl::string_view json) {
  Key(key);
  absl::StrAppend(out_, json);
  return *this;
}

std::string JsonObjectWriter::Finish() {
  out_->push_back('}');
  return std::move(*out_);
}

absl::string_view JsonObjectWriter::Close() {
  out_->push_back('}');
  return *out_;
}

}  // namespace sluice
