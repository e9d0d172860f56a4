#include "common/wire/postgres/messages.h"

#include "absl/strings/str_cat.h"
#include "common/wire/postgres/wire.h"

namespace sluice::wire::postgres {
namespace {

// Counts in a payload can never exceed the bytes left; checking keeps hostile counts from
// driving allocations.
constexpr size_t kMaxSecretKeyBytes = 256;

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ", what, " message"));
}

// Finishes a decode: every byte consumed, nothing read past the end.
absl::Status Done(const WireReader& r, absl::string_view what) {
  if (!r.ok()) return Malformed(what);
  if (!r.AtEnd())
    return absl::InvalidArgumentError(absl::StrCat(what, " message has trailing bytes"));
  return absl::OkStatus();
}

bool CountFits(const WireReader& r, int32_t count, size_t min_bytes_each) {
  return count >= 0 && static_cast<size_t>(count) * min_bytes_each <= r.remaining();
}

}  // namespace

absl::StatusOr<StartupKind> ClassifyStartup(absl::string_view payload) {
  WireReader r(payload);
  int32_t code = r.Int32();
  if (!r.ok()) return Malformed("startup");
  switch (code) {
    case kSslRequestCode:
      return StartupKind::kSslRequest;
    case kGssEncRequestCode:
      return StartupKind::kGssEncRequest;
    case kCancelRequestCode:
      return StartupKind::kCancelRequest;
    default:
      break;
  }
  if ((code >> 16) == 3) return StartupKind::kStartup;
  return absl::InvalidArgumentError(absl::StrCat("unsupported frontend protocol ", code >> 16, ".",
                                                 code & 0xffff,
                                                 ": this server supports 3.0 to 3.2"));
}

std::optional<std::string> StartupMessage::Get(absl::string_view name) const {
  for (const auto& [k, v] : parameters) {
    if (k == name) return v;
  }
  return std::nullopt;
}

absl::StatusOr<StartupMessage> StartupMessage::Decode(absl::string_view payload) {
  WireReader r(payload);
  StartupMessage m;
  m.protocol = r.Int32();
  while (r.ok() && r.remaining() > 1) {
    std::string name = r.CString();
    std::string value = r.CString();
    if (!r.ok()) break;
    if (name.empty()) return Malformed("startup");
    m.parameters.emplace_back(std::move(name), std::move(value));
  }
  if (r.Byte() != 0) return Malformed("startup");  // the list ends with one NUL
  if (absl::Status st = Done(r, "startup"); !st.ok()) return st;
  return m;
}

std::string StartupMessage::Encode() const {
  WireWriter w;
  w.Int32(protocol);
  for (const auto& [k, v] : parameters) {
    w.CString(k);
    w.CString(v);
  }
  w.Byte(0);
  return Frame(0, w.data());
}

absl::StatusOr<CancelRequest> CancelRequest::Decode(absl::string_view payload) {
  WireReader r(payload);
  if (r.Int32() != kCancelRequestCode) return Malformed("cancel request");
  CancelRequest m;
  m.process_id = r.Int32();
  m.secret_key = r.Rest();
  if (!r.ok() || m.secret_key.size() < 4 || m.secret_key.size() > kMaxSecretKeyBytes) {
    return Malformed("cancel request");
  }
  return m;
}

std::string CancelRequest::Encode() const {
  WireWriter w;
  w.Int32(kCancelRequestCode);
  w.Int32(process_id);
  w.Bytes(secret_key);
  return Frame(0, w.data());
}

absl::StatusOr<PasswordMessage> PasswordMessage::Decode(absl::string_view payload) {
  WireReader r(payload);
  PasswordMessage m;
  m.password = r.CString();
  if (absl::Status st = Done(r, "password"); !st.ok()) return st;
  return m;
}

std::string PasswordMessage::Encode() const {
  WireWriter w;
  w.CString(password);
  return Frame('p', w.data());
}

absl::StatusOr<Query> Query::Decode(absl::string_view payload) {
  WireReader r(payload);
  Query m;
  m.sql = r.CString();
  if (absl::Status st = Done(r, "Query"); !st.ok()) return st;
  return m;
}

std::string Query::Encode() const {
  WireWriter w;
  w.CString(sql);
  return Frame('Q', w.data());
}

absl::StatusOr<Parse> Parse::Decode(absl::string_view payload) {
  WireReader r(payload);
  Parse m;
  m.statement = r.CString();
  m.query = r.CString();
  int16_t n = r.Int16();
  if (!CountFits(r, n, 4)) return Malformed("Parse");
  for (int i = 0; i < n; ++i) m.param_types.push_back(r.Int32());
  if (absl::Status st = Done(r, "Parse"); !st.ok()) return st;
  return m;
}

std::string Parse::Encode() const {
  WireWriter w;
  w.CString(statement);
  w.CString(query);
  w.Int16(static_cast<int16_t>(param_types.size()));
  for (int32_t t : param_types) w.Int32(t);
  return Frame('P', w.data());
}

