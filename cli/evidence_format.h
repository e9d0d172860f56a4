// Renders the evidence report of AdminService.ExportEvidence (JSON) for people: the audit chain's
// verification first, a summary table of the controls, then a section per control (what the
// gateway does, its counts, its evidence lists, what is not recorded, the event ids it rests on).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sluice::cli {

// `format`: "json" (the report pretty-printed), "markdown" or "html" (every string from the report
// escaped). InvalidArgument for another format, or a report that is not JSON of the expected
// shape.
absl::StatusOr<std::string> RenderEvidence(const std::string& report_json,
                                           const std::string& format);

}  // namespace sluice::cli
