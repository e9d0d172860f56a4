// Wall-clock time as Unix milliseconds, the unit every stored timestamp uses.
#pragma once

#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice {

inline int64_t NowUnixMs() { return absl::ToUnixMillis(absl::Now()); }

}  // namespace sluice