absl::StatusOr<Bind> Bind::Decode(absl::string_view payload) {
  WireReader r(payload);
  Bind m;
  m.portal = r.CString();
  m.statement = r.CString();
  int16_t nf = r.Int16();
  if (!CountFits(r, nf, 2)) return Malformed("Bind");
  for (int i = 0; i < nf; ++i) m.param_formats.push_back(r.Int16());
  int16_t np = r.Int16();
  if (!CountFits(r, np, 4)) return Malformed("Bind");
  for (int i = 0; i < np; ++i) {
    int32_t len = r.Int32();
    if (len == -1) {
      m.params.push_back(std::nullopt);
    } else if (len < 0 || static_cast<size_t>(len) > r.remaining()) {
      return Malformed("Bind");
    } else {
      m.params.push_back(r.Bytes(static_cast<size_t>(len)));
    }
  }
  int16_t nr = r.Int16();
  if (!CountFits(r, nr, 2)) return Malformed("Bind");
  for (int i = 0; i < nr; ++i) m.result_formats.push_back(r.Int16());
  if (absl::Status st = Done(r, "Bind"); !st.ok()) return st;
  return m;
}

std::string Bind::Encode() const {
  WireWriter w;
  w.CString(portal);
  w.CString(statement);
  w.Int16(static_cast<int16_t>(param_formats.size()));
  for (int16_t f : param_formats) w.Int16(f);
  w.Int16(static_cast<int16_t>(params.size()));
  for (const auto& p : params) {
    if (!p) {
      w.Int32(-1);
    } else {
      w.Int32(static_cast<int32_t>(p->size()));
      w.Bytes(*p);
    }
  }
  w.Int16(static_cast<int16_t>(result_formats.size()));
  for (int16_t f : result_formats) w.Int16(f);
  return Frame('B', w.data());
}

absl::StatusOr<DescribeOrClose> DescribeOrClose::Decode(absl::string_view payload) {
  WireReader r(payload);
  DescribeOrClose m;
  m.target = static_cast<char>(r.Byte());
  m.name = r.CString();
  if (absl::Status st = Done(r, "Describe/Close"); !st.ok()) return st;
  if (m.target != 'S' && m.target != 'P') return Malformed("Describe/Close");
  return m;
}

std::string DescribeOrClose::Encode(char type) const {
  WireWriter w;
  w.Byte(static_cast<uint8_t>(target));
  w.CString(name);
  return Frame(type, w.data());
}

absl::StatusOr<Execute> Execute::Decode(absl::string_view payload) {
  WireReader r(payload);
  Execute m;
  m.portal = r.CString();
  m.max_rows = r.Int32();
  if (absl::Status st = Done(r, "Execute"); !st.ok()) return st;
  return m;
}

std::string Execute::Encode() const {
  WireWriter w;
  w.CString(portal);
  w.Int32(max_rows);
  return Frame('E', w.data());
}

absl::StatusOr<Authentication> Authentication::Decode(absl::string_view payload) {
  WireReader r(payload);
  Authentication m;
  m.code = r.Int32();
  m.data = r.Rest();
  if (!r.ok()) return Malformed("Authentication");
  return m;
}

std::string Authentication::Encode() const {
  WireWriter w;
  w.Int32(code);
  w.Bytes(data);
  return Frame('R', w.data());
}

absl::StatusOr<BackendKeyData> BackendKeyData::Decode(absl::string_view payload) {
  WireReader r(payload);
  BackendKeyData m;
  m.process_id = r.Int32();
  m.secret_key = r.Rest();
  if (!r.ok() || m.secret_key.size() < 4 || m.secret_key.size() > kMaxSecretKeyBytes) {
    return Malformed("BackendKeyData");
  }
  return m;
}

std::string BackendKeyData::Encode() const {
  WireWriter w;
  w.Int32(process_id);
  w.Bytes(secret_key);
  return Frame('K', w.data());
}

absl::StatusOr<ParameterStatus> ParameterStatus::Decode(absl::string_view payload) {
  WireReader r(payload);
  ParameterStatus m;
  m.name = r.CString();
  m.value = r.CString();
  if (absl::Status st = Done(r, "ParameterStatus"); !st.ok()) return st;
  return m;
}

std::string ParameterStatus::Encode() const {
  WireWriter w;
  w.CString(name);
  w.CString(value);
  return Frame('S', w.data());
}

absl::StatusOr<ReadyForQuery> ReadyForQuery::Decode(absl::string_view payload) {
  WireReader r(payload);
  ReadyForQuery m;
  m.status = static_cast<char>(r.Byte());
  if (absl::Status st = Done(r, "ReadyForQuery"); !st.ok()) return st;
  if (m.status != 'I' && m.status != 'T' && m.status != 'E') return Malformed("ReadyForQuery");
  return m;
}

std::string ReadyForQuery::Encode() const { return Frame('Z', absl::string_view(&status, 1)); }

