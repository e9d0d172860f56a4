// Builds one flat JSON object without a DOM, for events written on the data path (one per
// statement): strings are escaped, and invalid UTF-8 is replaced by U+FFFD so the output is
// always valid JSON.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace sluice {

class JsonObjectWriter {
 public:
  JsonObjectWriter() : out_(&own_) { out_->push_back('{'); }
  // Writes into `buffer` (cleared first, its capacity kept): a caller that builds one object per
  // statement reuses one buffer instead of allocating each time.
  explicit JsonObjectWriter(std::string* buffer) : out_(buffer) {
    out_->clear();
    out_->push_back('{');
  }
  JsonObjectWriter(const JsonObjectWriter&) = delete;
  JsonObjectWriter& operator=(const JsonObjectWriter&) = delete;
  JsonObjectWriter& Str(absl::string_view key, absl::string_view value);
  JsonObjectWriter& Int(absl::string_view key, int64_t value);
  JsonObjectWriter& Double(absl::string_view key, double value);
  // A non-negative duration in milliseconds with three decimals ("0.087"), without printf.
  JsonObjectWriter& Millis(absl::string_view key, int64_t microseconds);
  JsonObjectWriter& Bool(absl::string_view key, bool value);
  // Inserts `json` (already valid JSON) as the value.
  JsonObjectWriter& Raw(absl::string_view key, absl::string_view json);
  std::string Finish();  // leaves the writer empty
  // Closes the object and returns a view of it in the buffer.
  absl::string_view Close();

 private:
  void Key(absl::string_view key);
  std::string own_;
  std::string* out_;
  bool first_ = true;
};

// Appends `s` as a JSON string literal (with quotes) to `out`.
void AppendJsonString(std::string* out, absl::string_view s);

}  // namespace sluice
