#include "agent/mysql/upstream.h"

#include "absl/strings/str_cat.h"
#include "common/wire/mysql/auth.h"

namespace sluice::agent::mysql {

using wire::mysql::AuthSwitchRequest;
using wire::mysql::DecodeLimits;
using wire::mysql::ErrPacket;
using wire::mysql::HandshakeResponse41;
using wire::mysql::HandshakeV10;
using wire::mysql::IsErrPacket;
using wire::mysql::OkPacket;

namespace {

constexpr char kNative[] = "mysql_native_password";
constexpr char kCachingSha2[] = "caching_sha2_password";
constexpr char kClear[] = "mysql_clear_password";
constexpr char kEd25519[] = "client_ed25519";
constexpr int kMaxAuthRounds = 8;

// The scramble `plugin` answers over: servers end the 20-byte ones with a NUL that is not part of
// it; client_ed25519's is 32 bytes of any value, a last 0 included.
std::string ScrambleOf(absl::string_view plugin, absl::string_view data) {
  if (plugin == kEd25519) return std::string(data.substr(0, 32));
  if (!data.empty() && data.back() == '\0') data.remove_suffix(1);
  return std::string(data);
}

// The answer to `plugin`'s first challenge; an error names a method the agent cannot use.
absl::StatusOr<std::string> FirstAnswer(absl::string_view plugin, const std::string& password,
                                        absl::string_view scramble, bool tls) {
  if (plugin == kNative) return wire::mysql::NativePasswordReply(password, scramble.substr(0, 20));
  if (plugin == kCachingSha2)
    return wire::mysql::CachingSha2Reply(password, scramble.substr(0, 20));
  if (plugin == kClear) {
    if (!tls) {
      return absl::FailedPreconditionError(
          "the database asks for a cleartext password on a connection without TLS; set the "
          "connection's upstream.tls to require or verify_full");
    }
    return absl::StrCat(password, absl::string_view("\0", 1));
  }
  if (plugin == kEd25519) return wire::mysql::Ed25519PasswordReply(password, scramble);
  return absl::UnimplementedError(absl::StrCat("the database asks for the authentication method \"",
                                               plugin.substr(0, 64),
                                               "\", which the agent does not speak"));
}

// The greeting, refused when it is an error or lacks what the agent needs.
absl::StatusOr<HandshakeV10> ReadGreeting(const OwnedPacket& p) {
  if (IsErrPacket(p.payload)) {
    return absl::UnavailableError(
        absl::StrCat("the database refused the connection: ", ServerError(p.payload)));
  }
  auto greeting = HandshakeV10::Decode(p.payload);
  if (!greeting.ok()) return greeting.status();
  const uint32_t needed = wire::mysql::kClientProtocol41 | wire::mysql::kClientSecureConnection |
                          wire::mysql::kClientPluginAuth;
  if ((greeting->capabilities & needed) != needed) {
    return absl::FailedPreconditionError(
        "the database does not speak protocol 4.1 with authentication plugins");
  }
  return greeting;
}

// The capabilities asked for upstream: the base, the client's relayed ones, TLS and a database
// when wanted; refused when the server lacks one the client's session depends on.
absl::StatusOr<uint32_t> Negotiate(const HandshakeV10& greeting, const UpstreamLogin& login,
                                   bool tls) {
  uint32_t caps = kBaseCapabilities | login.relayed;
  if (!login.database.empty()) caps |= wire::mysql::kClientConnectWithDb;
  if (tls) caps |= wire::mysql::kClientSsl;
  if ((login.relayed & wire::mysql::kClientDeprecateEof) &&
      !(greeting.capabilities & wire::mysql::kClientDeprecateEof)) {
    return absl::FailedPreconditionError(
        "the client asked for CLIENT_DEPRECATE_EOF, which the database does not support");
  }
  return caps & (greeting.capabilities | wire::mysql::kClientMultiStatements);
}

// caching_sha2_password's AuthMoreData after the first answer: 0x03 (fast path passed), 0x04
// (full authentication: the password over TLS, or RSA-encrypted under the server's key).
struct Sha2State {
  bool waiting_for_key = false;
};

}  // namespace

std::string ServerError(absl::string_view payload) {
  auto e = ErrPacket::Decode(payload);
  if (!e.ok()) return "a malformed error";
  return absl::StrCat(e->message.substr(0, 512), " (error ", e->code, ", SQLSTATE ", e->sql_state,
                      ")");
}

asio::awaitable<absl::StatusOr<UpstreamSession>> ConnectUpstream(asio::any_io_executor executor,
                                                                 const UpstreamTarget& target,
                                                                 const UpstreamLogin& login,
                                                                 const DecodeLimits& limits) {
  auto dialed = co_await net::Dial(executor, target);
  if (!dialed.ok()) co_return dialed.status();
  UpstreamSession session;
  session.tls_context = std::move(dialed->tls_context);
  session.stream = std::make_unique<PacketStream>(std::move(dialed->socket), *session.tls_context);
  PacketStream& s = *session.stream;

  auto first = co_await s.ReadPacket(limits);
  if (!first.ok()) co_return first.status();
  auto greeting = ReadGreeting(*first);
  if (!greeting.ok()) co_return greeting.status();
  session.connection_id = greeting->connection_id;
  session.server_version = greeting->server_version;
  const bool tls = target.tls != v1::UPSTREAM_TLS_DISABLE;
  if (tls && !(greeting->capabilities & wire::mysql::kClientSsl)) {
    co_return absl::FailedPreconditionError(
        "the database does not accept TLS, but the connection requires it (upstream.tls)");
  }
  auto caps = Negotiate(*greeting, login, tls);
  if (!caps.ok()) co_return caps.status();
  session.capabilities = *caps;

  HandshakeResponse41 response;
  response.capabilities = *caps;
  // MariaDB's extended capabilities go in a field that only a MariaDB greeting defines.
  if (!(*caps & wire::mysql::kClientLongPassword)) {
    session.mariadb_capabilities = login.mariadb_relayed & greeting->mariadb_capabilities;
    response.mariadb_capabilities = session.mariadb_capabilities;
  }
  response.max_packet_size = 1 << 30;
  response.charset = login.charset;
  uint8_t seq = static_cast<uint8_t>(first->sequence + 1);
  if (tls) {
    absl::Status st = net::PrepareClientTls(target, session.tls_context.get(), &s);
    if (!st.ok()) co_return st;
    response.ssl_request = true;
    st = co_await s.WritePacket(response.Encode(), seq, &seq);
    if (!st.ok()) co_return st;
    st = co_await s.ClientHandshake();
    if (!st.ok()) co_return st;
    response.ssl_request = false;
  }
  std::string plugin = greeting->auth_plugin.empty() ? kNative : greeting->auth_plugin;
  std::string scramble = ScrambleOf(plugin, greeting->auth_data);
  auto answer = FirstAnswer(plugin, login.password, scramble, tls);
  // A method the agent cannot answer first may still be switched away from: answer nothing.
  response.auth_plugin = plugin;
  response.auth_response = answer.ok() ? *answer : "";
  response.user = login.user;
  response.database = login.database;
  absl::Status st = co_await s.WritePacket(response.Encode(), seq, &seq);
  if (!st.ok()) co_return st;

  Sha2State sha2;
  for (int round = 0; round < kMaxAuthRounds; ++round) {
    auto p = co_await s.ReadPacket(limits);
    if (!p.ok()) co_return p.status();
    seq = static_cast<uint8_t>(p->sequence + 1);
    const uint8_t header = p->payload.empty() ? 0xFF : static_cast<uint8_t>(p->payload[0]);
    if (header == 0x00) {
      if (!OkPacket::Decode(p->payload).ok()) co_return absl::InvalidArgumentError("malformed OK");
      session.auth_plugin = plugin;
      co_return session;
    }
    if (header == 0xFF) {
      co_return absl::PermissionDeniedError(
          absl::StrCat("the database refused the login: ", ServerError(p->payload)));
    }
    std::string reply;
    if (header == 0xFE) {
      auto sw = AuthSwitchRequest::Decode(p->payload);
      if (!sw.ok()) co_return sw.status();
      plugin = sw->plugin;
      scramble = ScrambleOf(plugin, sw->data);
      auto next = FirstAnswer(plugin, login.password, scramble, tls);
      if (!next.ok()) co_return next.status();
      reply = *std::move(next);
    } else if (header == 0x01 && plugin == kCachingSha2 && p->payload.size() >= 2) {
      absl::string_view data = absl::string_view(p->payload).substr(1);
      if (sha2.waiting_for_key) {
        auto encrypted = wire::mysql::Sha2RsaReply(login.password, scramble, data);
        if (!encrypted.ok()) {
          co_return absl::FailedPreconditionError(absl::StrCat(
              "the database's RSA key for caching_sha2_password: ", encrypted.status().message()));
        }
        reply = *std::move(encrypted);
        sha2.waiting_for_key = false;
      } else if (data == "\x03") {
        continue;  // the fast path passed: OK follows
      } else if (data == "\x04" && tls) {
        reply = absl::StrCat(login.password, absl::string_view("\0", 1));
      } else if (data == "\x04") {
        reply = "\x02";  // the server's public key, please
        sha2.waiting_for_key = true;
      } else {
        co_return absl::InvalidArgumentError("unexpected caching_sha2_password data");
      }
    } else {
      co_return absl::InvalidArgumentError(
          absl::StrCat("unexpected packet during the login (", plugin, ")"));
    }
    st = co_await s.WritePacket(reply, seq, &seq);
    if (!st.ok()) co_return st;
  }
  co_return absl::InvalidArgumentError("the login took too many authentication rounds");
}

asio::awaitable<absl::StatusOr<QueryResult>> RunQuery(PacketStream* stream, absl::string_view sql,
                                                      bool deprecate_eof,
                                                      const DecodeLimits& limits) {
  std::string command(1, static_cast<char>(wire::mysql::Command::kQuery));
  command.append(sql.data(), sql.size());
  absl::Status st = co_await stream->WritePacket(command, 0);
  if (!st.ok()) co_return st;
  QueryResult result;
  auto p = co_await stream->ReadPacket(limits);
  if (!p.ok()) co_return p.status();
  if (IsErrPacket(p->payload)) co_return absl::FailedPreconditionError(ServerError(p->payload));
  if (wire::mysql::IsOkPacket(p->payload)) {
    auto ok = OkPacket::Decode(p->payload);
    if (!ok.ok()) co_return ok.status();
    result.affected_rows = ok->affected_rows;
    co_return result;
  }
  wire::mysql::Reader r(p->payload);
  auto count = r.LenencInt();
  if (!r.ok() || !count || *count == 0 || *count > 4096) {
    co_return absl::InvalidArgumentError("malformed result set header");
  }
  for (uint64_t i = 0; i < *count; ++i) {
    auto c = co_await stream->ReadPacket(limits);
    if (!c.ok()) co_return c.status();
    auto def = wire::mysql::ColumnDefinition::Decode(c->payload);
    if (!def.ok()) co_return def.status();
    result.columns.push_back(def->name);
  }
  if (!deprecate_eof) {
    auto eof = co_await stream->ReadPacket(limits);
    if (!eof.ok()) co_return eof.status();
    if (!wire::mysql::IsEofPacket(eof->payload)) co_return absl::InvalidArgumentError("no EOF");
  }
  while (true) {
    auto row = co_await stream->ReadPacket(limits);
    if (!row.ok()) co_return row.status();
    const absl::string_view payload = row->payload;
    if (IsErrPacket(payload)) co_return absl::FailedPreconditionError(ServerError(payload));
    if (!payload.empty() && static_cast<uint8_t>(payload[0]) == 0xFE &&
        payload.size() < wire::mysql::kMaxPayloadPerPacket &&
        (payload.size() < 9 || deprecate_eof)) {
      co_return result;
    }
    wire::mysql::Reader values(payload);
    std::vector<std::optional<std::string>> out;
    for (uint64_t i = 0; i < *count; ++i) {
      if (values.PeekNull()) {
        values.Int1();
        out.emplace_back(std::nullopt);
      } else {
        out.emplace_back(std::string(values.LenencString()));
      }
    }
    if (!values.ok() || values.remaining() != 0) {
      co_return absl::InvalidArgumentError("malformed text row");
    }
    result.rows.push_back(std::move(out));
  }
}

}  // namespace sluice::agent::mysql
