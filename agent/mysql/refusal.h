// How the session core's refusals (agent/session/decision.h) are spelled on MySQL's wire: an ERR
// packet with a MySQL error number and SQLSTATE chosen so that clients react as to the server's
// own error of that kind (1045 for a rejected login, 1792 for a write in a read-only
// transaction, ...). The RefusalKind travels in the audit event; nothing reads these codes back.
#pragma once

#include <cstdint>
#include <string>

#include "agent/session/decision.h"
#include "common/audit/events.h"

namespace sluice::agent::mysql {

struct ErrorCode {
  uint16_t number = 0;
  const char* sql_state = "HY000";
};

// A refused login (the session ends).
ErrorCode LoginError(audit::RefusalKind kind);
// A refused statement or command (the session goes on).
ErrorCode StatementError(audit::RefusalKind kind);

// The ERR packet's payload for `refusal`.
std::string ErrPayload(ErrorCode code, const std::string& message);

}  // namespace sluice::agent::mysql
