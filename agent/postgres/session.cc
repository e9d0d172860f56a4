#include "agent/postgres/session.h"

#include <asio/experimental/awaitable_operators.hpp>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <functional>
#include <optional>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/auth/authorizer.h"
#include "agent/masking/policy.h"
#include "agent/postgres/catalog.h"
#include "agent/postgres/fifo.h"
#include "agent/postgres/guardrails.h"
#include "agent/postgres/lineage_masking.h"
#include "agent/postgres/result_masking.h"
#include "agent/postgres/result_router.h"
#include "agent/postgres/session_settings.h"
#include "agent/postgres/sql_analysis.h"
#include "agent/postgres/statement_tracker.h"
#include "agent/postgres/upstream.h"
#include "agent/test_faults.h"
#include "common/crypto.h"
#include "common/policy/validation.h"
#include "common/json_writer.h"
#include "common/log.h"
#include "common/sql/lexer.h"
#include "common/wire/postgres/messages.h"
#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres {

using wire::postgres::Authentication;
using wire::postgres::BackendKeyData;
using wire::postgres::Bind;
using wire::postgres::CancelRequest;
using wire::postgres::ClassifyStartup;
using wire::postgres::DecodeFrame;
using wire::postgres::DecodeLimits;
using wire::postgres::DecodeResult;
using wire::postgres::DecodeStatus;
using wire::postgres::DescribeOrClose;
using wire::postgres::Direction;
using wire::postgres::ErrorOrNotice;
using wire::postgres::LooksLikeTlsClientHello;
using wire::postgres::NegotiateProtocolVersion;
using wire::postgres::ParameterStatus;
using wire::postgres::PasswordMessage;
using wire::postgres::Query;
using wire::postgres::RawMessage;
using wire::postgres::ReadyForQuery;
using wire::postgres::RowDescription;
using wire::postgres::StartupKind;
using wire::postgres::StartupMessage;
using wire::postgres::WireReader;

namespace {

using namespace asio::experimental::awaitable_operators;

// Startup parameters a client may pass through to the database. Everything else ("user",
// "database", "replication", "_pq_.*", unknown GUC-like names) is dropped or handled here.
bool PassThroughParameter(absl::string_view name) {
  return name == "application_name" || name == "client_encoding" || name == "DateStyle" ||
         name == "TimeZone" || name == "extra_float_digits" || name == "search_path" ||
         name == "IntervalStyle" || name == "options" || name == "datestyle" ||
         name == "timezone" || name == "intervalstyle";
}

// Whether `sql` has the word COPY in any case (a cheap test before parsing for COPY options).
bool MentionsCopy(absl::string_view sql) {
  for (size_t i = 0; i + 4 <= sql.size(); ++i) {
    if ((sql[i] | 0x20) == 'c' && absl::EqualsIgnoreCase(sql.substr(i, 4), "copy")) return true;
  }
  return false;
}

bool Truthy(absl::string_view v) {
  std::string l = absl::AsciiStrToLower(v);
  return !(l.empty() || l == "false" || l == "0" || l == "off" || l == "no");
}

// The whole life of one client connection.
class Session {
 public:
  Session(asio::ip::tcp::socket socket, SessionDeps deps)
      : deps_(deps),
        client_(std::move(socket), *deps.server_tls),
        session_id_(RandomHex(8)),
        started_(absl::Now()),
        tracker_([this](StatementRecord&& r) { completed_.push_back(std::move(r)); }),
        recorder_(deps.config->recording, started_) {
    asio::error_code ec;
    auto ep = client_.socket().remote_endpoint(ec);
    peer_ = ec ? "unknown" : absl::StrCat(ep.address().to_string(), ":", ep.port());
  }

  asio::awaitable<void> Run() {
    // Login (TLS, startup, token, upstream) must finish within the limit: a client that opens a
    // connection and says nothing does not hold a session forever.
    auto ended = co_await (Serve() || LoginDeadline());
    absl::Status st = std::visit([](absl::Status& s) { return s; }, ended);
    if (!st.ok() && !absl::IsUnavailable(st)) {
      LogInfo("postgres session from ", peer_, " ended: ", st.message());
    }
    if (started_session_) {
      tracker_.Abandon(absl::Now());
      EmitCompleted();
      nlohmann::json end = {{"reason", st.ok() ? "closed" : std::string(st.message())},
                            {"duration_ms", absl::ToDoubleMilliseconds(absl::Now() - started_)},
                            {"statements", statements_},
                            {"bytes_from_client", bytes_from_client_},
                            {"bytes_from_server", bytes_from_server_}};
      Emit("session_end", end);
    }
    if (agent_key_.process_id != 0) deps_.cancels->Unregister(agent_key_.process_id);
    client_.Close();
    if (upstream_.stream) upstream_.stream->Close();
  }

 private:
  const DecodeLimits& limits() const { return deps_.config->limits; }

