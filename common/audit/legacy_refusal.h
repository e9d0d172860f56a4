// ONLY for events stored before agents wrote `refusal_kind` (common/audit/events.h): the kind of
// refusal that such an event's SQLSTATE, message and decision imply, as the PostgreSQL agent of
// that time spelled them (agent/postgres/session.cc before typed events). This is the one place
// that may know those SQLSTATEs and messages; nothing else reads a refusal's kind from them, and
// nothing new is ever decoded here (an event with `refusal_kind` never reaches these functions).
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "common/audit/events.h"

namespace sluice::audit::legacy {

struct SessionRefusal {
  RefusalKind kind = RefusalKind::kOther;
  std::string detail;  // a rejected token: the reason without the agent's "token rejected" prefix
};

// A session_refused body of an older agent: its `refusal` (only "session_limit" was ever
// written), `sqlstate` and `reason`.
SessionRefusal DecodeSessionRefusal(absl::string_view refusal, absl::string_view sqlstate,
                                    absl::string_view reason);

// A statement body of an older agent: its `decision` (refused, blocked, denied; kNone when empty),
// `sqlstate` and `reason`.
RefusalKind DecodeStatementRefusal(absl::string_view decision, absl::string_view sqlstate,
                                   absl::string_view reason);

// An approval body of an older agent: its `decision` (kNone when approved) and `reason`.
RefusalKind DecodeApprovalRefusal(absl::string_view decision, absl::string_view reason);

}  // namespace sluice::audit::legacy
