// Text put into HTML: the approval callback pages of the control plane and sluicectl's HTML
// evidence report.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace sluice {

// `s` with & < > " ' written as character references, safe in element text and in quoted
// attribute values. Other bytes are copied as they are.
std::string HtmlEscape(absl::string_view s);

}  // namespace sluice
