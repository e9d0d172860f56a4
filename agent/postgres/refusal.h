// How a refusal of the session core (agent/session/decision.h) is spelled on PostgreSQL's wire:
// its SQLSTATE, and the ErrorResponse that carries it. The kind decides the code; a login's
// refusal is FATAL (the connection closes), a statement's is ERROR (the session goes on).
#pragma once

#include <string>

#include "agent/session/decision.h"
#include "common/audit/events.h"

namespace sluice::agent::postgres {

// The SQLSTATE of a refused login: 28P01 (token), 28000 (no access rule, TLS required), 3D000
// (unknown connection), 53300 (session limit, audit unavailable), 08006 (upstream), 08P01
// (protocol error), 0A000 (not supported), 22023 (an unsafe startup setting).
const char* LoginSqlState(audit::RefusalKind kind);

// The SQLSTATE of a refused statement: 25006 (read only), 57014 (cancelled while held), 58000 (a
// lookup upstream failed), 42883 (no such function), 42501 (everything else the agent refuses:
// guardrails, approvals, unsafe settings, unmaskable results, what it does not relay).
const char* StatementSqlState(audit::RefusalKind kind);

// The ErrorResponse ('E', severity ERROR) that tells the client a statement was refused.
std::string StatementError(const session::Refuse& refusal);

}  // namespace sluice::agent::postgres
