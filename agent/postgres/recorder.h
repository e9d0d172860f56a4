// The recording of one PostgreSQL session: the session core's recorder (agent/session/recorder.h)
// with PostgreSQL's framing. Data messages are DataRow and CopyData; what is written to the
// client is read as typed messages (a type byte, a 4-byte length that counts itself, the payload).
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "agent/session/recorder.h"

namespace sluice::agent::postgres {

struct PostgresFraming {
  static bool IsData(char type) { return type == 'D' || type == 'd'; }

  static bool Next(absl::string_view* wire, char* type, absl::string_view* payload) {
    if (wire->size() < 5) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(wire->data() + 1);
    const uint32_t length = (static_cast<uint32_t>(p[0]) << 24) |
                            (static_cast<uint32_t>(p[1]) << 16) |
                            (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
    if (length < 4 || length - 4 > wire->size() - 5) return false;
    *type = (*wire)[0];
    *payload = wire->substr(5, length - 4);
    wire->remove_prefix(1 + length);
    return true;
  }
};

using RecordingLimits = session::RecordingLimits;
using SessionRecorder = session::FramedRecorder<PostgresFraming>;

}  // namespace sluice::agent::postgres
