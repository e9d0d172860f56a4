#include "common/wire/mysql/packets.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sluice::wire::mysql {
namespace {

constexpr size_t kHeaderBytes = 4;

struct Physical {
  size_t length = 0;
  uint8_t sequence = 0;
};

Physical HeaderAt(absl::string_view buffered, size_t at) {
  const auto* p = reinterpret_cast<const uint8_t*>(buffered.data() + at);
  return Physical{
      static_cast<size_t>(p[0]) | static_cast<size_t>(p[1]) << 8 | static_cast<size_t>(p[2]) << 16,
      p[3]};
}

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ", what, " packet"));
}

}  // namespace

DecodeResult DecodeLogical(absl::string_view buffered, const DecodeLimits& limits) {
  DecodeResult out;
  size_t at = 0;
  size_t total = 0;
  std::optional<uint8_t> expected;
  std::vector<absl::string_view> parts;
  while (true) {
    if (buffered.size() - at < kHeaderBytes) return out;  // kNeedMore
    const Physical h = HeaderAt(buffered, at);
    if (expected && h.sequence != *expected) {
      out.status = DecodeStatus::kError;
      out.error = absl::StrCat("a continuation packet has sequence id ", h.sequence, ", expected ",
                               *expected);
      return out;
    }
    total += h.length;
    if (total > limits.max_payload_bytes) {
      out.status = DecodeStatus::kError;
      out.error = absl::StrCat("a packet's payload is over ", limits.max_payload_bytes, " bytes");
      return out;
    }
    if (buffered.size() - at - kHeaderBytes < h.length) return out;  // kNeedMore
    if (!expected) out.packet.sequence = h.sequence;
    parts.push_back(buffered.substr(at + kHeaderBytes, h.length));
    at += kHeaderBytes + h.length;
    if (h.length < kMaxPayloadPerPacket) break;
    expected = static_cast<uint8_t>(h.sequence + 1);
  }
  out.status = DecodeStatus::kPacket;
  out.packet.wire_size = at;
  if (parts.size() == 1) {
    out.packet.payload = parts[0];
  } else {
    out.packet.joined.reserve(total);
    for (absl::string_view p : parts) out.packet.joined.append(p.data(), p.size());
    out.packet.payload = out.packet.joined;
  }
  return out;
}

uint8_t EncodePacket(absl::string_view payload, uint8_t sequence, std::string* out) {
  while (true) {
    const size_t n = std::min(payload.size(), kMaxPayloadPerPacket);
    PutInt3(out, static_cast<uint32_t>(n));
    PutInt1(out, sequence++);
    out->append(payload.data(), n);
    payload.remove_prefix(n);
    if (n < kMaxPayloadPerPacket) return sequence;
  }
}

bool Reader::Need(size_t n) {
  if (!ok_ || data_.size() < n) {
    ok_ = false;
    return false;
  }
  return true;
}

uint8_t Reader::Int1() {
  if (!Need(1)) return 0;
  uint8_t v = static_cast<uint8_t>(data_[0]);
  data_.remove_prefix(1);
  return v;
}

uint16_t Reader::Int2() {
  if (!Need(2)) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(data_.data());
  data_.remove_prefix(2);
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}

uint32_t Reader::Int3() {
  if (!Need(3)) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(data_.data());
  data_.remove_prefix(3);
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16;
}

uint32_t Reader::Int4() {
  const uint32_t low = Int2();
  return low | static_cast<uint32_t>(Int2()) << 16;
}

uint64_t Reader::Int8() {
  const uint64_t low = Int4();
  return low | static_cast<uint64_t>(Int4()) << 32;
}

std::optional<uint64_t> Reader::LenencInt() {
  const uint8_t first = Int1();
  if (!ok_) return 0;
  switch (first) {
    case 0xFB:
      return std::nullopt;
    case 0xFC:
      return Int2();
    case 0xFD:
      return Int3();
    case 0xFE:
      return Int8();
    case 0xFF:
      ok_ = false;  // not a length: an ERR packet's header
      return 0;
    default:
      return first;
  }
}

absl::string_view Reader::LenencString() {
  std::optional<uint64_t> n = LenencInt();
  if (!n) return {};
  if (!ok_ || *n > data_.size()) {
    ok_ = false;
    return {};
  }
  return Bytes(static_cast<size_t>(*n));
}

absl::string_view Reader::NulString() {
  if (!ok_) return {};
  const size_t end = data_.find('\0');
  if (end == absl::string_view::npos) {
    ok_ = false;
    return {};
  }
  absl::string_view s = data_.substr(0, end);
  data_.remove_prefix(end + 1);
  return s;
}

