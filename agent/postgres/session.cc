#include "agent/postgres/session.h"

#include <algorithm>
#include <asio/experimental/awaitable_operators.hpp>
#include <functional>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/postgres/refusal.h"
#include "agent/postgres/session_internal.h"
#include "agent/postgres/session_settings.h"
#include "common/crypto.h"
#include "common/log.h"

namespace sluice::agent::postgres::session_internal {

using wire::postgres::Authentication;
using wire::postgres::CancelRequest;
using wire::postgres::ClassifyStartup;
using wire::postgres::Direction;
using wire::postgres::ErrorOrNotice;
using wire::postgres::LooksLikeTlsClientHello;
using wire::postgres::NegotiateProtocolVersion;
using wire::postgres::PasswordMessage;
using wire::postgres::ReadyForQuery;
using wire::postgres::StartupKind;

using namespace asio::experimental::awaitable_operators;

namespace {

// Startup parameters a client may pass through to the database. Everything else ("user",
// "database", "replication", "_pq_.*", unknown GUC-like names) is dropped or handled here.
bool PassThroughParameter(absl::string_view name) {
  return name == "application_name" || name == "client_encoding" || name == "DateStyle" ||
         name == "TimeZone" || name == "extra_float_digits" || name == "search_path" ||
         name == "IntervalStyle" || name == "options" || name == "datestyle" ||
         name == "timezone" || name == "intervalstyle";
}

bool Truthy(absl::string_view v) {
  std::string l = absl::AsciiStrToLower(v);
  return !(l.empty() || l == "false" || l == "0" || l == "off" || l == "no");
}

}  // namespace

Session::Session(asio::ip::tcp::socket socket, SessionDeps deps)
    : deps_(deps),
      client_(std::move(socket), *deps.server_tls),
      started_(absl::Now()),
      tracker_([this](StatementRecord&& r) { completed_.push_back(std::move(r)); }),
      recorder_(deps.config->recording, started_),
      audit_(deps.events, deps.inflight, RandomHex(8), audit::kProtocolPostgres, &recorder_),
      hold_(deps.approvals, audit_.session_id()),
      admission_(deps.policy, deps.limiter, v1::PROTOCOL_POSTGRES, "postgres") {
  asio::error_code ec;
  auto ep = client_.socket().remote_endpoint(ec);
  peer_ = ec ? "unknown" : absl::StrCat(ep.address().to_string(), ":", ep.port());
}

asio::awaitable<void> Session::Run() {
  // Login (TLS, startup, token, upstream) must finish within the limit: a client that opens a
  // connection and says nothing does not hold a session forever.
  auto ended = co_await (Serve() || LoginDeadline());
  absl::Status st = std::visit([](absl::Status& s) { return s; }, ended);
  if (!st.ok() && !absl::IsUnavailable(st)) {
    LogInfo("postgres session from ", peer_, " ended: ", st.message());
  }
  if (audit_.started()) {
    tracker_.Abandon(absl::Now());
    EmitCompleted();
    audit_.Ended(st.ok() ? "closed" : st.message(), absl::Now() - started_, bytes_from_client_,
                 bytes_from_server_);
  }
  if (agent_key_.process_id != 0) deps_.cancels->Unregister(agent_key_.process_id);
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

asio::awaitable<absl::Status> Session::Refused(session::Refuse refusal, const char* sqlstate) {
  const char* code = sqlstate != nullptr ? sqlstate : LoginSqlState(refusal.kind);
  if (!audit_.started()) audit_.Refused(Who(), refusal, code);
  std::string wire = ErrorOrNotice::Make("FATAL", code, refusal.message).Encode('E');
  // The session ends with its own error; a client gone by now changes nothing.
  (void)co_await client_.Write(wire);
  co_return absl::PermissionDeniedError(refusal.message);
}

asio::awaitable<absl::Status> Session::Fatal(RefusalKind kind, std::string message) {
  session::Refuse refusal;
  refusal.kind = kind;
  refusal.message = std::move(message);
  co_return co_await Refused(std::move(refusal));
}

asio::awaitable<absl::Status> Session::Serve() {
  StartupMessage startup;
  absl::Status st = co_await ReadStartup(&startup);
  if (st.ok()) st = co_await Admit(startup);
  if (st.ok()) st = co_await LoginUpstream(startup);
  if (st.ok()) st = co_await Welcome(startup);
  if (!st.ok()) co_return st;
  // Both directions until either ends; the other is then cancelled.
  auto ended = co_await (RelayFrontend() || RelayBackend());
  co_return std::visit([](absl::Status& s) { return s; }, ended);
}

asio::awaitable<absl::Status> Session::ReadStartup(StartupMessage* startup) {
  while (true) {
    if (!client_.is_tls() && client_.buffer().empty()) {
      // PostgreSQL 17 direct TLS (sslnegotiation=direct) starts with a ClientHello instead of
      // SSLRequest: look at the first byte without consuming it, so OpenSSL sees it whole.
      auto first = co_await client_.PeekByte();
      if (!first.ok()) co_return first.status();
      if (LooksLikeTlsClientHello(std::string(1, *first))) {
        if (!deps_.config->tls_available) {
          co_return absl::InvalidArgumentError("direct TLS requested but no certificate is loaded");
        }
        absl::Status st = co_await client_.ServerHandshake();
        if (!st.ok()) co_return st;
        continue;
      }
    }
    auto m = co_await client_.ReadMessage(true, Direction::kFrontend, limits());
    if (!m.ok()) co_return m.status();
    auto kind = ClassifyStartup(m->payload);
    if (!kind.ok()) {
      co_return co_await Fatal(RefusalKind::kProtocolError, std::string(kind.status().message()));
    }
    if (*kind == StartupKind::kSslRequest) {
      if (client_.is_tls() || !deps_.config->tls_available) {
        absl::Status st = co_await client_.Write("N");
        if (!st.ok()) co_return st;
        continue;
      }
      absl::Status st = co_await client_.Write("S");
      if (!st.ok()) co_return st;
      st = co_await client_.ServerHandshake();
      if (!st.ok()) co_return st;
      continue;
    }
    if (*kind == StartupKind::kGssEncRequest) {
      absl::Status st = co_await client_.Write("N");
      if (!st.ok()) co_return st;
      continue;
    }
    if (*kind == StartupKind::kCancelRequest) {
      co_await HandleCancel(m->payload);
      co_return absl::UnavailableError("cancel request handled");
    }
    auto s = StartupMessage::Decode(m->payload);
    if (!s.ok()) {
      co_return co_await Fatal(RefusalKind::kProtocolError, std::string(s.status().message()));
    }
    *startup = *std::move(s);
    co_return absl::OkStatus();
  }
}

asio::awaitable<absl::Status> Session::Admit(const StartupMessage& startup) {
  if (auto refused =
          session::Admission::CheckTransport(client_.is_tls(), deps_.config->allow_plaintext)) {
    refused->message += " (use sslmode=require)";  // how libpq asks for it
    co_return co_await Refused(*std::move(refused));
  }

  // Protocol version: 3.0 and 3.2 are spoken; newer minors and _pq_ options are negotiated down.
  int minor = startup.protocol & 0xffff;
  std::vector<std::string> unknown_options;
  for (const auto& [k, v] : startup.parameters) {
    if (absl::StartsWith(k, "_pq_.")) unknown_options.push_back(k);
  }
  if (minor > 2 || !unknown_options.empty()) {
    std::string negotiate = NegotiateProtocolVersion{std::min(minor, 2), unknown_options}.Encode();
    absl::Status st = co_await client_.Write(negotiate);
    if (!st.ok()) co_return st;
  }
  protocol_minor_ = std::min(minor, 2);

  if (auto r = startup.Get("replication"); r && Truthy(*r)) {
    co_return co_await Fatal(RefusalKind::kNotSupported,
                             "Sluice: replication connections are not supported");
  }
  std::string database = startup.Get("database").value_or("");
  std::string user = startup.Get("user").value_or("");
  startup_user_ = user;
  connection_name_ = database.empty() ? user : database;
  if (auto refused = session::Admission::CheckAudit(deps_.events->Full())) {
    co_return co_await Refused(*std::move(refused));
  }
  if (user.empty()) {
    session::Refuse refused;
    refused.kind = RefusalKind::kProtocolError;
    refused.message = "Sluice: no user name given";
    co_return co_await Refused(std::move(refused), "28000");  // as PostgreSQL says it
  }
  if (database.empty()) database = user;  // libpq's default, as PostgreSQL does
  if (auto refused = admission_.Open(database)) co_return co_await Refused(*std::move(refused));

  // The caller's OIDC token, as a cleartext password (over TLS, or plaintext only where the
  // listener explicitly allows it).
  std::string ask = Authentication{Authentication::kCleartextPassword, ""}.Encode();
  absl::Status st = co_await client_.Write(ask);
  if (!st.ok()) co_return st;
  auto pw = co_await client_.ReadMessage(false, Direction::kFrontend, limits());
  if (!pw.ok()) co_return pw.status();
  if (pw->type != 'p') {
    co_return co_await Fatal(RefusalKind::kProtocolError, "Sluice: expected a password message");
  }
  auto password = PasswordMessage::Decode(pw->payload);
  if (!password.ok()) {
    co_return co_await Fatal(RefusalKind::kProtocolError, std::string(password.status().message()));
  }
  auto admitted = admission_.Admit(password->password, absl::Now(), peer_);
  identity_ = admission_.identity();
  if (auto* refused = std::get_if<session::Refuse>(&admitted))
    co_return co_await Refused(std::move(*refused));
  session::Admitted& caller = std::get<session::Admitted>(admitted);
  grant_ = caller.grant;
  session_ticket_ = std::move(caller.ticket);
  credentials_ = std::move(caller.credentials);
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::LoginUpstream(const StartupMessage& startup) {
  const v1::Connection* connection = admission_.connection();
  const std::string& database = connection_name_;
  UpstreamLogin login;
  login.user = std::move(credentials_.username);
  login.password = std::move(credentials_.password);
  login.database = connection->upstream().database().empty() ? connection->name()
                                                             : connection->upstream().database();
  // The settings that decide how the server reads a statement are pinned (session_settings.h);
  // a read grant's session is read-only in the database too.
  const bool read_only = grant_.access == v1::ACCESS_READ;
  std::string options;
  for (const auto& [k, v] : startup.parameters) {
    if (k == "options") {
      auto checked = CheckStartupOptions(v, read_only);
      if (!checked.ok()) {
        co_return co_await Fatal(RefusalKind::kUnsafeSetting,
                                 absl::StrCat("Sluice: ", checked.status().message()));
      }
      options = *std::move(checked);
    } else if (PassThroughParameter(k)) {
      if (absl::EqualsIgnoreCase(k, "client_encoding") && !AsciiSafeClientEncoding(v)) {
        co_return co_await Fatal(
            RefusalKind::kUnsafeSetting,
            absl::StrCat("Sluice: client_encoding \"", v.substr(0, 64),
                         "\" is not accepted by the agent: a character's second byte can "
                         "be a backslash or quote in it; use UTF8"));
      }
      login.parameters.emplace_back(k, v);
    }
  }
  absl::StrAppend(&options, options.empty() ? "" : " ", PinnedOptions(read_only));
  login.parameters.emplace_back("options", options);
  if (std::none_of(login.parameters.begin(), login.parameters.end(),
                   [](const auto& p) { return p.first == "application_name"; })) {
    login.parameters.emplace_back("application_name", "sluice");
  }
  UpstreamTarget target = TargetOf(*connection);
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto up = co_await ConnectUpstream(executor, target, login, limits());
  if (!up.ok()) {
    LogWarning("upstream login for connection ", database, " failed: ", up.status().message());
    co_return co_await Fatal(
        RefusalKind::kUpstreamUnavailable,
        absl::StrCat("Sluice: cannot open connection \"", database, "\": ", up.status().message()));
  }
  upstream_ = *std::move(up);
  for (const auto& p : upstream_.parameters) {
    absl::Status problem = ParameterStatusProblem(p.name, p.value, read_only);
    if (!problem.ok()) {
      LogError("connection ", database, ": ", problem.message(), " at login; session refused");
      co_return co_await Fatal(RefusalKind::kUpstreamUnavailable,
                               absl::StrCat("Sluice: cannot open connection \"", database,
                                            "\" safely: ", problem.message()));
    }
  }
  catalog_ = std::make_unique<CatalogResolver>(target, login, limits());
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::Welcome(const StartupMessage& startup) {
  UpstreamTarget target = TargetOf(*admission_.connection());
  auto local = std::make_shared<std::function<bool()>>(hold_.Canceller());
  agent_key_ = deps_.cancels->Register(CancelTarget{target, upstream_.key, local},
                                       protocol_minor_ >= 2 ? 32 : 4);
  std::string hello = Authentication{Authentication::kOk, ""}.Encode();
  for (const auto& p : upstream_.parameters) hello += p.Encode();
  hello += agent_key_.Encode();
  for (const auto& n : upstream_.notices) hello += n;
  hello += ReadyForQuery{upstream_.transaction_status}.Encode();
  absl::Status st = co_await client_.Write(hello);
  if (!st.ok()) co_return st;
  logged_in_ = true;
  LogInfo("postgres session: ", identity_.subject, " (", identity_.issuer, ") from ", peer_, " on ",
          connection_name_, " with ", AccessName(grant_.access), " access (rule ", grant_.rule,
          ")");
  audit::SessionStartEvent start;
  start.who = Who();
  start.access = AccessName(grant_.access);
  start.rule = grant_.rule;
  start.protocol_version = absl::StrCat("3.", protocol_minor_);
  start.application_name = startup.Get("application_name").value_or("");
  TlsOf(client_, &start.tls_version, &start.tls_cipher);
  start.upstream_tls = upstream_.stream->is_tls();
  TlsOf(*upstream_.stream, &start.upstream_tls_version, &start.upstream_tls_cipher);
  start.token_alg = identity_.algorithm;
  start.token_expires_unix = identity_.expires_unix;
  start.token_issued_unix = identity_.issued_at_unix;
  audit_.Started(std::move(start));
  gate_ = session::StatementGate(connection_name_, identity_.subject, grant_,
                                 deps_.approvals != nullptr);
  // The recording starts with the first message after the login (the agent's cancel key in the
  // login answer is not recorded).
  if (recorder_.enabled()) client_.RecordWrites(&recorder_);
  co_return absl::OkStatus();
}

audit::Who Session::Who() const {
  return audit::Who{connection_name_,  peer_,
                    client_.is_tls(),  startup_user_,
                    identity_.subject, identity_.issuer,
                    identity_.groups,  identity_.attribution};
}

void Session::TlsOf(Stream& s, std::string* version, std::string* cipher) {
  if (!s.is_tls()) return;
  SSL* ssl = s.tls_stream().native_handle();
  *version = SSL_get_version(ssl);
  *cipher = SSL_get_cipher_name(ssl);
}

asio::awaitable<absl::Status> Session::EndUnaudited() {
  std::string wire =
      ErrorOrNotice::Make("FATAL", "53000",
                          "Sluice: the audit trail cannot take this session's events (the agent's "
                          "audit spool is full or failing); the session ends")
          .Encode('E');
  // The session ends with its own error; a client gone by now changes nothing.
  (void)co_await client_.Write(wire);
  co_return absl::ResourceExhaustedError("audit buffer full: session ended unaudited");
}

asio::awaitable<void> Session::HandleCancel(const std::string& payload) {
  auto req = CancelRequest::Decode(payload);
  if (!req.ok()) co_return;
  auto target = deps_.cancels->Lookup(req->process_id, req->secret_key);
  if (!target) {
    LogInfo("cancel request from ", peer_, " with an unknown key ignored");
    co_return;
  }
  if (target->local && (*target->local)()) co_return;  // a held statement, withdrawn
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  absl::Status st = co_await SendUpstreamCancel(executor, target->target, target->upstream_key);
  if (!st.ok()) LogWarning("forwarding a cancel request failed: ", st.message());
}

}  // namespace sluice::agent::postgres::session_internal

namespace sluice::agent::postgres {

asio::awaitable<void> RunSession(asio::ip::tcp::socket socket, SessionDeps deps) {
  socket.set_option(asio::ip::tcp::no_delay(true));
  session_internal::Session session(std::move(socket), deps);
  co_await session.Run();
}

}  // namespace sluice::agent::postgres
