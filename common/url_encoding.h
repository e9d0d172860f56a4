// Percent-decoding of a URL's path segments and query parts, for the cloud API paths that decide
// on what a request names (Cloud Storage, BigQuery, S3, SigV4's canonical form).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace sluice {

// `in` decoded into `*out`; false when a '%' is not followed by two hex digits, or when it holds
// or decodes to a NUL byte (no name the agent decides on may carry one).
bool PercentDecode(absl::string_view in, std::string* out);

}  // namespace sluice
