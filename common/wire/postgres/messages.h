// Typed PostgreSQL protocol messages the agent inspects or produces and sluicectl's replay reads.
// Each has `Decode(payload)` (the bytes after the length field, as DecodeFrame/DecodeStartupFrame
// give them) and `Encode()` (the whole framed message). Decoders reject trailing bytes, missing
// terminators and counts that do not fit the payload.
// https://www.postgresql.org/docs/current/protocol-message-formats.html
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::wire::postgres {

// Startup-phase request codes.
inline constexpr int32_t kSslRequestCode = 80877103;
inline constexpr int32_t kGssEncRequestCode = 80877104;
inline constexpr int32_t kCancelRequestCode = 80877102;
inline constexpr int32_t kProtocol30 = 3 << 16;
inline constexpr int32_t kProtocol32 = (3 << 16) | 2;

// What the first packet of a connection asks for.
enum class StartupKind { kStartup, kSslRequest, kGssEncRequest, kCancelRequest };
absl::StatusOr<StartupKind> ClassifyStartup(absl::string_view payload);

struct StartupMessage {
  int32_t protocol = kProtocol30;  // major << 16 | minor
  // In wire order; "user", "database", "application_name", "options", "replication", and
  // "_pq_.*" protocol options.
  std::vector<std::pair<std::string, std::string>> parameters;

  std::optional<std::string> Get(absl::string_view name) const;
  static absl::StatusOr<StartupMessage> Decode(absl::string_view payload);
  std::string Encode() const;
};

struct CancelRequest {
  int32_t process_id = 0;
  std::string secret_key;  // 4 bytes in protocol 3.0, up to 256 in 3.2
  static absl::StatusOr<CancelRequest> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'p': PasswordMessage (also SASLInitialResponse/SASLResponse, which share the type byte and are
// decoded by the authentication code that knows which one it expects).
struct PasswordMessage {
  std::string password;
  static absl::StatusOr<PasswordMessage> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'Q'
struct Query {
  std::string sql;
  static absl::StatusOr<Query> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'P'
struct Parse {
  std::string statement;  // "" = unnamed
  std::string query;
  std::vector<int32_t> param_types;
  static absl::StatusOr<Parse> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'B'
struct Bind {
  std::string portal;
  std::string statement;
  std::vector<int16_t> param_formats;
  std::vector<std::optional<std::string>> params;  // nullopt = SQL NULL
  std::vector<int16_t> result_formats;
  static absl::StatusOr<Bind> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'D' (frontend Describe) and 'C' (frontend Close): 'S' statement or 'P' portal, and a name.
struct DescribeOrClose {
  char target = 'S';
  std::string name;
  static absl::StatusOr<DescribeOrClose> Decode(absl::string_view payload);
  std::string Encode(char type) const;
};

// 'E'
struct Execute {
  std::string portal;
  int32_t max_rows = 0;  // 0 = no limit
  static absl::StatusOr<Execute> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'R': Authentication* — the request code and what follows it.
struct Authentication {
  static constexpr int32_t kOk = 0;
  static constexpr int32_t kCleartextPassword = 3;
  static constexpr int32_t kMd5Password = 5;
  static constexpr int32_t kSasl = 10;
  static constexpr int32_t kSaslContinue = 11;
  static constexpr int32_t kSaslFinal = 12;
  int32_t code = kOk;
  std::string data;  // md5 salt, SASL mechanism list or SASL data
  static absl::StatusOr<Authentication> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'K'
struct BackendKeyData {
  int32_t process_id = 0;
  std::string secret_key;  // 4 bytes in 3.0; 4 to 256 in 3.2
  static absl::StatusOr<BackendKeyData> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'S' (backend ParameterStatus)
struct ParameterStatus {
  std::string name;
  std::string value;
  static absl::StatusOr<ParameterStatus> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'Z'
struct ReadyForQuery {
  char status = 'I';  // 'I' idle, 'T' in a transaction, 'E' in a failed transaction
  static absl::StatusOr<ReadyForQuery> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'E' ErrorResponse and 'N' NoticeResponse: typed fields ('S' severity, 'V' severity
// (non-localized), 'C' SQLSTATE, 'M' message, 'D' detail, 'H' hint, ...).
struct ErrorOrNotice {
  std::vector<std::pair<char, std::string>> fields;
  std::optional<std::string> Get(char code) const;
  static absl::StatusOr<ErrorOrNotice> Decode(absl::string_view payload);
  std::string Encode(char type) const;
  // A FATAL/ERROR/NOTICE with severity, SQLSTATE and message.
  static ErrorOrNotice Make(absl::string_view severity, absl::string_view sqlstate,
                            absl::string_view message);
};

// 'v': the server (here: the agent) answers a startup with a minor version or _pq_ options it
// does not support.
struct NegotiateProtocolVersion {
  int32_t newest_minor = 0;
  std::vector<std::string> unrecognized_options;
  static absl::StatusOr<NegotiateProtocolVersion> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'T'
struct RowDescription {
  struct Field {
    std::string name;
    int32_t table_oid = 0;
    int16_t column = 0;
    int32_t type_oid = 0;
    int16_t type_size = 0;
    int32_t type_modifier = 0;
    int16_t format = 0;  // 0 text, 1 binary
  };
  std::vector<Field> fields;
  static absl::StatusOr<RowDescription> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'D' (backend DataRow)
struct DataRow {
  std::vector<std::optional<std::string>> values;  // nullopt = NULL
  static absl::StatusOr<DataRow> Decode(absl::string_view payload);
  std::string Encode() const;
};

// 'C' (backend CommandComplete)
struct CommandComplete {
  std::string tag;  // e.g. "SELECT 3", "INSERT 0 1"
  static absl::StatusOr<CommandComplete> Decode(absl::string_view payload);
  std::string Encode() const;
};

}  // namespace sluice::wire::postgres
