// The MySQL / MariaDB client/server protocol's packets, as a pure codec: no I/O, no policy.
// https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html and MariaDB's
// https://mariadb.com/kb/en/clientserver-protocol/
//
// A packet is a 3-byte little-endian payload length, a 1-byte sequence id and the payload. A
// payload of 16 MiB - 1 bytes or more is sent as packets of exactly 0xFFFFFF bytes followed by a
// shorter one (possibly empty): DecodeLogical joins them. The agent decodes what it needs to decide
// and refuses what it cannot decode (issue 25: the MySQL path of the session core).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::wire::mysql {

// Capability flags (the ones the agent reads or negotiates).
inline constexpr uint32_t kClientLongPassword = 1u << 0;
inline constexpr uint32_t kClientFoundRows = 1u << 1;
inline constexpr uint32_t kClientLongFlag = 1u << 2;
inline constexpr uint32_t kClientConnectWithDb = 1u << 3;
inline constexpr uint32_t kClientCompress = 1u << 5;
inline constexpr uint32_t kClientLocalFiles = 1u << 7;
inline constexpr uint32_t kClientProtocol41 = 1u << 9;
inline constexpr uint32_t kClientInteractive = 1u << 10;
inline constexpr uint32_t kClientSsl = 1u << 11;
inline constexpr uint32_t kClientTransactions = 1u << 13;
inline constexpr uint32_t kClientSecureConnection = 1u << 15;
inline constexpr uint32_t kClientMultiStatements = 1u << 16;
inline constexpr uint32_t kClientMultiResults = 1u << 17;
inline constexpr uint32_t kClientPsMultiResults = 1u << 18;
inline constexpr uint32_t kClientPluginAuth = 1u << 19;
inline constexpr uint32_t kClientConnectAttrs = 1u << 20;
inline constexpr uint32_t kClientPluginAuthLenencClientData = 1u << 21;
inline constexpr uint32_t kClientSessionTrack = 1u << 23;
inline constexpr uint32_t kClientDeprecateEof = 1u << 24;
inline constexpr uint32_t kClientZstdCompression = 1u << 26;
// MariaDB's extended capabilities (HandshakeV10::mariadb_capabilities): COM_STMT_BULK_EXECUTE.
inline constexpr uint32_t kMariaDbStmtBulkOperations = 1u << 2;

// One packet's payload is at most this long; a longer payload continues in the next packet.
inline constexpr size_t kMaxPayloadPerPacket = 0xFFFFFF;

struct DecodeLimits {
  // A logical payload (continuations joined) over this is a protocol error.
  size_t max_payload_bytes = 64 << 20;
};

enum class DecodeStatus { kNeedMore, kPacket, kError };

struct Packet {
  uint8_t sequence = 0;  // of the first physical packet
  // The payload: a view into the input when it fits in one packet, else `joined`.
  absl::string_view payload;
  std::string joined;
  size_t wire_size = 0;  // bytes consumed from the input, headers included
};

struct DecodeResult {
  DecodeStatus status = DecodeStatus::kNeedMore;
  Packet packet;
  std::string error;
};

// One logical packet from the start of `buffered` (continuation packets joined; their sequence
// ids must follow on, modulo 256). kNeedMore consumes nothing.
DecodeResult DecodeLogical(absl::string_view buffered, const DecodeLimits& limits);

// Appends `payload` framed as packets starting at sequence `sequence` (split at 0xFFFFFF, with an
// empty packet after a payload that is an exact multiple). Returns the next sequence id.
uint8_t EncodePacket(absl::string_view payload, uint8_t sequence, std::string* out);

// Reads the protocol's basic types from a payload; a read past the end sets the error (and
// returns zero / empty), which the caller checks once at the end.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  uint8_t Int1();
  uint16_t Int2();
  uint32_t Int3();
  uint32_t Int4();
  uint64_t Int8();
  // Length-encoded integer; nullopt for 0xFB (NULL in a text row).
  std::optional<uint64_t> LenencInt();
  absl::string_view LenencString();
  absl::string_view NulString();  // up to a NUL (consumed); an error without one
  absl::string_view Bytes(size_t n);
  absl::string_view Rest();
  bool PeekNull() const { return !data_.empty() && static_cast<uint8_t>(data_[0]) == 0xFB; }
  size_t remaining() const { return data_.size(); }
  bool ok() const { return ok_; }

 private:
  bool Need(size_t n);
  absl::string_view data_;
  bool ok_ = true;
};

void PutInt1(std::string* out, uint8_t v);
void PutInt2(std::string* out, uint16_t v);
void PutInt3(std::string* out, uint32_t v);
void PutInt4(std::string* out, uint32_t v);
void PutInt8(std::string* out, uint64_t v);
void PutLenencInt(std::string* out, uint64_t v);
void PutLenencString(std::string* out, absl::string_view s);
void PutNulString(std::string* out, absl::string_view s);

