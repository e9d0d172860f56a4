#include "agent/postgres/refusal.h"

#include "common/wire/postgres/messages.h"

namespace sluice::agent::postgres {

using audit::RefusalKind;

const char* LoginSqlState(RefusalKind kind) {
  switch (kind) {
    case RefusalKind::kTokenRejected:
      return "28P01";
    case RefusalKind::kNoAccessRule:
    case RefusalKind::kTlsRequired:
      return "28000";
    case RefusalKind::kUnknownConnection:
      return "3D000";
    case RefusalKind::kSessionLimit:
    case RefusalKind::kAuditUnavailable:
      return "53300";
    case RefusalKind::kUpstreamUnavailable:
      return "08006";
    case RefusalKind::kNotSupported:
      return "0A000";
    case RefusalKind::kUnsafeSetting:
      return "22023";
    case RefusalKind::kProtocolError:
      return "08P01";
    default:
      return "28000";
  }
}

const char* StatementSqlState(RefusalKind kind) {
  switch (kind) {
    case RefusalKind::kReadOnly:
      return "25006";
    case RefusalKind::kCancelled:
      return "57014";
    case RefusalKind::kUpstreamUnavailable:
      return "58000";
    case RefusalKind::kUnknownFunction:
      return "42883";
    default:
      return "42501";
  }
}

std::string StatementError(const session::Refuse& refusal) {
  return wire::postgres::ErrorOrNotice::Make("ERROR", StatementSqlState(refusal.kind),
                                             refusal.message)
      .Encode('E');
}

}  // namespace sluice::agent::postgres