std::optional<std::string> ErrorOrNotice::Get(char code) const {
  for (const auto& [c, v] : fields) {
    if (c == code) return v;
  }
  return std::nullopt;
}

absl::StatusOr<ErrorOrNotice> ErrorOrNotice::Decode(absl::string_view payload) {
  WireReader r(payload);
  ErrorOrNotice m;
  while (true) {
    uint8_t code = r.Byte();
    if (!r.ok()) return Malformed("ErrorResponse/NoticeResponse");
    if (code == 0) break;
    m.fields.emplace_back(static_cast<char>(code), r.CString());
  }
  if (absl::Status st = Done(r, "ErrorResponse/NoticeResponse"); !st.ok()) return st;
  return m;
}

std::string ErrorOrNotice::Encode(char type) const {
  WireWriter w;
  for (const auto& [c, v] : fields) {
    w.Byte(static_cast<uint8_t>(c));
    w.CString(v);
  }
  w.Byte(0);
  return Frame(type, w.data());
}

ErrorOrNotice ErrorOrNotice::Make(absl::string_view severity, absl::string_view sqlstate,
                                  absl::string_view message) {
  ErrorOrNotice m;
  m.fields = {{'S', std::string(severity)},
              {'V', std::string(severity)},
              {'C', std::string(sqlstate)},
              {'M', std::string(message)}};
  return m;
}

absl::StatusOr<NegotiateProtocolVersion> NegotiateProtocolVersion::Decode(
    absl::string_view payload) {
  WireReader r(payload);
  NegotiateProtocolVersion m;
  m.newest_minor = r.Int32();
  int32_t n = r.Int32();
  if (!CountFits(r, n, 1)) return Malformed("NegotiateProtocolVersion");
  for (int i = 0; i < n; ++i) m.unrecognized_options.push_back(r.CString());
  if (absl::Status st = Done(r, "NegotiateProtocolVersion"); !st.ok()) return st;
  return m;
}

std::string NegotiateProtocolVersion::Encode() const {
  WireWriter w;
  w.Int32(newest_minor);
  w.Int32(static_cast<int32_t>(unrecognized_options.size()));
  for (const auto& o : unrecognized_options) w.CString(o);
  return Frame('v', w.data());
}

absl::StatusOr<RowDescription> RowDescription::Decode(absl::string_view payload) {
  WireReader r(payload);
  RowDescription m;
  int16_t n = r.Int16();
  if (!CountFits(r, n, 19)) return Malformed("RowDescription");
  for (int i = 0; i < n; ++i) {
    Field f;
    f.name = r.CString();
    f.table_oid = r.Int32();
    f.column = r.Int16();
    f.type_oid = r.Int32();
    f.type_size = r.Int16();
    f.type_modifier = r.Int32();
    f.format = r.Int16();
    m.fields.push_back(std::move(f));
  }
  if (absl::Status st = Done(r, "RowDescription"); !st.ok()) return st;
  return m;
}

std::string RowDescription::Encode() const {
  WireWriter w;
  w.Int16(static_cast<int16_t>(fields.size()));
  for (const auto& f : fields) {
    w.CString(f.name);
    w.Int32(f.table_oid);
    w.Int16(f.column);
    w.Int32(f.type_oid);
    w.Int16(f.type_size);
    w.Int32(f.type_modifier);
    w.Int16(f.format);
  }
  return Frame('T', w.data());
}

absl::StatusOr<DataRow> DataRow::Decode(absl::string_view payload) {
  WireReader r(payload);
  DataRow m;
  int16_t n = r.Int16();
  if (!CountFits(r, n, 4)) return Malformed("DataRow");
  for (int i = 0; i < n; ++i) {
    int32_t len = r.Int32();
    if (len == -1) {
      m.values.push_back(std::nullopt);
    } else if (len < 0 || static_cast<size_t>(len) > r.remaining()) {
      return Malformed("DataRow");
    } else {
      m.values.push_back(r.Bytes(static_cast<size_t>(len)));
    }
  }
  if (absl::Status st = Done(r, "DataRow"); !st.ok()) return st;
  return m;
}

std::string DataRow::Encode() const {
  WireWriter w;
  w.Int16(static_cast<int16_t>(values.size()));
  for (const auto& v : values) {
    if (!v) {
      w.Int32(-1);
    } else {
      w.Int32(static_cast<int32_t>(v->size()));
      w.Bytes(*v);
    }
  }
  return Frame('D', w.data());
}

absl::StatusOr<CommandComplete> CommandComplete::Decode(absl::string_view payload) {
  WireReader r(payload);
  CommandComplete m;
  m.tag = r.CString();
  if (absl::Status st = Done(r, "CommandComplete"); !st.ok()) return st;
  return m;
}

std::string CommandComplete::Encode() const {
  WireWriter w;
  w.CString(tag);
  return Frame('C', w.data());
}

}  // namespace sluice::wire::postgres