  asio::awaitable<absl::Status> LoginDeadline() {
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

  // Sends a FATAL ErrorResponse and ends the session. Arguments are taken by value: they live in
  // the coroutine frame. (Throughout the data path, values passed into a co_await expression are
  // named locals, never temporaries: GCC 12 mis-destroys temporaries inside co_await.)
  asio::awaitable<absl::Status> Fatal(std::string sqlstate, std::string message) {
    if (!started_session_) {
      nlohmann::json refused = Who();
      refused["reason"] = message;
      refused["sqlstate"] = sqlstate;
      if (!refusal_kind_.empty()) refused["refusal"] = refusal_kind_;
      Emit("session_refused", refused);
    }
    std::string wire = ErrorOrNotice::Make("FATAL", sqlstate, message).Encode('E');
    co_await client_.Write(wire);
    co_return absl::PermissionDeniedError(message);
  }

  asio::awaitable<absl::Status> Serve() {
    // Pre-startup: TLS negotiation and cancel requests, until a StartupMessage arrives.
    StartupMessage startup;
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
      if (!kind.ok()) co_return co_await Fatal("08P01", std::string(kind.status().message()));
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
      if (!s.ok()) co_return co_await Fatal("08P01", std::string(s.status().message()));
      startup = *std::move(s);
      break;
    }
    if (!client_.is_tls() && !deps_.config->allow_plaintext) {
      co_return co_await Fatal("28000", "Sluice: this listener requires TLS (use sslmode=require)");
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
      co_return co_await Fatal("0A000", "Sluice: replication connections are not supported");
    }
    std::string database = startup.Get("database").value_or("");
    std::string user = startup.Get("user").value_or("");
    startup_user_ = user;
    connection_name_ = database.empty() ? user : database;
    if (deps_.events->Full()) {
      co_return co_await Fatal("53300", "Sluice: the agent cannot record audit events now (its buffer or spool is "
                                        "full, or the spool cannot be written); try again later");
    }
    if (user.empty()) co_return co_await Fatal("28000", "Sluice: no user name given");
    if (database.empty()) database = user;  // libpq's default, as PostgreSQL does

    policy_ = deps_.policy->Get();
    const v1::Connection* connection =
        policy_ ? policy_->FindConnection(database, v1::PROTOCOL_POSTGRES) : nullptr;
    if (connection == nullptr) {
      co_return co_await Fatal("3D000", absl::StrCat("Sluice: connection \"", database,
                                                     "\" does not exist on this agent"));
    }
    connection_ = connection;

    // The caller's OIDC token, as a cleartext password (over TLS, or plaintext only where the
    // listener explicitly allows it).
    std::string ask = Authentication{Authentication::kCleartextPassword, ""}.Encode();
    absl::Status st = co_await client_.Write(ask);
    if (!st.ok()) co_return st;
    auto pw = co_await client_.ReadMessage(false, Direction::kFrontend, limits());
    if (!pw.ok()) co_return pw.status();
    if (pw->type != 'p') co_return co_await Fatal("08P01", "Sluice: expected a password message");
    auto password = PasswordMessage::Decode(pw->payload);
    if (!password.ok()) co_return co_await Fatal("08P01", std::string(password.status().message()));
    auto identity = policy_->verifier->Verify(password->password, absl::Now());
    if (!identity.ok()) {
      LogInfo("postgres auth refused for ", peer_, " on ", database, ": ", identity.status().message());
      co_return co_await Fatal("28P01", absl::StrCat("Sluice: token rejected: ", identity.status().message()));
    }
    identity_ = *identity;
    Caller caller{identity->issuer, identity->subject, identity->groups};
    auto grant = Authorize(policy_->snapshot, *connection, caller);
    if (grant) grant_ = *grant;
    if (!grant) {
      LogInfo("postgres access refused: ", identity->subject, " on ", database);
      co_return co_await Fatal("28000", absl::StrCat("Sluice: no access rule lets \"", identity->subject,
                                                     "\" use connection \"", database, "\""));
    }
    // A place among the connection's sessions on this agent (ConnectionLimits), held until the
    // session ends, so that one caller cannot take every upstream connection slot.
    if (deps_.limiter != nullptr) {
      auto ticket = deps_.limiter->Acquire(connection->name(), identity->issuer, identity->subject,
                                           connection->limits());
      if (!ticket.ok()) {
        LogInfo("postgres session refused for ", peer_, ": ", ticket.status().message());
        refusal_kind_ = "session_limit";
        std::string message = absl::StrCat("Sluice: ", ticket.status().message());
        co_return co_await Fatal("53300", std::move(message));
      }
      session_ticket_ = *std::move(ticket);
    }

    // Upstream login with the injected credentials.
    UpstreamLogin login;
    login.user = connection->credentials().username();
    auto secret = policy::ResolvePassword(connection->credentials());
    if (!secret.ok()) {
      // The caller learns only that the password is missing here; the log says which one.
      LogError("connection ", database, ": ", secret.status().message());
      co_return co_await Fatal("08006", "Sluice: the connection's password is not available on this agent");
    }
    login.password = *std::move(secret);
    login.database = connection->upstream().database().empty() ? connection->name()
                                                               : connection->upstream().database();
    // The settings that decide how the server reads a statement are pinned (session_settings.h);
    // a read grant's session is read-only in the database too.
    const bool read_only = grant->access == v1::ACCESS_READ;
    std::string options;
    for (const auto& [k, v] : startup.parameters) {
      if (k == "options") {
        auto checked = CheckStartupOptions(v, read_only);
        if (!checked.ok()) {
          co_return co_await Fatal("22023", absl::StrCat("Sluice: ", checked.status().message()));
        }
        options = *std::move(checked);
      } else if (PassThroughParameter(k)) {
        if (absl::EqualsIgnoreCase(k, "client_encoding") && !AsciiSafeClientEncoding(v)) {
          co_return co_await Fatal(
              "22023", absl::StrCat("Sluice: client_encoding \"", v.substr(0, 64),
                                    "\" is not accepted by the agent: a character's second byte can be a "
                                    "backslash or quote in it; use UTF8"));
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
      co_return co_await Fatal("08006", absl::StrCat("Sluice: cannot open connection \"", database,
                                                     "\": ", up.status().message()));
    }
    upstream_ = *std::move(up);
    for (const auto& p : upstream_.parameters) {
      std::string problem = ParameterStatusProblem(p.name, p.value, read_only);
      if (!problem.empty()) {
        LogError("connection ", database, ": ", problem, " at login; session refused");
        co_return co_await Fatal("08006", absl::StrCat("Sluice: cannot open connection \"", database,
                                                       "\" safely: ", problem));
      }
    }
    catalog_ = std::make_unique<CatalogResolver>(target, login, limits());

    // The client sees a normal login: AuthenticationOk, the server's parameters, the agent's own
    // cancel key, notices, ReadyForQuery.
    // A cancel request while a statement is held withdraws it (nothing runs upstream yet).
    auto local = std::make_shared<std::function<bool()>>([slot = hold_slot_] {
      std::shared_ptr<ApprovalWaiter> waiter;
      {
        absl::MutexLock lock(&slot->mu);
        waiter = slot->waiter;
      }
      if (waiter == nullptr) return false;
      waiter->Decided(ApprovalOutcome{ApprovalOutcome::kCancelled, "cancelled by the client", {}});
      return true;
    });
    agent_key_ = deps_.cancels->Register(CancelTarget{target, upstream_.key, local}, protocol_minor_ >= 2 ? 32 : 4);
    std::string hello = Authentication{Authentication::kOk, ""}.Encode();
    for (const auto& p : upstream_.parameters) hello += p.Encode();
    hello += agent_key_.Encode();
    for (const auto& n : upstream_.notices) hello += n;
    hello += ReadyForQuery{upstream_.transaction_status}.Encode();
    st = co_await client_.Write(hello);
    if (!st.ok()) co_return st;
    logged_in_ = true;
    LogInfo("postgres session: ", identity->subject, " (", identity->issuer, ") from ", peer_, " on ",
            database, " with ", AccessName(grant->access), " access (rule ", grant->rule, ")");
    nlohmann::json start = Who();
    start["access"] = AccessName(grant->access);
    start["rule"] = grant->rule;
    start["protocol"] = absl::StrCat("3.", protocol_minor_);
    start["application_name"] = startup.Get("application_name").value_or("");
    AddTls(start, "", client_);
    start["upstream_tls"] = upstream_.stream->is_tls();
    AddTls(start, "upstream_", *upstream_.stream);
    start["token_alg"] = identity->algorithm;
    start["token_expires_unix"] = identity->expires_unix;
    if (identity->issued_at_unix != 0) start["token_issued_unix"] = identity->issued_at_unix;
    Emit("session_start", start);
    started_session_ = true;
    // Requests in flight are noted where a killed agent keeps them (agent/audit/inflight.h).
    if (deps_.inflight != nullptr) inflight_slot_ = deps_.inflight->Acquire(session_id_, 0);
    // The recording starts with the first message after the login (the agent's cancel key in the
    // login answer is not recorded).
    if (recorder_.enabled()) client_.RecordWrites(&recorder_);

    // Both directions until either ends; the other is then cancelled.
    auto ended = co_await (RelayFrontend() || RelayBackend());
    co_return std::visit([](absl::Status& s) { return s; }, ended);
  }

  // Client to server: every frame checked, and every statement inspected before it is forwarded.
  // Forwarded messages go in as few writes as possible; a refused statement never reaches the
  // server (see Inspect), and a protocol error ends the session with a FATAL to the client.
  asio::awaitable<absl::Status> RelayFrontend() {
    Stream& from = client_;
    Stream& to = *upstream_.stream;
    while (true) {
      size_t validated = 0;  // bytes [0, validated) are forwarded as they are
      bool terminate = false;
      frontend_now_ = absl::Now();  // the time of every message of this read
      while (true) {
        DecodeResult r = DecodeFrame(from.buffer().data().substr(validated), Direction::kFrontend, limits());
        if (r.status == DecodeStatus::kError) {
          std::string wire =
              ErrorOrNotice::Make("FATAL", "08P01", "Sluice: protocol violation: " + r.error).Encode('E');
          co_await client_.Write(wire);
          co_return absl::InvalidArgumentError(r.error);
        }
        if (r.status == DecodeStatus::kNeedMore) break;
        bytes_from_client_ += r.message.wire_size;
        recorder_.FromClient(r.message.type, r.message.payload, frontend_now_);
        Action action = Inspect(r.message);
        if (action == Action::kHold) {
          // What came before goes out first; the held message waits at the front of the buffer
          // (nothing more is read from the client) until it is decided.
          absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
          if (!forwarded.ok()) co_return forwarded;
          HoldRequest hold = std::move(*pending_hold_);
          pending_hold_.reset();
          auto outcome = co_await Hold(hold);
          if (!outcome.ok()) co_return outcome.status();
          frontend_now_ = absl::Now();  // it runs from now
          action = Release(hold, r.message.type, *outcome);
          r = DecodeFrame(from.buffer().data(), Direction::kFrontend, limits());
        }
        if (action == Action::kResolveFunction) {
          // A FunctionCall names its function by OID: the agent looks it up first (what came
          // before goes out; the call waits at the front of the buffer).
          absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
          if (!forwarded.ok()) co_return forwarded;
          WireReader fr(r.message.payload);
          uint32_t oid = static_cast<uint32_t>(fr.Int32());
          auto function = co_await catalog_->Function(oid);
          action = DecideFunctionCall(oid, function);
          r = DecodeFrame(from.buffer().data(), Direction::kFrontend, limits());
        }
        if (action == Action::kDescribeFirst) {
          // The agent's own Describe of the portal goes just before the Execute: its answer
          // tells the backend relay which columns the rows hold (and is not relayed).
          absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
          if (!forwarded.ok()) co_return forwarded;
          WireReader er(r.message.payload);
          std::string portal(er.CStringView());
          std::string describe = DescribeOrClose{'P', portal}.Encode('D');
          absl::Status st = co_await to.Write(describe);
          if (!st.ok()) co_return st;
          router_.OnInjectedDescribe(portal);
          action = Action::kForward;
          // The Execute is now the first byte of the buffer.
          r = DecodeFrame(from.buffer().data(), Direction::kFrontend, limits());
        }
        if (action == Action::kForward) {
          ObserveFrontend(r.message);
          validated += r.message.wire_size;
          if (r.message.type == 'X') {
            terminate = true;
            break;
          }
          continue;
        }
        // What came before goes out first; the message itself never does.
        size_t skip = r.message.wire_size;
        absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
        if (!forwarded.ok()) co_return forwarded;
        if (action == Action::kSubstitute) {
          // An empty query in its place: the server answers it in order (EmptyQueryResponse,
          // which the backend relay replaces with the refusal, then ReadyForQuery with the real
          // transaction status).
          std::string empty_query = Query{""}.Encode();
          absl::Status st = co_await to.Write(empty_query);
          if (!st.ok()) co_return st;
          router_.OnQuery("", false);
        }
        from.Consume(skip);
      }
      absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
      if (!forwarded.ok()) co_return forwarded;
      EmitCompleted();
      FlushRecording();
      if (audit_failed_) co_return co_await EndUnaudited();
      if (terminate) co_return absl::OkStatus();  // the client said goodbye (Terminate)
      absl::Status st = co_await from.ReadMore(limits().max_message_bytes + 5);
      if (!st.ok()) co_return st;
    }
  }

  // Server to client: every frame checked; refusals are put in the places the server's answers
  // leave for them (see Expectation).
  asio::awaitable<absl::Status> RelayBackend() {
    Stream& from = *upstream_.stream;
    Stream& to = client_;
    while (true) {
      size_t validated = 0;
      backend_now_ = absl::Now();  // the time of every message of this read
      while (true) {
        DecodeResult r = DecodeFrame(from.buffer().data().substr(validated), Direction::kBackend, limits());
        if (r.status == DecodeStatus::kError) co_return absl::InvalidArgumentError(r.error);
        if (r.status == DecodeStatus::kNeedMore) break;
        const char type = r.message.type;
        bytes_from_server_ += r.message.wire_size;
        auto step = co_await RouteBackend(r.message);
        if (!step.ok()) {
          std::string wire =
              ErrorOrNotice::Make("FATAL", "XX000", absl::StrCat("Sluice: ", step.status().message())).Encode('E');
          co_await client_.Write(wire);
          co_return step.status();
        }
        if (*step != BackendStep::kForward) {
          // What came before is kept to go out with the rest; the message is replaced or dropped.
          if (type == 'E' && !expected_.empty()) expected_.front().server_failed = true;  // as below
          if (*step == BackendStep::kReplace) {
            // The audit sees what the client sees.
            ObserveBackend(RawMessage{type, absl::string_view(replacement_).substr(5), replacement_.size()});
          }
          backend_out_.append(from.buffer().data().data(), validated);
          if (*step == BackendStep::kReplace) backend_out_.append(replacement_);
          from.Consume(validated + r.message.wire_size);
          validated = 0;
          continue;
        }
        std::string inject;  // a refusal to send before this message
        bool replace = false;  // ... in place of it
        if (!expected_.empty()) {
          Expectation& head = expected_.front();
          if (type == 'E') head.server_failed = true;  // the server skips the rest up to Sync
          if (type == 'I' && head.substitute && !head.refusal.empty()) {
            inject = std::move(head.refusal);
            head.refusal.clear();
            replace = true;
          } else if (type == 'Z') {
            if (!head.refusal.empty() && !head.server_failed) inject = std::move(head.refusal);
            expected_.pop_front();
          }
        }
        if (inject.empty()) {
          ObserveBackend(r.message);
          validated += r.message.wire_size;
          continue;
        }
        EmitCompleted();  // journaled before their answers go out (see below)
        absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
        if (!forwarded.ok()) co_return forwarded;
        absl::Status st = co_await to.Write(inject);
        if (!st.ok()) co_return st;
        if (replace) {
          from.Consume(r.message.wire_size);
        } else {
          // The message itself stays at the front of the buffer and goes out with what follows.
          ObserveBackend(r.message);
          validated = r.message.wire_size;
        }
      }
      // Statements these messages complete become events (journaled: a killed agent still has
      // them) before their answers go out, so a statement the client saw answered is never
      // recorded as of unknown outcome. Their recording slices end with the request; the answer's
      // bytes, recorded as they are written, open the next slice.
      const size_t answered = completed_.size();
      EmitCompleted();
      absl::Status forwarded = co_await ForwardValidated(from, to, &validated);
      if (!forwarded.ok()) co_return forwarded;
      if (answered > 0) test_faults::AnswersWritten(answered);
      FlushRecording();
      if (audit_failed_) co_return co_await EndUnaudited();
      absl::Status st = co_await from.ReadMore(limits().max_message_bytes + 5);
      if (!st.ok()) co_return st;
    }
  }

  // Writes the first `*validated` bytes of `from`'s buffer (checked frames) to `to` as they are,
  // consumes them, and sets `*validated` to 0.
  // In the backend direction, rewritten messages wait in backend_out_ and go first.
  asio::awaitable<absl::Status> ForwardValidated(Stream& from, Stream& to, size_t* validated) {
    if (&from == upstream_.stream.get() && !backend_out_.empty()) {
      backend_out_.append(from.buffer().data().data(), *validated);
      from.Consume(*validated);
      *validated = 0;
      absl::Status st = co_await to.Write(backend_out_);
      backend_out_.clear();
      co_return st;
    }
    if (*validated == 0) co_return absl::OkStatus();
    absl::string_view chunk = from.buffer().data().substr(0, *validated);
    absl::Status st = co_await to.Write(chunk);
    if (!st.ok()) co_return st;
    from.Consume(*validated);
    *validated = 0;
    co_return absl::OkStatus();
  }

  enum class Action { kForward, kDrop, kSubstitute, kDescribeFirst, kHold, kResolveFunction };

  // Decides what happens to one client message, and keeps the expectations of the answers in
  // step: every forwarded Query, Sync and FunctionCall gets exactly one ReadyForQuery back.
  //
  // A refused simple Query is replaced by an empty query; its refusal takes the place of the
  // EmptyQueryResponse. A refused Parse starts discarding, as the server does after an error:
  // everything up to Sync is dropped, the Sync is forwarded, and the refusal is sent just before
  // its ReadyForQuery (after the answers to what was forwarded before it) unless the server
  // failed that stretch itself. Either way the session goes on.
  Action Inspect(const RawMessage& m) {
    if (discarding_ && m.type != 'S' && m.type != 'X') return Action::kDrop;
    switch (m.type) {
      case 'Q': {
        WireReader r(m.payload);
        absl::string_view sql = r.CStringView();
        std::string refusal = Check(sql, false);
        if (refusal.empty()) refusal = CheckCopy(sql, false);
        if (!refusal.empty()) {
          pending_hold_.reset();
          expected_.push_back(Expectation{std::move(refusal), true, false});
          return Action::kSubstitute;
        }
        if (pending_hold_) return Action::kHold;  // expectations are set when it is released
        expected_.push_back(Expectation{});
        return Action::kForward;
      }
      case 'P': {
        WireReader r(m.payload);
        absl::string_view name = r.CStringView();
        absl::string_view sql = r.CStringView();
        std::string refusal = Check(sql, true);
        if (refusal.empty()) refusal = CheckCopy(sql, true);
        if (!refusal.empty()) pending_hold_.reset();
        if (pending_hold_) {
          pending_hold_->name = std::string(name);
          return Action::kHold;
        }
        if (!refusal.empty()) {
          if (!name.empty()) checked_names_.erase(name);
          discarding_ = true;
          pending_refusal_ = std::move(refusal);
          return Action::kDrop;
        }
        if (!name.empty()) MarkChecked(name);
        return Action::kForward;
      }
      case 'F': return Action::kResolveFunction;  // decided once its function is known
      case 'B': {
        // A named statement is checked again when it is executed: policy may have changed since
        // its Parse.
        WireReader r(m.payload);
        r.CStringView();  // portal
        absl::string_view name = r.CStringView();
        if (name.empty() || (grant_.access != v1::ACCESS_READ && guardrails_.empty() &&
                             deps_.policy->generation() == policy_generation_)) {
          return Action::kForward;
        }
        // Approved at its Parse: that approval covers this one execution.
        if (auto it = approved_once_.find(name); it != approved_once_.end()) {
          approved_once_.erase(it);
          return Action::kForward;
        }
        // Checked already under the policy in force: the answer would be the same.
        if (checked_generation_ == deps_.policy->generation() && checked_names_.contains(name)) {
          return Action::kForward;
        }
        const std::string* text = tracker_.StatementText(name);
        if (text == nullptr) return Action::kForward;  // unknown to us: the server refuses it
        std::string sql = *text;
        std::string refusal = Check(sql, true, /*parsing=*/false);
        if (pending_hold_) {
          pending_hold_->name = std::string(name);
          pending_hold_->parameters = BindParameters(m.payload);
          return Action::kHold;
        }
        if (!refusal.empty()) {
          discarding_ = true;
          pending_refusal_ = std::move(refusal);
          return Action::kDrop;
        }
        MarkChecked(name);
        return Action::kForward;
      }
      case 'E': {
        if (!MaskingOn()) return Action::kForward;
        WireReader r(m.payload);
        return router_.NeedsDescribe(r.CStringView()) ? Action::kDescribeFirst : Action::kForward;
      }
      case 'S':
        expected_.push_back(Expectation{std::move(pending_refusal_), false, false});
        pending_refusal_.clear();
        discarding_ = false;
        return Action::kForward;
      default:
        return Action::kForward;
    }
  }

  // Decides a FunctionCall of the function with `oid` (looked up as `function`) as it decides a
  // statement calling it: settings, read grants, masking and guardrails; records a refusal and
  // sets the expectations of the answer as Inspect does.
  Action DecideFunctionCall(uint32_t oid, const absl::StatusOr<std::optional<FunctionNames>>& function) {
    FollowPolicy();
    std::string name = function.ok() && function->has_value()
                           ? absl::StrCat((*function)->schema, ".", (*function)->name)
                           : absl::StrCat("OID ", oid);
    function_text_ = absl::StrCat("FunctionCall ", name, " (OID ", oid, ")");
    auto refuse = [&](std::string problem, const char* sqlstate) {
      std::string refusal = RefuseUnsafe(function_text_, nullptr, false, problem, sqlstate);
      expected_.push_back(Expectation{std::move(refusal), true, false});
      return Action::kSubstitute;
    };
    if (!function.ok()) {
      return refuse(absl::StrCat("the agent could not look up the function it calls: ", function.status().message()),
                    "58000");
    }
    if (!function->has_value()) return refuse(absl::StrCat("no function has OID ", oid), "42883");
    const FunctionNames& f = **function;
    const std::string lower = absl::AsciiStrToLower(f.name);
    const auto& from_string = SqlFromStringFunctions();
    if (lower == "set_config" || std::find(from_string.begin(), from_string.end(), lower) != from_string.end()) {
      return refuse(absl::StrCat("a FunctionCall of ", name,
                                 " is not accepted (the agent cannot see what it changes or runs); call it with "
                                 "SELECT"),
                    "42501");
    }
    if (masking_.has_column_rules()) {
      return refuse("results are masked on this connection, and a FunctionCall's result cannot be masked by "
                    "column; call the function with SELECT",
                    "42501");
    }
    StatementInfo info;
    info.statements.emplace_back();
    StatementFacts& facts = info.statements.back();
    facts.cls = f.volatility == 'v' ? StatementClass::kWrite : StatementClass::kRead;
    facts.kind = "FunctionCall";
    facts.functions.push_back(lower);
    info.overall = facts.cls;
    if (grant_.access == v1::ACCESS_READ && !info.read_only()) {
      std::string refusal = RefuseReadOnly(function_text_, &info, false);
      expected_.push_back(Expectation{std::move(refusal), true, false});
      return Action::kSubstitute;
    }
    GuardrailDecision d = guardrails_.Decide(info);
    if (d.action == GuardrailDecision::kAlert) RecordGuardrail(function_text_, &info, false, d, "alerted", "");
    if (d.action == GuardrailDecision::kBlock || d.action == GuardrailDecision::kRequireApproval) {
      std::string message =
          d.action == GuardrailDecision::kBlock
              ? BlockedMessage(d)
              : absl::StrCat("Sluice: a FunctionCall needs approval under guardrail \"", d.guardrail, "\" (",
                             d.match, "), and a FunctionCall cannot be held; call the function with SELECT");
      std::string refusal = RecordGuardrail(function_text_, &info, false, d,
                                            d.action == GuardrailDecision::kBlock ? "blocked" : "denied", message);
      expected_.push_back(Expectation{std::move(refusal), true, false});
      return Action::kSubstitute;
    }
    expected_.push_back(Expectation{});
    return Action::kForward;
  }

  // ---- Masking (see result_masking.h and result_router.h) ----

  // The statement text of the request `p` answers (a Query's, stored when masking was on; an
  // Execute's prepared statement), or null.
  static const std::string* TextOf(const PendingResult& p) {
    return p.kind == PendingResult::kQuery ? &p.sql : p.text.get();
  }

  // Masking is on when a MaskingRule applies to this session (see FollowPolicy).
  bool MaskingOn() {
    FollowPolicy();
    return !masking_.empty();
  }

  enum class BackendStep { kForward, kReplace, kSwallow };

  // Follows the server's answers (ResultRouter) and masks result rows: kReplace leaves the new
  // message in replacement_; kSwallow drops the message (the answer to the agent's own
  // Describe). An error ends the session: a result that cannot be masked is never relayed.
  asio::awaitable<absl::StatusOr<BackendStep>> RouteBackend(const RawMessage& m) {
    switch (m.type) {
      case 'D': {
        PendingResult* front = router_.Front();
        if (front == nullptr) co_return BackendStep::kForward;
        if (!front->planned && front->kind == PendingResult::kExecute && front->store && MaskingOn()) {
          absl::string_view described;
          const ResultFormats* formats = nullptr;
          if (!router_.ExecuteDescription(&described, &formats)) {
            co_return absl::InternalError("the columns of this result are unknown, so it cannot be masked");
          }
          if (!PlanFromCache(front, described, formats)) {
            std::string payload(described);
            ResultFormats bind_formats;
            if (formats != nullptr) bind_formats = *formats;
            absl::Status st = co_await PlanRows(front, payload, formats != nullptr ? &bind_formats : nullptr);
            if (!st.ok()) co_return st;
          }
        }
        if (!front->planned || !front->plan->active) co_return BackendStep::kForward;
        auto changed = MaskDataRow(m.payload, *front->plan, masking_, &replacement_);
        if (!changed.ok()) co_return changed.status();
        if (!*changed) co_return BackendStep::kForward;
        tracker_.OnMaskedRow(front->plan->rules);
        co_return BackendStep::kReplace;
      }
      case 'T':
      case 'n': {
        if (router_.OnDescription(m.type, m.payload)) co_return BackendStep::kSwallow;
        PendingResult* front = router_.Front();
        if (m.type == 'T' && front != nullptr && front->kind == PendingResult::kQuery && front->store &&
            MaskingOn()) {
          if (!PlanFromCache(front, m.payload, nullptr)) {
            std::string payload(m.payload);
            absl::Status st = co_await PlanRows(front, payload, nullptr);
            if (!st.ok()) co_return st;
          }
        }
        co_return BackendStep::kForward;
      }
      case 'H': {
        PendingResult* front = router_.Front();
        if (front == nullptr) co_return BackendStep::kForward;
        int index = front->copies++;
        if (!front->store || !MaskingOn()) co_return BackendStep::kForward;
        absl::Status st = co_await PlanCopyOut(front, index, m.payload);
        if (!st.ok()) co_return st;
        co_return BackendStep::kForward;
      }
      case 'd': {
        PendingResult* front = router_.Front();
        if (front == nullptr || !front->copy_active) co_return BackendStep::kForward;
        if (front->copy_header_pending) {
          front->copy_header_pending = false;
          co_return BackendStep::kForward;
        }
        auto changed = MaskCopyRow(m.payload, *front->plan, front->copy_format, masking_, &replacement_);
        if (!changed.ok()) co_return changed.status();
        if (!*changed) co_return BackendStep::kForward;
        tracker_.OnMaskedRow(front->plan->rules);
        co_return BackendStep::kReplace;
      }
      case 'c': {
        if (PendingResult* front = router_.Front()) front->copy_active = false;
        co_return BackendStep::kForward;
      }
      case 'C':
      case 'I':
      case 's': router_.OnCompletion(); co_return BackendStep::kForward;
      case 'E':
      case 'N': {
        if (!MaskingOn()) {
          if (m.type == 'E') router_.OnError();
          co_return BackendStep::kForward;
        }
        // The text of an error or notice can quote a value the statement read: withheld when
        // it reads masked columns.
        if (masking_.has_column_rules()) {
          if (PendingResult* front = router_.Front()) {
            const std::string* text = TextOf(*front);
            if (text != nullptr && !text->empty()) {
              LineageVerdict v = JudgeLineage(Statements().Get(*text), masking_);
              if (v.reads_masked) {
                auto withheld = WithholdErrorOrNotice(m.type, m.payload, v.masked);
                if (m.type == 'E') router_.OnError();
                if (!withheld.ok()) co_return withheld.status();
                replacement_ = *std::move(withheld);
                co_return BackendStep::kReplace;
              }
            }
          }
        }
        if (m.type == 'E') router_.OnError();
        auto changed = MaskErrorOrNotice(m.type, m.payload, masking_, &replacement_);
        if (!changed.ok()) co_return changed.status();
        co_return *changed ? BackendStep::kReplace : BackendStep::kForward;
      }
      case 'Z': router_.OnReady(); co_return BackendStep::kForward;
      case 'S': {
        // A setting the agent pins changed under it (code it could not see into): the session
        // cannot go on, since the agent would no longer read statements as the server does.
        auto status = ParameterStatus::Decode(m.payload);
        if (!status.ok()) co_return status.status();
        std::string problem = ParameterStatusProblem(status->name, status->value,
                                                     grant_.access == v1::ACCESS_READ);
        if (!problem.empty()) {
          co_return absl::FailedPreconditionError(
              absl::StrCat("the session's settings changed in a way the agent does not allow (", problem,
                           "); the session ends"));
        }
        [[fallthrough]];
      }
      case 'A': {
        // Values outside any result: a setting reported back, a notification from any session.
        if (!MaskingOn()) co_return BackendStep::kForward;
        auto changed = MaskSideChannel(m.type, m.payload, masking_, &replacement_);
        if (!changed.ok()) co_return changed.status();
        co_return *changed ? BackendStep::kReplace : BackendStep::kForward;
      }
      default: co_return BackendStep::kForward;
    }
  }

  // The cache key of a description (+ the Bind's formats, + the columns masked whole because
  // they are computed from masked columns), built in plan_key_.
  const std::string& PlanKey(absl::string_view payload, const ResultFormats* formats) {
    plan_key_.assign(payload.data(), payload.size());
    if (formats != nullptr) {
      plan_key_.push_back('\xff');
      for (int16_t f : *formats) plan_key_.push_back(static_cast<char>(f));
    }
    if (!computed_.empty()) {
      plan_key_.push_back('\xfe');
      for (const auto& c : computed_) {
        plan_key_.push_back(c ? static_cast<char>(c->strategy) : '\xfd');
        if (c) plan_key_.append(reinterpret_cast<const char*>(&c->rule), sizeof(c->rule));
      }
    }
    return plan_key_;
  }

  // The columns of the result in front that are computed from masked columns (computed_; empty
  // when none), from its statement's lineage. An error when they cannot be placed.
  absl::Status ComputeOverrides(const PendingResult* front, absl::string_view description) {
    computed_.clear();
    if (!masking_.has_column_rules()) return absl::OkStatus();
    const std::string* text = TextOf(*front);
    if (text == nullptr) return absl::OkStatus();
    WireReader r(description);
    int16_t fields = r.Int16();
    if (!r.ok() || fields < 0) return absl::InvalidArgumentError("malformed RowDescription");
    auto computed = ComputedColumnStrategies(Statements().Get(*text), masking_, static_cast<size_t>(fields));
    if (!computed.ok()) return computed.status();
    computed_ = *std::move(computed);
    return absl::OkStatus();
  }

  // The cached plan for a description, without allocating: a repeated statement's rows need
  // nothing more.
  bool PlanFromCache(PendingResult* front, absl::string_view payload, const ResultFormats* formats) {
    if (!ComputeOverrides(front, payload).ok()) return false;  // PlanRows reports it
    auto it = plan_cache_.find(PlanKey(payload, formats));
    if (it == plan_cache_.end() || it->second.expires <= absl::Now()) return false;
    front->plan = it->second.plan;
    front->planned = true;
    return true;
  }

  // The masking plan of a result described by `payload` (a RowDescription), with `formats`
  // (the Bind's result formats) when the description is a statement's. Plans are cached by
  // description for as long as the table names they used.
  asio::awaitable<absl::Status> PlanRows(PendingResult* front, const std::string& payload,
                                         const ResultFormats* formats) {
    absl::Status placed = ComputeOverrides(front, payload);
    if (!placed.ok()) co_return placed;
    std::string key = PlanKey(payload, formats);
    absl::Time now = absl::Now();
    if (auto it = plan_cache_.find(key); it != plan_cache_.end() && it->second.expires > now) {
      front->plan = it->second.plan;
      front->planned = true;
      co_return absl::OkStatus();
    }
    auto described = RowDescription::Decode(payload);
    if (!described.ok()) co_return described.status();
    std::vector<RowDescription::Field> fields = std::move(described->fields);
    if (formats != nullptr) {
      for (size_t i = 0; i < fields.size(); ++i) {
        fields[i].format = formats->empty() ? 0 : formats->size() == 1 ? (*formats)[0]
                                                 : i < formats->size() ? (*formats)[i] : 0;
      }
    }
    absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>> tables;
    std::vector<uint32_t> oids;
    if (masking_.has_column_rules()) {
      for (const auto& f : fields) {
        if (f.table_oid != 0) oids.push_back(static_cast<uint32_t>(f.table_oid));
      }
    }
    if (!oids.empty()) {
      auto looked_up = co_await catalog_->Tables(oids);
      if (!looked_up.ok()) {
        co_return absl::UnavailableError(absl::StrCat("cannot look up the tables of this result for masking: ",
                                                      looked_up.status().message()));
      }
      tables = *std::move(looked_up);
    }
    auto plan = std::make_shared<const ResultPlan>(PlanResult(fields, tables, masking_, computed_));
    constexpr size_t kMaxPlans = 256;
    if (plan_cache_.size() >= kMaxPlans) plan_cache_.clear();
    plan_cache_[key] = CachedPlan{plan, now + absl::Minutes(1)};
    front->plan = std::move(plan);
    front->planned = true;
    co_return absl::OkStatus();
  }

  // The plan of the `index`-th COPY TO STDOUT of the request in front, from its statement
  // (`payload` is the CopyOutResponse).
  asio::awaitable<absl::Status> PlanCopyOut(PendingResult* front, int index, absl::string_view payload) {
    const std::string* sql = TextOf(*front);
    std::vector<CopyOutFacts> copies = sql != nullptr ? CopyOutputs(*sql) : std::vector<CopyOutFacts>{};
    WireReader r(payload);
    int overall = r.Byte();
    int16_t columns = r.Int16();
    if (!r.ok() || index >= static_cast<int>(copies.size())) {
      co_return absl::InternalError("COPY output this agent cannot match to its statement, so it cannot be masked");
    }
    const CopyOutFacts& f = copies[index];
    if (overall != 0 || f.binary || !f.problem.empty()) {
      co_return absl::InternalError("COPY output in a form this agent cannot mask");
    }
    std::vector<std::string> names = f.columns;
    std::string table = f.relation.table;
    if (f.query) {
      if (masking_.has_column_rules()) co_return absl::InternalError("COPY (query) output cannot be masked by column");
    } else if (names.empty() && masking_.has_column_rules()) {
      Relation relation = f.relation;
      auto found = co_await catalog_->TableByName(relation);
      if (!found.ok()) co_return found.status();
      if (*found == nullptr) co_return absl::InternalError("the table of this COPY cannot be found for masking");
      for (const auto& c : (*found)->columns) {
        if (!c.empty()) names.push_back(c);
      }
    }
    if (masking_.has_column_rules() && !f.query && names.size() != static_cast<size_t>(columns)) {
      co_return absl::InternalError("the columns of this COPY do not match its table's, so it cannot be masked");
    }
    auto plan = std::make_shared<const ResultPlan>(PlanCopy(table, names, static_cast<size_t>(columns), masking_));
    front->copy_active = plan->active;
    front->plan = std::move(plan);
    front->copy_header_pending = f.header;
    front->copy_format = CopyFormat{f.csv, f.delimiter, f.null_string, f.quote, f.escape, f.header};
    co_return absl::OkStatus();
  }

  // Refuses a COPY whose output masking could not handle (before it runs). Empty: it may run.
  std::string CheckCopy(absl::string_view sql, bool extended) {
    if (!MentionsCopy(sql) || !MaskingOn()) return "";
    for (const CopyOutFacts& f : CopyOutputs(sql)) {
      std::string why;
      if (f.binary) {
        why = "binary COPY output cannot be masked; use the text or csv format";
      } else if (!f.problem.empty()) {
        why = absl::StrCat("its COPY options cannot be read (", f.problem, ")");
      } else if (f.query && masking_.has_column_rules()) {
        why = "the columns of COPY (query) TO STDOUT cannot be resolved for masking by column; COPY a table, or use SELECT";
      }
      if (why.empty()) continue;
      std::string message = absl::StrCat("Sluice: statement refused on connection \"", connection_name_,
                                         "\", where results are masked: ", why);
      return Refuse(sql, &Statements().Get(sql), extended, message, "42501");
    }
    return "";
  }

  // ---- Approvals ----

  // A statement held for approval (from Check), and where it came from.
  struct HoldRequest {
    std::string sql;
    GuardrailDecision decision;
    bool extended = false;
    std::string fingerprint;
    std::string name;  // the prepared statement's name (Parse, Bind)
    std::vector<std::string> parameters;
  };

  // The text form of a Bind's parameters, for the approvers (capped; binary ones as hex).
  static std::vector<std::string> BindParameters(absl::string_view payload) {
    constexpr size_t kMax = 100;
    constexpr size_t kMaxBytes = 1024;
    std::vector<std::string> out;
    auto bind = Bind::Decode(payload);
    if (!bind.ok()) return out;  // the server refuses it
    const auto& formats = bind->param_formats;
    for (size_t i = 0; i < bind->params.size() && i < kMax; ++i) {
      const auto& p = bind->params[i];
      if (!p) {
        out.push_back("NULL");
        continue;
      }
      bool binary = formats.size() == 1 ? formats[0] == 1 : (i < formats.size() && formats[i] == 1);
      std::string v = binary ? "\\x" + HexEncode(*p) : *p;
      if (v.size() > kMaxBytes) v = v.substr(0, kMaxBytes) + "...";
      out.push_back(std::move(v));
    }
    return out;
  }

  // Asks the control plane for a decision on `h` and waits for it: the client gets a notice
  // with the request's number and waits, its connection open. Denied when the control plane
  // cannot be reached, refuses the request, or decides nothing before the policy's timeout.
  // An error only when the session itself ends while waiting.
  asio::awaitable<absl::StatusOr<ApprovalOutcome>> Hold(const HoldRequest& h) {
    const GuardrailDecision& d = h.decision;
    absl::Duration timeout = absl::Seconds(300);
    for (const auto& p : guardrails_policy_->snapshot.approval_policies()) {
      if (p.name() == d.approval && p.has_timeout()) {
        timeout = absl::Seconds(p.timeout().seconds()) + absl::Nanoseconds(p.timeout().nanos());
      }
    }
    v1::ApprovalRequest req;
    req.set_request_id(absl::StrCat(session_id_, "-", ++holds_));
    req.set_session_id(session_id_);
    req.set_connection(connection_name_);
    req.set_subject(identity_.subject);
    req.set_issuer(identity_.issuer);
    for (const auto& g : identity_.groups) req.add_groups(g);
    req.mutable_attribution()->insert(identity_.attribution.begin(), identity_.attribution.end());
    req.set_statement(h.sql.substr(0, 64 << 10));
    req.set_fingerprint(h.fingerprint);
    req.set_rule(d.match);
    req.set_guardrail(d.guardrail);
    req.set_target(d.target);
    req.set_approval_policy(d.approval);
    for (const auto& p : h.parameters) req.add_parameters(p);

    asio::any_io_executor executor = co_await asio::this_coro::executor;
    auto waiter = std::make_shared<ApprovalWaiter>(executor);
    {
      absl::MutexLock lock(&hold_slot_->mu);
      hold_slot_->waiter = waiter;
    }
    ApprovalOutcome outcome;
    uint64_t approval_id = 0;
    std::string request_id = req.request_id();
    if (!deps_.approvals->Submit(std::move(req), waiter)) {
      outcome = ApprovalOutcome{ApprovalOutcome::kUnavailable, "the control plane is unreachable", {}};
    } else {
      absl::Time registration_deadline = absl::Now() + absl::Seconds(10);
      absl::Status st = co_await WaitForAnswer(waiter, registration_deadline, false);
      ApprovalWaiter::State s = waiter->state();
      if (st.ok() && !s.decided && s.registered && s.error.empty()) {
        approval_id = s.approval_id;
        std::string notice_text = absl::StrCat(
            "Sluice: approval required: request ", approval_id, ", waiting up to ",
            absl::ToInt64Seconds(timeout), " s (guardrail \"", d.guardrail, "\": ", d.match,
            d.target.empty() ? "" : " on " + d.target, "; ApprovalPolicy \"", d.approval,
            "\"). An approver runs: sluicectl approvals approve ", approval_id);
        std::string notice = ErrorOrNotice::Make("NOTICE", "00000", notice_text).Encode('N');
        LogInfo("statement of ", identity_.subject, " on ", connection_name_, " held: approval request ", approval_id);
        st = co_await client_.Write(notice);
        absl::Time decision_deadline = absl::Now() + timeout + absl::Seconds(3);
        if (st.ok()) st = co_await WaitForAnswer(waiter, decision_deadline, true);
        s = waiter->state();
      }
      if (!st.ok()) {
        deps_.approvals->Withdraw(request_id, "the session ended while the statement was held");
        ClearHold();
        co_return st;  // the session ends
      }
      if (s.decided) {
        outcome = s.outcome;
      } else if (s.registered && !s.error.empty()) {
        outcome = ApprovalOutcome{ApprovalOutcome::kUnavailable,
                                  absl::StrCat("the control plane refused the request: ", s.error), {}};
      } else if (!s.registered) {
        outcome = ApprovalOutcome{ApprovalOutcome::kUnavailable, "the control plane did not answer", {}};
      } else {
        outcome = ApprovalOutcome{ApprovalOutcome::kDenied,
                                  absl::StrCat("no decision within ", absl::ToInt64Seconds(timeout), " s"), {}};
      }
      deps_.approvals->Withdraw(request_id, outcome.kind == ApprovalOutcome::kCancelled ? "cancelled by the client" : "");
    }
    ClearHold();
    const char* decision = outcome.kind == ApprovalOutcome::kApproved      ? "approved"
                           : outcome.kind == ApprovalOutcome::kCancelled   ? "cancelled"
                           : outcome.kind == ApprovalOutcome::kUnavailable ? "unavailable"
                                                                           : "denied";
    JsonObjectWriter w(&event_buffer_);
    StatementEventHead(&w, h.sql, &Statements().Get(h.sql), h.extended);
    w.Str("decision", decision)
        .Int("approval_id", static_cast<int64_t>(approval_id))
        .Str("guardrail", d.guardrail)
        .Str("match", d.match)
        .Str("approval_policy", d.approval)
        .Str("approvers", absl::StrJoin(outcome.approvers, ","))
        .Str("reason", outcome.reason);
    EmitJson("approval", w.Close(), outcome.kind != ApprovalOutcome::kApproved);
    LogInfo("approval request ", approval_id, " for ", identity_.subject, " on ", connection_name_, ": ", decision,
            outcome.reason.empty() ? "" : " (" + outcome.reason + ")");
    co_return outcome;
  }

  // Waits until the waiter has an answer (a decision; or, unless `decision_only`, a
  // registration) or `deadline` passes. An error when the session is being torn down.
  asio::awaitable<absl::Status> WaitForAnswer(const std::shared_ptr<ApprovalWaiter>& waiter, absl::Time deadline,
                                              bool decision_only) {
    while (true) {
      ApprovalWaiter::State s = waiter->state();
      if (s.decided || (!decision_only && s.registered)) co_return absl::OkStatus();
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) co_return absl::OkStatus();
      waiter->timer().expires_after(absl::ToChronoMilliseconds(left) + std::chrono::milliseconds(1));
      auto [ec] = co_await waiter->timer().async_wait(kNoThrow);
      (void)ec;  // woken (cancelled) or expired: the state says which
      asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
      if (cs.cancelled() != asio::cancellation_type::none) {
        co_return absl::CancelledError("the session ended while a statement was held");
      }
    }
  }

  void ClearHold() {
    absl::MutexLock lock(&hold_slot_->mu);
    hold_slot_->waiter.reset();
  }

  // What happens to a held message of `type` after its decision; sets the expectations of the
  // answers as Inspect does for a checked message.
  Action Release(const HoldRequest& h, char type, const ApprovalOutcome& outcome) {
    const GuardrailDecision& d = h.decision;
    if (outcome.kind == ApprovalOutcome::kApproved) {
      if (type == 'Q') {
        expected_.push_back(Expectation{});
      } else if (!h.name.empty()) {
        approved_once_.insert(h.name);  // its next Bind runs once without asking again
      }
      return Action::kForward;
    }
    std::string sqlstate = outcome.kind == ApprovalOutcome::kCancelled ? "57014" : "42501";
    std::string message;
    switch (outcome.kind) {
      case ApprovalOutcome::kCancelled:
        message = "Sluice: canceling statement due to user request (it was waiting for approval)";
        break;
      case ApprovalOutcome::kUnavailable:
        message = absl::StrCat("Sluice: statement needs approval under guardrail \"", d.guardrail, "\" (", d.match,
                               "), but ", outcome.reason, "; it was not run");
        break;
      default:
        message = absl::StrCat("Sluice: statement denied (guardrail \"", d.guardrail, "\", ", d.match, "): ",
                               outcome.reason.empty() ? "denied" : outcome.reason);
    }
    ++statements_;
    std::string refusal = ErrorOrNotice::Make("ERROR", sqlstate, message).Encode('E');
    if (type == 'Q') {
      expected_.push_back(Expectation{std::move(refusal), true, false});
      return Action::kSubstitute;
    }
    if (!h.name.empty()) checked_names_.erase(h.name);
    discarding_ = true;
    pending_refusal_ = std::move(refusal);
    return Action::kDrop;
  }

  // Remembers that the named statement passed the checks under the current policy.
  void MarkChecked(absl::string_view name) {
    constexpr size_t kMaxChecked = 10000;
    uint64_t generation = deps_.policy->generation();
    if (generation != checked_generation_ || checked_names_.size() >= kMaxChecked) {
      checked_names_.clear();
      checked_generation_ = generation;
    }
    checked_names_.insert(std::string(name));
  }

  // Empty when `sql` may run; otherwise the ErrorResponse to send (the refusal is recorded).
  // Read grants refuse anything but reads; guardrails block what their rules say. `alert`
  // statements run and raise an alert event.
  // `parsing`: the server parses `sql` now (Query, Parse), rather than running a statement it
  // parsed before (Bind).
  std::string Check(absl::string_view sql, bool extended, bool parsing = true) {
    FollowPolicy();
    const bool read_only = grant_.access == v1::ACCESS_READ;
    const bool settings = MayChangeSettings(sql);
    const bool lexing = parsing && sql::DependsOnStandardConformingStrings(sql);
    const bool masked = masking_.has_column_rules();
    if (!read_only && guardrails_.empty() && !settings && !lexing && !masked) return "";
    const StatementInfo& info = Statements().Get(sql);
    if (lexing && RequestsInFlight()) {
      // The agent read it with standard_conforming_strings on, which the server confirms only
      // when nothing sent before could have changed it since (see session_settings.h).
      return RefuseUnsafe(sql, &info, extended,
                          "it has a '...' string constant with a backslash, which the server reads "
                          "differently when standard_conforming_strings is off, and statements sent before "
                          "it in the same pipeline have not finished (they could change that setting); "
                          "send it after their results, or write the constant as E'...' or $$...$$",
                          "42501");
    }
    if (settings) {
      SettingsVerdict v = SettingsProblem(info, read_only);
      if (!v.problem.empty()) return RefuseUnsafe(sql, &info, extended, v.problem, v.lifts_read_only ? "25006" : "42501");
    }
    if (read_only && !info.read_only()) return RefuseReadOnly(sql, &info, extended);
    if (masked) {
      // Masked values leave only as result columns the agent masks (lineage_masking.h).
      std::string problem;
      if (!info.parse_error.empty()) {
        problem = absl::StrCat("the agent cannot parse it (", info.parse_error,
                               "), so it cannot tell which masked values it would return");
      } else {
        problem = JudgeLineage(info, masking_).refusal;
      }
      if (!problem.empty()) {
        return RefuseUnsafe(sql, &info, extended, absl::StrCat("results are masked here, and ", problem), "42501");
      }
    }
    GuardrailDecision d = guardrails_.Decide(info);
    switch (d.action) {
      case GuardrailDecision::kAllow: return "";
      case GuardrailDecision::kAlert:
        RecordGuardrail(sql, &info, extended, d, "alerted", "");
        return "";
      case GuardrailDecision::kRequireApproval:
        if (deps_.approvals != nullptr) {
          // Held: the relay asks for a decision before the statement goes anywhere (Hold).
          pending_hold_ = HoldRequest{std::string(sql), d, extended, info.shape.fingerprint, "", {}};
          return "";
        }
        break;
      case GuardrailDecision::kBlock: break;
    }
    std::string message =
        d.action == GuardrailDecision::kBlock
            ? BlockedMessage(d)
            : absl::StrCat("Sluice: statement needs approval under guardrail \"", d.guardrail, "\" (", d.match,
                           d.target.empty() ? "" : " on " + d.target, ", ApprovalPolicy \"", d.approval,
                           "\"), and this agent cannot hold statements, so it is refused");
    return RecordGuardrail(sql, &info, extended, d, d.action == GuardrailDecision::kBlock ? "blocked" : "denied",
                           message);
  }

  // The session's guardrails and masking rules follow policy changes: a long session gets new
  // rules too (masking from the next result on).
  void FollowPolicy() {
    uint64_t generation = deps_.policy->generation();
    if (generation == policy_generation_) return;
    policy_generation_ = generation;
    auto current = deps_.policy->Get();
    if (!current) return;
    const v1::Connection* found = current->FindConnection(connection_->name(), v1::PROTOCOL_POSTGRES);
    const v1::Connection& c = found != nullptr ? *found : *connection_;
    guardrails_ = GuardrailSet(current->snapshot, c);
    masking_ = masking::MaskingPolicy(current->snapshot, c, identity_.issuer, identity_.subject, identity_.groups);
    plan_cache_.clear();
    guardrails_policy_ = std::move(current);
  }

  // Records a guardrail decision on `sql` as its statement event (an alert event for `alerted`)
  // and returns the ErrorResponse for `message` (empty when the statement runs).
  std::string RecordGuardrail(absl::string_view sql, const StatementInfo* info, bool extended,
                              const GuardrailDecision& d, const char* decision, const std::string& message) {
    const bool refused = !message.empty();
    JsonObjectWriter w(&event_buffer_);
    StatementEventHead(&w, sql, info, extended);
    w.Str("decision", decision)
        .Str("guardrail", d.guardrail)
        .Str("match", d.match)
        .Str("action", ActionName(d.action));
    if (!d.target.empty()) w.Str("target", d.target);
    if (!d.approval.empty()) w.Str("approval_policy", d.approval);
    if (refused) w.Str("reason", message).Str("sqlstate", "42501");
    if (refused) ++statements_;
    EmitJson(refused ? "statement" : "alert", w.Close(), refused);
    LogInfo("guardrail ", d.guardrail, " ", decision, " ", d.match, " for ", identity_.subject, " on ",
            connection_name_);
    if (!refused) return "";
    return ErrorOrNotice::Make("ERROR", "42501", message).Encode('E');
  }

  // Records the refusal of `sql` on a read grant and returns the ErrorResponse for it. `info` is
  // null for what has no SQL text (a FunctionCall).
  std::string RefuseReadOnly(absl::string_view sql, const StatementInfo* info, bool extended) {
    StatementClass cls = info != nullptr ? info->overall : StatementClass::kUnknown;
    std::string kind = info != nullptr ? info->deciding_kind() : "FunctionCall";
    std::string parse_error = info != nullptr ? info->parse_error : "called by OID";
    std::string what;
    switch (cls) {
      case StatementClass::kWrite: what = "writes data"; break;
      case StatementClass::kDdl: what = "changes the schema"; break;
      case StatementClass::kDcl: what = "changes privileges"; break;
      default: what = "cannot be classified"; break;
    }
    std::string message = absl::StrCat("Sluice: your access to connection \"", connection_name_,
                                       "\" is read-only (rule ", grant_.rule, "); this statement ", what,
                                       " (", kind, parse_error.empty() ? "" : ": ", parse_error, ")");
    LogInfo("refused for ", identity_.subject, " on ", connection_name_, ": ", kind, " on a read grant");
    return Refuse(sql, info, extended, message, "25006");
  }

  // What the client is told of a statement a guardrail blocks.
  static std::string BlockedMessage(const GuardrailDecision& d) {
    return absl::StrCat("Sluice: statement blocked by guardrail \"", d.guardrail, "\": ", d.match,
                        d.target.empty() ? "" : " on " + d.target, " (", d.statement_kind, ")");
  }

  // Whether requests sent to the server have not all been answered (a ReadyForQuery pending,
  // or an Execute not yet followed by Sync): code in them may still change session settings.
  bool RequestsInFlight() const { return !expected_.empty() || executed_since_sync_; }

  // Records the refusal of a statement that would change (or depend on) a session setting the
  // agent pins, and returns the ErrorResponse for it.
  std::string RefuseUnsafe(absl::string_view sql, const StatementInfo* info, bool extended,
                           absl::string_view problem, const char* sqlstate) {
    std::string message =
        absl::StrCat("Sluice: statement refused on connection \"", connection_name_, "\": ", problem);
    LogInfo("refused for ", identity_.subject, " on ", connection_name_, ": ", problem);
    return Refuse(sql, info, extended, message, sqlstate);
  }

  // Records `sql` as a statement refused at the agent (decision `refused`) and returns the
  // ErrorResponse that tells the client.
  std::string Refuse(absl::string_view sql, const StatementInfo* info, bool extended, const std::string& message,
                     const char* sqlstate) {
    JsonObjectWriter w(&event_buffer_);
    StatementEventHead(&w, sql, info, extended);
    w.Str("decision", "refused").Str("reason", message).Str("sqlstate", sqlstate);
    ++statements_;
    EmitJson("statement", w.Close(), true);
    return ErrorOrNotice::Make("ERROR", sqlstate, message).Encode('E');
  }

  // The audit view of a relayed client message (never changes it).
  // The result router follows every forwarded request, masking or not (see result_router.h).
  void ObserveFrontend(const RawMessage& m) {
    WireReader r(m.payload);
    switch (m.type) {
      case 'Q': {
        absl::string_view sql = r.CStringView();
        tracker_.OnQuery(sql, frontend_now_);
        if (inflight_slot_ >= 0) deps_.inflight->Begin(inflight_slot_, sql);
        router_.OnQuery(sql, MaskingOn());
        break;
      }
      case 'P': {
        absl::string_view name = r.CStringView();
        tracker_.OnParse(name, r.CStringView());
        router_.OnParse(name);
        break;
      }
      case 'B': {
        absl::string_view portal = r.CStringView();
        absl::string_view statement = r.CStringView();
        tracker_.OnBind(portal, statement);
        router_.OnBind(m.payload, MaskingOn() ? tracker_.SharedStatementText(statement) : nullptr);
        break;
      }
      case 'D': router_.OnDescribe(m.payload, MaskingOn()); break;
      case 'E': {
        absl::string_view portal = r.CStringView();
        executed_since_sync_ = true;
        tracker_.OnExecute(portal, frontend_now_);
        if (inflight_slot_ >= 0) deps_.inflight->Begin(inflight_slot_, tracker_.newest_text());
        router_.OnExecute(portal);
        break;
      }
      case 'C':
        if (r.Byte() == 'S') tracker_.OnCloseStatement(r.CStringView());
        router_.OnClose(m.payload);
        break;
      case 'S':
        executed_since_sync_ = false;
        router_.OnSync();
        break;
      case 'F':
        tracker_.OnQuery(function_text_, frontend_now_);
        if (inflight_slot_ >= 0) deps_.inflight->Begin(inflight_slot_, function_text_);
        router_.OnFunctionCall();
        break;
      default: break;
    }
  }

  void ObserveBackend(const RawMessage& m) {
    switch (m.type) {
      case 'D': tracker_.OnDataRow(m.payload.size()); break;
      case 'C': {
        WireReader r(m.payload);
        tracker_.OnCommandComplete(r.CStringView(), backend_now_);
        break;
      }
      case 'E': {
        auto e = ErrorOrNotice::Decode(m.payload);
        if (e.ok()) tracker_.OnError(e->Get('C').value_or(""), e->Get('M').value_or(""), backend_now_);
        break;
      }
      case 'I': tracker_.OnEmptyQuery(backend_now_); break;
      case 's': tracker_.OnPortalSuspended(backend_now_); break;
      case 'Z': tracker_.OnReadyForQuery(backend_now_); break;
      default: break;
    }
  }

  void EmitCompleted() {
    for (const StatementRecord& r : completed_) OnStatement(r);
    completed_.clear();
  }

  // The fields every statement event starts with: the text (first 64 KiB), its fingerprint,
  // classification (unknown without facts: a FunctionCall) and protocol.
  static void StatementEventHead(JsonObjectWriter* w, absl::string_view sql, const StatementInfo* info,
                                 bool extended) {
    constexpr size_t kMaxText = 64 << 10;
    w->Str("statement", sql.substr(0, kMaxText));
    if (sql.size() > kMaxText) w->Bool("truncated", true);
    if (info != nullptr) w->Str("fingerprint", info->shape.fingerprint);
    w->Str("classification", ClassName(info != nullptr ? info->overall : StatementClass::kUnknown))
        .Str("protocol", extended ? "extended" : "simple");
  }

  void OnStatement(const StatementRecord& rec) {
    ++statements_;
    // Prepared and re-parsed statements come back with the same text object: their facts are
    // looked up once.
    if (rec.text != last_text_) {
      const StatementInfo& got = Statements().Get(*rec.text);
      last_info_ = &got;
      last_text_ = Statements().Kept(got) ? rec.text : nullptr;
    }
    const StatementInfo& info = *last_info_;
    // Who ran it is in the session's start event (joined by session id); a statement event
    // carries only what is particular to it, and leaves out empty fields.
    JsonObjectWriter w(&event_buffer_);
    StatementEventHead(&w, *rec.text, &info, rec.extended);
    w.Int("rows", rec.rows)
        .Int("bytes", rec.row_bytes)
        .Millis("duration_ms", absl::ToInt64Microseconds(rec.duration));
    if (!rec.tags.empty()) w.Str("command_tags", rec.tags);
    if (!rec.sqlstate.empty()) w.Str("sqlstate", rec.sqlstate);
    if (!rec.error.empty()) w.Str("error", rec.error);
    if (rec.suspended) w.Bool("suspended", true);
    if (rec.masked_rows > 0) {
      w.Str("masked_by", absl::StrJoin(rec.masked_by, ",")).Int("masked_rows", rec.masked_rows);
    }
    EmitJson("statement", w.Close(), !rec.sqlstate.empty() || !rec.error.empty(), /*settles=*/true);
  }

  // Statement facts, cached by shape per worker thread (a session runs on one worker's event
  // loop): a repeated shape costs the lexer and a hash lookup.
  static StatementCache& Statements() {
    thread_local StatementCache cache;
    return cache;
  }

  // Who and where, for every session-level event.
  nlohmann::json Who() const {
    nlohmann::json j = {{"connection", connection_name_},
                        {"client_addr", peer_},
                        {"tls", client_.is_tls()},
                        {"user", startup_user_},
                        {"subject", identity_.subject},
                        {"issuer", identity_.issuer},
                        {"groups", identity_.groups},
                        {"attribution", identity_.attribution}};
    return j;
  }

  // The negotiated TLS version and cipher of `s` as `<prefix>tls_version` / `<prefix>tls_cipher`
  // (nothing in plaintext): evidence of the protection of each leg.
  static void AddTls(nlohmann::json& j, const char* prefix, Stream& s) {
    if (!s.is_tls()) return;
    SSL* ssl = s.tls_stream().native_handle();
    j[absl::StrCat(prefix, "tls_version")] = SSL_get_version(ssl);
    j[absl::StrCat(prefix, "tls_cipher")] = SSL_get_cipher_name(ssl);
  }

  void Emit(const char* type, const nlohmann::json& body) {
    EmitJson(type, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), false);
  }