// The server's greeting (protocol version 10).
struct HandshakeV10 {
  std::string server_version;
  uint32_t connection_id = 0;
  std::string auth_data;  // the scramble: 20 bytes for the usual plugins
  uint32_t capabilities = 0;
  uint8_t charset = 0;
  uint16_t status = 0;
  // MariaDB's extended capabilities, in the last 4 of the 10 reserved bytes when the server does
  // not claim CLIENT_LONG_PASSWORD (MariaDB 10.2+); 0 otherwise.
  uint32_t mariadb_capabilities = 0;
  std::string auth_plugin;

  std::string Encode() const;  // the payload
  static absl::StatusOr<HandshakeV10> Decode(absl::string_view payload);
};

// The client's answer to the greeting (protocol 4.1). A payload of exactly 32 bytes with
// CLIENT_SSL set is an SSLRequest: the client starts TLS and sends the full response after it.
struct HandshakeResponse41 {
  uint32_t capabilities = 0;
  uint32_t max_packet_size = 0;
  uint8_t charset = 0;
  uint32_t mariadb_capabilities = 0;  // the last 4 filler bytes, for MariaDB clients
  bool ssl_request = false;           // the 32-byte SSLRequest: nothing below is set
  std::string user;
  std::string auth_response;
  std::string database;  // with CLIENT_CONNECT_WITH_DB
  std::string auth_plugin;
  std::vector<std::pair<std::string, std::string>> attributes;  // CLIENT_CONNECT_ATTRS

  std::string Encode() const;
  // Refuses a response without CLIENT_PROTOCOL_41, and one whose auth data is not length-encoded
  // (CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA): its 1-byte length caps a token at 255 bytes.
  static absl::StatusOr<HandshakeResponse41> Decode(absl::string_view payload);
};

// OK (0x00, or 0xFE at the end of a result set under CLIENT_DEPRECATE_EOF).
struct OkPacket {
  uint64_t affected_rows = 0;
  uint64_t last_insert_id = 0;
  uint16_t status = 0;
  uint16_t warnings = 0;
  std::string info;  // the human-readable rest (session-state tracking is kept raw, unparsed)

  std::string Encode(uint8_t header = 0x00) const;
  static absl::StatusOr<OkPacket> Decode(absl::string_view payload);
};

// ERR (0xFF): an error number, a SQLSTATE and a message.
struct ErrPacket {
  uint16_t code = 0;
  std::string sql_state = "HY000";
  std::string message;

  std::string Encode() const;
  static absl::StatusOr<ErrPacket> Decode(absl::string_view payload);
};

// AuthSwitchRequest (0xFE during authentication): answer with another plugin, over `data` (its
// scramble; a trailing NUL that servers add is kept as sent).
struct AuthSwitchRequest {
  std::string plugin;
  std::string data;

  std::string Encode() const;
  static absl::StatusOr<AuthSwitchRequest> Decode(absl::string_view payload);
};

// The legacy EOF packet (0xFE, payload under 9 bytes).
bool IsEofPacket(absl::string_view payload);
bool IsErrPacket(absl::string_view payload);
bool IsOkPacket(absl::string_view payload);

// A column of a result set (ColumnDefinition41). `org_table` / `org_name` name the base column,
// which is what masking by `table.column` follows.
struct ColumnDefinition {
  std::string catalog = "def";
  std::string schema;
  std::string table;
  std::string org_table;
  std::string name;
  std::string org_name;
  uint16_t charset = 0;
  uint32_t length = 0;
  uint8_t type = 0;
  uint16_t flags = 0;
  uint8_t decimals = 0;

  std::string Encode() const;
  static absl::StatusOr<ColumnDefinition> Decode(absl::string_view payload);
};

// Command bytes (the first byte of a client packet after the handshake).
enum class Command : uint8_t {
  kQuit = 0x01,
  kInitDb = 0x02,
  kQuery = 0x03,
  kFieldList = 0x04,
  kCreateDb = 0x05,
  kDropDb = 0x06,
  kRefresh = 0x07,
  kShutdown = 0x08,
  kStatistics = 0x09,
  kProcessInfo = 0x0A,
  kConnect = 0x0B,
  kProcessKill = 0x0C,
  kDebug = 0x0D,
  kPing = 0x0E,
  kTime = 0x0F,
  kDelayedInsert = 0x10,
  kChangeUser = 0x11,
  kBinlogDump = 0x12,
  kTableDump = 0x13,
  kConnectOut = 0x14,
  kRegisterSlave = 0x15,
  kStmtPrepare = 0x16,
  kStmtExecute = 0x17,
  kStmtSendLongData = 0x18,
  kStmtClose = 0x19,
  kStmtReset = 0x1A,
  kSetOption = 0x1B,
  kStmtFetch = 0x1C,
  kDaemon = 0x1D,
  kBinlogDumpGtid = 0x1E,
  kResetConnection = 0x1F,
  kStmtBulkExecute = 0xFA,  // MariaDB
};
// The command's name ("COM_QUERY"), or "COM_0x.." for a byte this codec does not know.
std::string CommandName(uint8_t command);

}  // namespace sluice::wire::mysql