absl::string_view Reader::Bytes(size_t n) {
  if (!Need(n)) return {};
  absl::string_view s = data_.substr(0, n);
  data_.remove_prefix(n);
  return s;
}

absl::string_view Reader::Rest() {
  if (!ok_) return {};
  absl::string_view s = data_;
  data_ = {};
  return s;
}

void PutInt1(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
void PutInt2(std::string* out, uint16_t v) {
  PutInt1(out, static_cast<uint8_t>(v));
  PutInt1(out, static_cast<uint8_t>(v >> 8));
}
void PutInt3(std::string* out, uint32_t v) {
  PutInt2(out, static_cast<uint16_t>(v));
  PutInt1(out, static_cast<uint8_t>(v >> 16));
}
void PutInt4(std::string* out, uint32_t v) {
  PutInt2(out, static_cast<uint16_t>(v));
  PutInt2(out, static_cast<uint16_t>(v >> 16));
}
void PutInt8(std::string* out, uint64_t v) {
  PutInt4(out, static_cast<uint32_t>(v));
  PutInt4(out, static_cast<uint32_t>(v >> 32));
}

void PutLenencInt(std::string* out, uint64_t v) {
  if (v < 0xFB) {
    PutInt1(out, static_cast<uint8_t>(v));
  } else if (v <= 0xFFFF) {
    PutInt1(out, 0xFC);
    PutInt2(out, static_cast<uint16_t>(v));
  } else if (v <= 0xFFFFFF) {
    PutInt1(out, 0xFD);
    PutInt3(out, static_cast<uint32_t>(v));
  } else {
    PutInt1(out, 0xFE);
    PutInt8(out, v);
  }
}

void PutLenencString(std::string* out, absl::string_view s) {
  PutLenencInt(out, s.size());
  out->append(s.data(), s.size());
}

void PutNulString(std::string* out, absl::string_view s) {
  out->append(s.data(), s.size());
  out->push_back('\0');
}

std::string HandshakeV10::Encode() const {
  std::string out;
  PutInt1(&out, 10);
  PutNulString(&out, server_version);
  PutInt4(&out, connection_id);
  std::string scramble = auth_data;
  scramble.resize(std::max<size_t>(scramble.size(), 8), '\0');
  out.append(scramble, 0, 8);
  PutInt1(&out, 0);
  PutInt2(&out, static_cast<uint16_t>(capabilities));
  PutInt1(&out, charset);
  PutInt2(&out, status);
  PutInt2(&out, static_cast<uint16_t>(capabilities >> 16));
  PutInt1(&out,
          (capabilities & kClientPluginAuth) ? static_cast<uint8_t>(auth_data.size() + 1) : 0);
  out.append(6, '\0');
  PutInt4(&out, (capabilities & kClientLongPassword) ? 0 : mariadb_capabilities);
  if (capabilities & kClientSecureConnection) {
    std::string part2 = auth_data.size() > 8 ? auth_data.substr(8) : std::string();
    part2.resize(std::max<size_t>(part2.size() + 1, 13), '\0');
    out += part2;
  }
  if (capabilities & kClientPluginAuth) PutNulString(&out, auth_plugin);
  return out;
}

absl::StatusOr<HandshakeV10> HandshakeV10::Decode(absl::string_view payload) {
  Reader r(payload);
  HandshakeV10 h;
  const uint8_t version = r.Int1();
  if (r.ok() && version != 10) {
    return absl::InvalidArgumentError(
        absl::StrCat("the server speaks protocol version ", version, ", not 10"));
  }
  h.server_version = std::string(r.NulString());
  h.connection_id = r.Int4();
  std::string scramble(r.Bytes(8));
  r.Int1();  // filler
  h.capabilities = r.Int2();
  if (r.remaining() == 0 && r.ok()) {
    h.auth_data = std::move(scramble);
    return h;  // a minimal greeting ends here
  }
  h.charset = r.Int1();
  h.status = r.Int2();
  h.capabilities |= static_cast<uint32_t>(r.Int2()) << 16;
  const uint8_t data_len = r.Int1();
  r.Bytes(6);
  const uint32_t extended = r.Int4();
  if (!(h.capabilities & kClientLongPassword)) h.mariadb_capabilities = extended;
  if (h.capabilities & kClientSecureConnection) {
    const size_t part2 = std::max<int>(13, static_cast<int>(data_len) - 8);
    absl::string_view rest = r.Bytes(std::min(part2, r.remaining()));
    scramble.append(rest.data(), rest.size());
    if (!scramble.empty() && scramble.back() == '\0') scramble.pop_back();
  }
  h.auth_data = std::move(scramble);
  if (h.capabilities & kClientPluginAuth) {
    absl::string_view plugin = r.remaining() > 0 ? r.Rest() : absl::string_view();
    if (!plugin.empty() && plugin.back() == '\0') plugin.remove_suffix(1);
    h.auth_plugin = std::string(plugin);
  }
  if (!r.ok()) return Malformed("HandshakeV10");
  return h;
}

std::string HandshakeResponse41::Encode() const {
  std::string out;
  PutInt4(&out, capabilities);
  PutInt4(&out, max_packet_size);
  PutInt1(&out, charset);
  out.append(19, '\0');
  PutInt4(&out, (capabilities & kClientLongPassword) ? 0 : mariadb_capabilities);
  if (ssl_request) return out;
  PutNulString(&out, user);
  if (capabilities & kClientPluginAuthLenencClientData) {
    PutLenencString(&out, auth_response);
  } else {
    PutInt1(&out, static_cast<uint8_t>(auth_response.size()));
    out += auth_response;
  }
  if (capabilities & kClientConnectWithDb) PutNulString(&out, database);
  if (capabilities & kClientPluginAuth) PutNulString(&out, auth_plugin);
  if (capabilities & kClientConnectAttrs) {
    std::string attrs;
    for (const auto& [k, v] : attributes) {
      PutLenencString(&attrs, k);
      PutLenencString(&attrs, v);
    }
    PutLenencString(&out, attrs);
  }
  return out;
}

absl::StatusOr<HandshakeResponse41> HandshakeResponse41::Decode(absl::string_view payload) {
  Reader r(payload);
  HandshakeResponse41 h;
  h.capabilities = r.Int4();
  h.max_packet_size = r.Int4();
  h.charset = r.Int1();
  r.Bytes(19);
  const uint32_t extended = r.Int4();
  if (!r.ok()) return Malformed("HandshakeResponse41");
  if (!(h.capabilities & kClientLongPassword)) h.mariadb_capabilities = extended;
  if (!(h.capabilities & kClientProtocol41)) {
    return absl::InvalidArgumentError(
        "the client does not speak protocol 4.1 (CLIENT_PROTOCOL_41)");
  }
  if (r.remaining() == 0) {
    if (!(h.capabilities & kClientSsl)) return Malformed("HandshakeResponse41");
    h.ssl_request = true;
    return h;
  }
  h.user = std::string(r.NulString());
  if (!(h.capabilities & kClientPluginAuthLenencClientData)) {
    return absl::InvalidArgumentError(
        "the client does not send length-encoded auth data "
        "(CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA): its 1-byte length cannot carry a token");
  }
  h.auth_response = std::string(r.LenencString());
  if ((h.capabilities & kClientConnectWithDb) && r.remaining() > 0)
    h.database = std::string(r.NulString());
  if ((h.capabilities & kClientPluginAuth) && r.remaining() > 0)
    h.auth_plugin = std::string(r.NulString());
  if ((h.capabilities & kClientConnectAttrs) && r.remaining() > 0) {
    Reader attrs(r.LenencString());
    while (attrs.ok() && attrs.remaining() > 0) {
      std::string key(attrs.LenencString());
      std::string value(attrs.LenencString());
      if (attrs.ok()) h.attributes.emplace_back(std::move(key), std::move(value));
    }
    if (!attrs.ok()) return Malformed("HandshakeResponse41 (connection attributes)");
  }
  if (!r.ok()) return Malformed("HandshakeResponse41");
  return h;
}

std::string OkPacket::Encode(uint8_t header) const {
  std::string out;
  PutInt1(&out, header);
  PutLenencInt(&out, affected_rows);
  PutLenencInt(&out, last_insert_id);
  PutInt2(&out, status);
  PutInt2(&out, warnings);
  out += info;
  return out;
}

absl::StatusOr<OkPacket> OkPacket::Decode(absl::string_view payload) {
  Reader r(payload);
  const uint8_t header = r.Int1();
  if (header != 0x00 && header != 0xFE) return Malformed("OK");
  OkPacket ok;
  ok.affected_rows = r.LenencInt().value_or(0);
  ok.last_insert_id = r.LenencInt().value_or(0);
  ok.status = r.Int2();
  ok.warnings = r.Int2();
  ok.info = std::string(r.Rest());
  if (!r.ok()) return Malformed("OK");
  return ok;
}

std::string ErrPacket::Encode() const {
  std::string out;
  PutInt1(&out, 0xFF);
  PutInt2(&out, code);
  out.push_back('#');
  std::string state = sql_state;
  state.resize(5, '0');
  out += state;
  out += message;
  return out;
}

absl::StatusOr<ErrPacket> ErrPacket::Decode(absl::string_view payload) {
  Reader r(payload);
  if (r.Int1() != 0xFF) return Malformed("ERR");
  ErrPacket e;
  e.code = r.Int2();
  absl::string_view rest = r.Rest();
  if (!r.ok()) return Malformed("ERR");
  if (!rest.empty() && rest[0] == '#' && rest.size() >= 6) {
    e.sql_state = std::string(rest.substr(1, 5));
    rest.remove_prefix(6);
  }
  e.message = std::string(rest);
  return e;
}

std::string AuthSwitchRequest::Encode() const {
  std::string out;
  PutInt1(&out, 0xFE);
  PutNulString(&out, plugin);
  out += data;
  return out;
}

absl::StatusOr<AuthSwitchRequest> AuthSwitchRequest::Decode(absl::string_view payload) {
  Reader r(payload);
  if (r.Int1() != 0xFE) return Malformed("AuthSwitchRequest");
  AuthSwitchRequest a;
  a.plugin = std::string(r.NulString());
  a.data = std::string(r.Rest());
  if (!r.ok() || a.plugin.empty()) return Malformed("AuthSwitchRequest");
  return a;
}

bool IsEofPacket(absl::string_view payload) {
  return !payload.empty() && static_cast<uint8_t>(payload[0]) == 0xFE && payload.size() < 9;
}
bool IsErrPacket(absl::string_view payload) {
  return !payload.empty() && static_cast<uint8_t>(payload[0]) == 0xFF;
}
bool IsOkPacket(absl::string_view payload) {
  return payload.size() >= 7 && static_cast<uint8_t>(payload[0]) == 0x00;
}

std::string ColumnDefinition::Encode() const {
  std::string out;
  for (const std::string* s : {&catalog, &schema, &table, &org_table, &name, &org_name})
    PutLenencString(&out, *s);
  PutLenencInt(&out, 0x0C);
  PutInt2(&out, charset);
  PutInt4(&out, length);
  PutInt1(&out, type);
  PutInt2(&out, flags);
  PutInt1(&out, decimals);
  PutInt2(&out, 0);
  return out;
}

absl::StatusOr<ColumnDefinition> ColumnDefinition::Decode(absl::string_view payload) {
  Reader r(payload);
  ColumnDefinition c;
  for (std::string* s : {&c.catalog, &c.schema, &c.table, &c.org_table, &c.name, &c.org_name})
    *s = std::string(r.LenencString());
  const std::optional<uint64_t> fixed = r.LenencInt();
  if (r.ok() && fixed.value_or(0) < 0x0C) return Malformed("column definition");
  c.charset = r.Int2();
  c.length = r.Int4();
  c.type = r.Int1();
  c.flags = r.Int2();
  c.decimals = r.Int1();
  if (!r.ok()) return Malformed("column definition");
  return c;
}

std::string CommandName(uint8_t command) {
  static constexpr const char* kNames[] = {
      "COM_SLEEP",
      "COM_QUIT",
      "COM_INIT_DB",
      "COM_QUERY",
      "COM_FIELD_LIST",
      "COM_CREATE_DB",
      "COM_DROP_DB",
      "COM_REFRESH",
      "COM_SHUTDOWN",
      "COM_STATISTICS",
      "COM_PROCESS_INFO",
      "COM_CONNECT",
      "COM_PROCESS_KILL",
      "COM_DEBUG",
      "COM_PING",
      "COM_TIME",
      "COM_DELAYED_INSERT",
      "COM_CHANGE_USER",
      "COM_BINLOG_DUMP",
      "COM_TABLE_DUMP",
      "COM_CONNECT_OUT",
      "COM_REGISTER_SLAVE",
      "COM_STMT_PREPARE",
      "COM_STMT_EXECUTE",
      "COM_STMT_SEND_LONG_DATA",
      "COM_STMT_CLOSE",
      "COM_STMT_RESET",
      "COM_SET_OPTION",
      "COM_STMT_FETCH",
      "COM_DAEMON",
      "COM_BINLOG_DUMP_GTID",
      "COM_RESET_CONNECTION",
  };
  if (command < sizeof(kNames) / sizeof(kNames[0])) return kNames[command];
  if (command == static_cast<uint8_t>(Command::kStmtBulkExecute)) return "COM_STMT_BULK_EXECUTE";
  return absl::StrFormat("COM_0x%02X", command);
}

}  // namespace sluice::wire::mysql