  // A long stretch without events (a flood of notices, a long COPY) still reaches the spool in
  // bounded slices.
  void FlushRecording() {
    if (recorder_.size() >= kRecordingFlushBytes) EmitJson("recording", "{}", false);
  }

  // Fail closed: a session whose events cannot be recorded does not go on.
  asio::awaitable<absl::Status> EndUnaudited() {
    std::string wire = ErrorOrNotice::Make("FATAL", "53000",
                                           "Sluice: the audit trail cannot take this session's events (the agent's "
                                           "audit spool is full or failing); the session ends")
                           .Encode('E');
    co_await client_.Write(wire);
    co_return absl::ResourceExhaustedError("audit buffer full: session ended unaudited");
  }

  // `settles`: the event answers a request forwarded to the server (its in-flight note goes).
  void EmitJson(absl::string_view type, absl::string_view json, bool failed, bool settles = false) {
    absl::string_view recording = recorder_.data();
    EventSink::Inflight inflight;
    if (inflight_slot_ >= 0) {
      inflight = {deps_.inflight, inflight_slot_, settles, type == "session_end"};
      if (inflight.release) inflight_slot_ = -1;
    }
    const bool queued = deps_.events->Emit(type, session_id_, json, failed, recording, inflight);
    recorder_.Clear();
    if (!queued) {
      audit_failed_ = true;
      if (inflight.release) deps_.inflight->Account(inflight.slot, 0, false, true);  // the slot is free all the same
      LogError("audit buffer full: an event of session ", session_id_, " could not be queued");
    }
  }

