#include "agent/mysql/session.h"

#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/mysql/refusal.h"
#include "agent/mysql/session_internal.h"
#include "common/crypto.h"
#include "common/log.h"

namespace sluice::agent::mysql::session_internal {

using wire::mysql::AuthSwitchRequest;
using wire::mysql::HandshakeResponse41;
using wire::mysql::HandshakeV10;

using namespace asio::experimental::awaitable_operators;

namespace {

constexpr char kCachingSha2[] = "caching_sha2_password";
constexpr char kClearPassword[] = "mysql_clear_password";
// What the agent's greeting says it is: MariaDB's form (the "5.5.5-" prefix keeps old MySQL
// clients on the 5.5 feature set), whatever the server behind it; the real server's version is
// in the session's start event.
constexpr char kServerVersion[] = "5.5.5-10.11.99-MariaDB-Sluice";
// SERVER_STATUS_AUTOCOMMIT: a new session's state.
constexpr uint16_t kStatusAutocommit = 0x0002;
// A token is a JWT: a few KB at most.
constexpr size_t kMaxTokenBytes = 16 << 10;

// Character sets a statement may arrive in: those where no byte of a multi-byte character can
// be an ASCII quote or backslash (utf8, utf8mb4, latin1, ascii, binary). gbk, big5, sjis and
// cp932 can hide a backslash in a character's second byte, which the agent's lexer would read
// differently from the server.
bool SafeCharset(uint8_t id) {
  return id == 8 || id == 11 || id == 33 || id == 45 || id == 46 || id == 47 || id == 48 ||
         id == 49 || id == 63 || id == 65 || id == 83 || (id >= 192 && id <= 215) || id >= 224;
}

// A scramble without NUL bytes (clients read it up to one).
std::string Scramble() {
  std::string s = RandomBytes(20);
  for (char& c : s) c = static_cast<char>(1 + static_cast<uint8_t>(c) % 126);
  return s;
}

// The agent's own connection ids, in greetings (what a client's KILL QUERY names).
std::atomic<uint32_t> next_connection_id{1};

}  // namespace

Session::Session(asio::ip::tcp::socket socket, SessionDeps deps)
    : deps_(deps),
      client_(std::move(socket), *deps.server_tls),
      started_(absl::Now()),
      recorder_(deps.config->recording, started_),
      audit_(deps.events, deps.inflight, RandomHex(8), audit::kProtocolMysql, &recorder_),
      hold_(deps.approvals, audit_.session_id()),
      admission_(deps.policy, deps.limiter, v1::PROTOCOL_MYSQL, "mysql"),
      connection_id_(next_connection_id.fetch_add(1, std::memory_order_relaxed)) {
  asio::error_code ec;
  auto ep = client_.socket().remote_endpoint(ec);
  peer_ = ec ? "unknown" : absl::StrCat(ep.address().to_string(), ":", ep.port());
}

asio::awaitable<void> Session::Run() {
  // The login must finish within the limit: a client that connects and says nothing does not
  // hold a session forever.
  auto ended = co_await (Serve() || LoginDeadline());
  absl::Status st = std::visit([](absl::Status& s) { return s; }, ended);
  if (!st.ok() && !absl::IsUnavailable(st)) {
    LogInfo("mysql session from ", peer_, " ended: ", st.message());
  }
  if (audit_.started()) {
    audit_.Ended(st.ok() ? "closed" : st.message(), absl::Now() - started_, bytes_from_client_,
                 bytes_from_server_);
  }
  if (logged_in_) deps_.kills->Unregister(connection_id_);
  client_.Close();
  if (upstream_.stream) upstream_.stream->Close();
}

asio::awaitable<absl::Status> Session::LoginDeadline() {
  asio::steady_timer timer(co_await asio::this_coro::executor, deps_.config->login_timeout);
  auto [ec] = co_await timer.async_wait(kNoThrow);
  if (ec) co_return absl::OkStatus();  // the session ended first
  if (!logged_in_) {
    client_.Close();
    if (upstream_.stream) upstream_.stream->Close();
    co_return absl::DeadlineExceededError("login not completed in time");
  }
  // Logged in: no deadline any more; this waits until the session ends and cancels it.
  timer.expires_at(asio::steady_timer::time_point::max());
  co_await timer.async_wait(kNoThrow);
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::Serve() {
  HandshakeResponse41 response;
  absl::Status st = co_await Greet(&response);
  if (st.ok()) st = co_await Admit(response);
  if (st.ok()) st = co_await LoginUpstream(response);
  if (st.ok()) st = co_await Pin();
  if (st.ok()) st = co_await Welcome(response);
  if (!st.ok()) co_return st;
  co_return co_await Commands();
}

asio::awaitable<absl::Status> Session::RefuseLogin(session::Refuse refusal) {
  const ErrorCode code = LoginError(refusal.kind);
  if (!audit_.started()) audit_.Refused(Who(), refusal, code.sql_state);
  // The client's next packet would have this sequence id; the ERR takes it.
  (void)co_await client_.WritePacket(ErrPayload(code, refusal.message), sequence_);
  co_return absl::PermissionDeniedError(refusal.message);
}

asio::awaitable<absl::Status> Session::FailLogin(RefusalKind kind, std::string message) {
  session::Refuse refusal;
  refusal.kind = kind;
  refusal.message = std::move(message);
  co_return co_await RefuseLogin(std::move(refusal));
}

asio::awaitable<absl::Status> Session::Greet(HandshakeResponse41* response) {
  HandshakeV10 greeting;
  greeting.server_version = kServerVersion;
  greeting.connection_id = connection_id_;
  scramble_ = Scramble();
  greeting.auth_data = scramble_;
  // Without CLIENT_LONG_PASSWORD, as MariaDB greets: its clients then read the extended
  // capabilities, of which the agent offers COM_STMT_BULK_EXECUTE (used only when the database
  // has it too; refused otherwise).
  greeting.capabilities = (kBaseCapabilities & ~wire::mysql::kClientLongPassword) |
                          kRelayedCapabilities | wire::mysql::kClientConnectWithDb |
                          wire::mysql::kClientConnectAttrs;
  greeting.mariadb_capabilities = wire::mysql::kMariaDbStmtBulkOperations;
  if (deps_.config->tls_available) greeting.capabilities |= wire::mysql::kClientSsl;
  greeting.charset = 45;  // utf8mb4_general_ci
  greeting.status = kStatusAutocommit;
  greeting.auth_plugin = kCachingSha2;
  absl::Status st = co_await client_.WritePacket(greeting.Encode(), 0);
  if (!st.ok()) co_return st;
  sequence_ = 1;

  auto first = co_await client_.ReadPacket(deps_.config->limits);
  if (!first.ok()) co_return first.status();
  sequence_ = static_cast<uint8_t>(first->sequence + 1);
  auto decoded = HandshakeResponse41::Decode(first->payload);
  if (!decoded.ok()) {
    co_return co_await FailLogin(RefusalKind::kProtocolError,
                                 absl::StrCat("Sluice: ", decoded.status().message()));
  }
  if (decoded->ssl_request) {
    if (!deps_.config->tls_available) {
      co_return co_await FailLogin(RefusalKind::kProtocolError,
                                   "Sluice: TLS requested, but the agent offered none");
    }
    // The client starts TLS right after its SSLRequest, without waiting for an answer.
    st = co_await client_.ServerHandshake(/*buffered_is_tls=*/true);
    if (!st.ok()) co_return st;
    auto full = co_await client_.ReadPacket(deps_.config->limits);
    if (!full.ok()) co_return full.status();
    sequence_ = static_cast<uint8_t>(full->sequence + 1);
    decoded = HandshakeResponse41::Decode(full->payload);
    if (!decoded.ok()) {
      co_return co_await FailLogin(RefusalKind::kProtocolError,
                                   absl::StrCat("Sluice: ", decoded.status().message()));
    }
  }
  *response = *std::move(decoded);
  user_ = response->user.substr(0, 256);
  connection_name_ = response->database.empty() ? user_ : response->database.substr(0, 256);
  capabilities_ = kBaseCapabilities | (response->capabilities & kRelayedCapabilities);
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::Admit(const HandshakeResponse41& response) {
  if (auto refused =
          session::Admission::CheckTransport(client_.is_tls(), deps_.config->allow_plaintext)) {
    refused->message += " (use --ssl, or ssl-mode=REQUIRED)";
    co_return co_await RefuseLogin(*std::move(refused));
  }
  if (response.capabilities &
      (wire::mysql::kClientCompress | wire::mysql::kClientZstdCompression)) {
    // Not offered in the greeting; a client that asks anyway would expect compressed packets.
    co_return co_await FailLogin(RefusalKind::kNotSupported,
                                 "Sluice: compression is not supported; connect without it");
  }
  if (!SafeCharset(response.charset)) {
    co_return co_await FailLogin(
        RefusalKind::kUnsafeSetting,
        absl::StrCat("Sluice: character set number ", response.charset,
                     " is not accepted by the agent: a character's second byte can be a "
                     "backslash or quote in it; use utf8mb4"));
  }
  if (auto refused = session::Admission::CheckAudit(deps_.events->Full())) {
    co_return co_await RefuseLogin(*std::move(refused));
  }
  if (connection_name_.empty()) {
    co_return co_await FailLogin(RefusalKind::kProtocolError,
                                 "Sluice: no database or user name names the connection");
  }
  std::optional<session::Refuse> unknown = admission_.Open(connection_name_);
  if (unknown && !response.database.empty()) co_return co_await RefuseLogin(*std::move(unknown));
  auto token = co_await ReadToken(response);
  if (!token.ok()) co_return token.status();
  if (unknown) {
    // The mariadb and mysql CLIs cancel a statement (Ctrl-C) from a second connection that logs
    // in with the same user and password but no database: when that user names no Connection,
    // the caller's token says which one (see CancelConnection).
    auto found = CancelConnection(*token);
    if (!found) co_return co_await RefuseLogin(*std::move(unknown));
    connection_name_ = *std::move(found);
    if (auto refused = admission_.Open(connection_name_)) {
      co_return co_await RefuseLogin(*std::move(refused));
    }
  }
  auto admitted = admission_.Admit(*token, absl::Now(), peer_);
  identity_ = admission_.identity();
  if (auto* refused = std::get_if<session::Refuse>(&admitted)) {
    co_return co_await RefuseLogin(std::move(*refused));
  }
  session::Admitted& caller = std::get<session::Admitted>(admitted);
  grant_ = caller.grant;
  ticket_ = std::move(caller.ticket);
  credentials_ = std::move(caller.credentials);
  co_return absl::OkStatus();
}

std::optional<std::string> Session::CancelConnection(absl::string_view token) const {
  const std::shared_ptr<const AgentPolicy>& policy = admission_.policy();
  if (!policy || !policy->verifier) return std::nullopt;
  auto identity = policy->verifier->Verify(token, absl::Now());
  if (!identity.ok()) return std::nullopt;
  // Only the Connection of the caller's own open sessions, and only when there is one: the login
  // is then admitted there like any other (Admission::Admit checks the token and the access rule
  // again), so it reaches nothing the caller could not open by naming it.
  return deps_.kills->OnlyConnectionOf(identity->issuer, identity->subject);
}

asio::awaitable<absl::StatusOr<std::string>> Session::ReadToken(
    const HandshakeResponse41& response) {
  if (!client_.is_tls()) {
    // caching_sha2_password sends a password in clear only over TLS, and the agent never asks
    // for one in clear on a plaintext connection (clients would send it).
    co_return co_await FailLogin(
        RefusalKind::kTlsRequired,
        "Sluice: the token is sent only over TLS; connect with --ssl (ssl-mode=REQUIRED)");
  }
  if (response.auth_plugin == kClearPassword) {
    // Already in clear, over TLS.
    std::string token = response.auth_response;
    if (!token.empty() && token.back() == '\0') token.pop_back();
    co_return token;
  }
  if (response.auth_plugin != kCachingSha2) {
    // Answer with caching_sha2_password instead: its reply to the scramble is not used.
    AuthSwitchRequest sw{kCachingSha2, scramble_ + std::string(1, '\0')};
    absl::Status st = co_await client_.WritePacket(sw.Encode(), sequence_, &sequence_);
    if (!st.ok()) co_return st;
    auto ignored = co_await client_.ReadPacket(deps_.config->limits);
    if (!ignored.ok()) co_return ignored.status();
    sequence_ = static_cast<uint8_t>(ignored->sequence + 1);
  }
  // AuthMoreData "perform full authentication": the client sends its password, NUL-terminated.
  absl::Status st = co_await client_.WritePacket("\x01\x04", sequence_, &sequence_);
  if (!st.ok()) co_return st;
  auto password = co_await client_.ReadPacket(deps_.config->limits);
  if (!password.ok()) co_return password.status();
  sequence_ = static_cast<uint8_t>(password->sequence + 1);
  std::string token = std::move(password->payload);
  if (!token.empty() && token.back() == '\0') token.pop_back();
  if (token.size() > kMaxTokenBytes) {
    co_return co_await FailLogin(RefusalKind::kTokenRejected,
                                 "Sluice: the password is too long to be a token");
  }
  co_return token;
}

asio::awaitable<absl::Status> Session::LoginUpstream(const HandshakeResponse41& response) {
  const v1::Connection* connection = admission_.connection();
  UpstreamLogin login;
  login.user = std::move(credentials_.username);
  login.password = std::move(credentials_.password);
  upstream_database_ = connection->upstream().database();
  current_database_ = upstream_database_;
  login.database = upstream_database_;
  login.relayed = response.capabilities & kRelayedCapabilities;
  if (!(response.capabilities & wire::mysql::kClientLongPassword)) {
    login.mariadb_relayed = response.mariadb_capabilities & wire::mysql::kMariaDbStmtBulkOperations;
  }
  login.charset = response.charset;
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto up = co_await ConnectUpstream(executor, TargetOf(*connection), login, deps_.config->limits);
  if (!up.ok()) {
    LogWarning("upstream login for connection ", connection_name_,
               " failed: ", up.status().message());
    co_return co_await FailLogin(RefusalKind::kUpstreamUnavailable,
                                 absl::StrCat("Sluice: cannot open connection \"", connection_name_,
                                              "\": ", up.status().message()));
  }
  upstream_ = *std::move(up);
  bulk_ = (upstream_.mariadb_capabilities & wire::mysql::kMariaDbStmtBulkOperations) != 0;
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::Pin() {
  PacketStream* up = upstream_.stream.get();
  const bool read_only = grant_.access == v1::ACCESS_READ;
  auto refuse = [&](absl::string_view why) {
    LogError("connection ", connection_name_, ": ", why, "; session refused");
    return FailLogin(
        RefusalKind::kUpstreamUnavailable,
        absl::StrCat("Sluice: cannot open connection \"", connection_name_, "\" safely: ", why));
  };
  if (read_only) {
    // MariaDB 10.11 knows tx_read_only (not transaction_read_only); this form works on both.
    auto set = co_await RunQuery(up, "SET SESSION TRANSACTION READ ONLY", deprecate_eof(),
                                 deps_.config->limits);
    if (!set.ok()) co_return co_await refuse(set.status().message());
  }
  auto state = co_await RunQuery(up, "SELECT @@session.sql_mode, @@session.tx_read_only",
                                 deprecate_eof(), deps_.config->limits);
  if (!state.ok() || state->rows.size() != 1 || state->rows[0].size() != 2) {
    co_return co_await refuse(state.ok() ? "the session's state could not be read"
                                         : state.status().message());
  }
  const auto& row = state->rows[0];
  lex_mode_ = LexModeFromSqlMode(row[0].value_or(""), MariaDbVersion(upstream_.server_version));
  if (read_only && row[1].value_or("0") != "1") {
    co_return co_await refuse("the database did not make the read grant's session read-only");
  }
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::Welcome(const HandshakeResponse41& response) {
  wire::mysql::OkPacket ok;
  ok.status = kStatusAutocommit;
  absl::Status st = co_await client_.WritePacket(ok.Encode(), sequence_);
  if (!st.ok()) co_return st;
  logged_in_ = true;
  deps_.kills->Register(connection_id_,
                        KillTarget{connection_name_, identity_.issuer, identity_.subject,
                                   upstream_.connection_id, hold_.Canceller()});
  LogInfo("mysql session: ", identity_.subject, " (", identity_.issuer, ") from ", peer_, " on ",
          connection_name_, " with ", AccessName(grant_.access), " access (rule ", grant_.rule,
          ")");
  audit::SessionStartEvent start;
  start.who = Who();
  start.access = AccessName(grant_.access);
  start.rule = grant_.rule;
  start.protocol_version = absl::StrCat("10 (", upstream_.server_version.substr(0, 64), ")");
  for (const auto& [k, v] : response.attributes) {
    if (k == "program_name") start.application_name = v.substr(0, 256);
  }
  SSL* ssl = client_.tls_stream().native_handle();
  start.tls_version = SSL_get_version(ssl);
  start.tls_cipher = SSL_get_cipher_name(ssl);
  start.upstream_tls = upstream_.stream->is_tls();
  if (upstream_.stream->is_tls()) {
    SSL* up = upstream_.stream->tls_stream().native_handle();
    start.upstream_tls_version = SSL_get_version(up);
    start.upstream_tls_cipher = SSL_get_cipher_name(up);
  }
  start.token_alg = identity_.algorithm;
  start.token_expires_unix = identity_.expires_unix;
  start.token_issued_unix = identity_.issued_at_unix;
  audit_.Started(std::move(start));
  gate_ = session::StatementGate(connection_name_, identity_.subject, grant_,
                                 deps_.approvals != nullptr);
  co_return absl::OkStatus();
}

audit::Who Session::Who() const {
  return audit::Who{connection_name_,  peer_,
                    client_.is_tls(),  user_,
                    identity_.subject, identity_.issuer,
                    identity_.groups,  identity_.attribution};
}

}  // namespace sluice::agent::mysql::session_internal

namespace sluice::agent::mysql {

asio::awaitable<void> RunSession(asio::ip::tcp::socket socket, SessionDeps deps) {
  socket.set_option(asio::ip::tcp::no_delay(true));
  session_internal::Session session(std::move(socket), deps);
  co_await session.Run();
}

}  // namespace sluice::agent::mysql
