#include "agent/mysql/refusal.h"

#include "common/wire/mysql/packets.h"

namespace sluice::agent::mysql {

using audit::RefusalKind;

ErrorCode LoginError(RefusalKind kind) {
  switch (kind) {
    case RefusalKind::kTokenRejected:
    case RefusalKind::kNoAccessRule:
      return {1045, "28000"};  // ER_ACCESS_DENIED_ERROR
    case RefusalKind::kTlsRequired:
      return {3159, "08004"};  // ER_SECURE_TRANSPORT_REQUIRED (MySQL 8)
    case RefusalKind::kUnknownConnection:
      return {1049, "42000"};  // ER_BAD_DB_ERROR
    case RefusalKind::kSessionLimit:
      return {1226, "42000"};  // ER_USER_LIMIT_REACHED
    case RefusalKind::kAuditUnavailable:
      return {1040, "08004"};  // ER_CON_COUNT_ERROR: come back later
    case RefusalKind::kUpstreamUnavailable:
      return {1105, "08S01"};  // ER_UNKNOWN_ERROR, communication failure
    case RefusalKind::kNotSupported:
      return {1235, "42000"};  // ER_NOT_SUPPORTED_YET
    case RefusalKind::kUnsafeSetting:
      return {1115, "42000"};  // ER_UNKNOWN_CHARACTER_SET
    case RefusalKind::kProtocolError:
      return {1043, "08S01"};  // ER_HANDSHAKE_ERROR
    default:
      return {1045, "28000"};
  }
}

ErrorCode StatementError(RefusalKind kind) {
  switch (kind) {
    case RefusalKind::kReadOnly:
      return {1792, "25006"};  // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    case RefusalKind::kCancelled:
      return {1317, "70100"};  // ER_QUERY_INTERRUPTED
    case RefusalKind::kUpstreamUnavailable:
      return {1105, "HY000"};  // ER_UNKNOWN_ERROR
    case RefusalKind::kNotSupported:
      return {1235, "42000"};  // ER_NOT_SUPPORTED_YET
    case RefusalKind::kUnsafeSetting:
      return {1231, "42000"};  // ER_WRONG_VALUE_FOR_VAR
    case RefusalKind::kProtocolError:
      return {1047, "08S01"};  // ER_UNKNOWN_COM_ERROR
    default:
      return {1227, "42000"};  // ER_SPECIFIC_ACCESS_DENIED_ERROR
  }
}

std::string ErrPayload(ErrorCode code, const std::string& message) {
  wire::mysql::ErrPacket err;
  err.code = code.number;
  err.sql_state = code.sql_state;
  err.message = message;
  return err.Encode();
}

}  // namespace sluice::agent::mysql