  asio::awaitable<void> HandleCancel(const std::string& payload) {
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

  SessionDeps deps_;
  Stream client_;
  std::string session_id_;
  absl::Time started_;
  StatementTracker tracker_;
  SessionRecorder recorder_;
  // When the bytes being relayed in each direction were read (one clock read per read, not one
  // per message): the times statement events and the recording give.
  absl::Time frontend_now_;
  absl::Time backend_now_;
  static constexpr size_t kRecordingFlushBytes = 256 << 10;
  std::string peer_;
  std::string startup_user_;
  std::string connection_name_;
  jwt::Identity identity_;
  bool started_session_ = false;
  bool logged_in_ = false;
  bool audit_failed_ = false;  // an event could not be queued: the session ends
  int inflight_slot_ = -1;     // this session's slot in deps_.inflight (-1: none)
  SessionTicket session_ticket_;  // this session's place under the connection's session limits
  std::string refusal_kind_;      // why the login is refused, when the SQLSTATE alone does not say
  int64_t statements_ = 0;
  std::string event_buffer_;  // the statement event being built, reused
  std::vector<StatementRecord> completed_;  // statements completed, their events not yet emitted
  std::shared_ptr<const std::string> last_text_;  // the last statement text whose facts are kept
  const StatementInfo* last_info_ = nullptr;      // ... and those facts
  Grant grant_;
  const v1::Connection* connection_ = nullptr;  // in policy_, the snapshot the session started with
  GuardrailSet guardrails_;
  uint64_t policy_generation_ = ~uint64_t{0};  // of the guardrails and masking rules below
  std::shared_ptr<const AgentPolicy> guardrails_policy_;  // keeps the rules' snapshot alive
  // Named statements that passed the checks under policy generation checked_generation_.
  absl::flat_hash_set<std::string> checked_names_;
  uint64_t checked_generation_ = ~uint64_t{0};

  // One per forwarded Query, Sync or FunctionCall, in order: what to do when its answer comes.
  struct Expectation {
    std::string refusal;         // an ErrorResponse to deliver (empty: none)
    bool substitute = false;     // the Query was replaced by an empty one: refusal replaces 'I'
    bool server_failed = false;  // the server reported an error in this stretch itself
  };
  Fifo<Expectation> expected_;
  // Approvals.
  std::optional<HoldRequest> pending_hold_;         // set by Check for the message being inspected
  absl::flat_hash_set<std::string> approved_once_;  // named statements approved at Parse
  uint64_t holds_ = 0;
  struct HoldSlot {  // the statement held now, for a cancel request from another connection
    absl::Mutex mu;
    std::shared_ptr<ApprovalWaiter> waiter ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<HoldSlot> hold_slot_ = std::make_shared<HoldSlot>();
  bool discarding_ = false;      // after a refused Parse, until Sync
  bool executed_since_sync_ = false;  // an Execute was forwarded since the last Sync
  std::string function_text_;  // how the FunctionCall being relayed is recorded
  std::string pending_refusal_;  // the refusal the next Sync carries
  int64_t bytes_from_client_ = 0;
  int64_t bytes_from_server_ = 0;
  std::shared_ptr<const AgentPolicy> policy_;
  // Masking.
  masking::MaskingPolicy masking_;
  ResultRouter router_;
  std::unique_ptr<CatalogResolver> catalog_;
  struct CachedPlan {
    std::shared_ptr<const ResultPlan> plan;
    absl::Time expires;
  };
  absl::flat_hash_map<std::string, CachedPlan> plan_cache_;  // by RowDescription (+ formats)
  std::string plan_key_;  // reused
  std::vector<std::optional<masking::Selected>> computed_;  // see ComputeOverrides
  std::string backend_out_;  // relayed bytes waiting behind a rewritten message
  std::string replacement_;  // the rewritten message
  UpstreamSession upstream_;
  BackendKeyData agent_key_;
  int protocol_minor_ = 0;
};

}  // namespace

asio::awaitable<void> RunSession(asio::ip::tcp::socket socket, SessionDeps deps) {
  socket.set_option(asio::ip::tcp::no_delay(true));
  Session session(std::move(socket), deps);
  co_await session.Run();
}

}  // namespace sluice::agent::postgres
