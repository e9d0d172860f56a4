// Masking of Cloud Storage answers by a MaskingRule's detectors (emails, card numbers, ...).
// Objects have no columns, so only detectors apply to them: JSON answers (metadata, lists) are
// searched as JSON documents, an object's bytes of a text type (text/*, JSON, NDJSON, CSV, XML)
// line by line as they stream, each line at most `max_line` bytes. What cannot be searched is
// refused, never relayed unmasked: other types, compressed bodies (Content-Encoding), byte ranges
// of a masked object, a line over the limit, a finding whose strategy is `null`.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/masking/policy.h"

namespace sluice::agent::gcs {

// Whether an object's bytes of this Content-Type are text the detectors can search.
bool SearchableContentType(absl::string_view content_type);

// Masks a JSON document in place; with `drop_hashes` (the API's answers, not an object's bytes),
// drops the object hashes (md5Hash, crc32c) it carries, which a masked download would no longer
// match. Returns how many documents changed (0 or 1), or an error when it cannot be masked.
absl::StatusOr<int64_t> MaskJsonAnswer(const masking::MaskingPolicy& policy, std::string* body,
                                       bool drop_hashes);

// An object's bytes, masked line by line as they arrive.
class LineMasker {
 public:
  LineMasker(const masking::MaskingPolicy* policy, size_t max_line)
      : policy_(policy), max_line_(max_line) {}
  // Appends to `*out` the masked lines `data` completes; keeps the rest for the next call.
  absl::Status Feed(absl::string_view data, std::string* out);
  // The last line (without a line end), masked.
  absl::Status Finish(std::string* out);
  int64_t masked_lines() const { return masked_lines_; }

 private:
  absl::Status MaskLine(absl::string_view line, std::string* out);

  const masking::MaskingPolicy* policy_;
  const size_t max_line_;
  std::string pending_;
  std::string scratch_;
  int64_t masked_lines_ = 0;
};

}  // namespace sluice::agent::gcs
