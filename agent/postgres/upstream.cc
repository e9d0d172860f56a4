#include "agent/postgres/upstream.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/postgres/upstream_auth.h"
#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres {

using wire::postgres::Authentication;
using wire::postgres::BackendKeyData;
using wire::postgres::CancelRequest;
using wire::postgres::DecodeLimits;
using wire::postgres::Direction;
using wire::postgres::ErrorOrNotice;
using wire::postgres::Frame;
using wire::postgres::kProtocol30;
using wire::postgres::kSslRequestCode;
using wire::postgres::ParameterStatus;
using wire::postgres::PasswordMessage;
using wire::postgres::ReadyForQuery;
using wire::postgres::StartupMessage;
using wire::postgres::WireWriter;

namespace {

std::string UpstreamError(const Message& m) {
  auto e = ErrorOrNotice::Decode(m.payload);
  if (!e.ok()) return "the database sent a malformed error";
  return absl::StrCat(e->Get('M').value_or("error"), " (SQLSTATE ", e->Get('C').value_or("?"), ")");
}

std::string SaslMessage(absl::string_view mechanism, absl::string_view data) {
  WireWriter w;
  w.CString(mechanism);
  w.Int32(static_cast<int32_t>(data.size()));
  w.Bytes(data);
  return Frame('p', w.data());
}

}  // namespace

asio::awaitable<
    absl::StatusOr<std::pair<std::unique_ptr<Stream>, std::unique_ptr<asio::ssl::context>>>>
OpenUpstream(asio::any_io_executor executor, const UpstreamTarget& target) {
  auto dialed = co_await net::Dial(executor, target);
  if (!dialed.ok()) co_return dialed.status();
  auto ctx = std::move(dialed->tls_context);
  auto stream = std::make_unique<Stream>(std::move(dialed->socket), *ctx);
  if (target.tls != v1::UPSTREAM_TLS_DISABLE) {
    absl::Status st = net::PrepareClientTls(target, ctx.get(), stream.get());
    if (!st.ok()) co_return st;
    WireWriter w;
    w.Int32(kSslRequestCode);
    std::string ssl_request = Frame(0, w.data());
    st = co_await stream->Write(ssl_request);
    if (!st.ok()) co_return st;
    while (stream->buffer().empty()) {
      st = co_await stream->ReadMore(1);
      if (!st.ok()) co_return st;
    }
    char answer = stream->buffer()[0];
    stream->Consume(1);
    if (answer != 'S') {
      co_return absl::FailedPreconditionError(
          "the database does not accept TLS, but the connection requires it (upstream.tls)");
    }
    st = co_await stream->ClientHandshake();
    if (!st.ok()) co_return st;
  }
  co_return std::make_pair(std::move(stream), std::move(ctx));
}

asio::awaitable<absl::StatusOr<UpstreamSession>> ConnectUpstream(asio::any_io_executor executor,
                                                                 const UpstreamTarget& target,
                                                                 const UpstreamLogin& login,
                                                                 const DecodeLimits& limits) {
  auto opened = co_await OpenUpstream(executor, target);
  if (!opened.ok()) co_return opened.status();
  UpstreamSession session;
  session.stream = std::move(opened->first);
  session.tls_context = std::move(opened->second);
  Stream& s = *session.stream;

  StartupMessage startup;
  startup.protocol = kProtocol30;
  startup.parameters.emplace_back("user", login.user);
  startup.parameters.emplace_back("database", login.database);
  for (const auto& p : login.parameters) startup.parameters.push_back(p);
  std::string startup_wire = startup.Encode();
  absl::Status st = co_await s.Write(startup_wire);
  if (!st.ok()) co_return st;

  std::optional<ScramSha256Client> scram;
  while (true) {
    auto m = co_await s.ReadMessage(false, Direction::kBackend, limits);
    if (!m.ok()) co_return m.status();
    switch (m->type) {
      case 'R': {
        auto auth = Authentication::Decode(m->payload);
        if (!auth.ok()) co_return auth.status();
        std::string reply;
        switch (auth->code) {
          case Authentication::kOk:
            break;
          case Authentication::kCleartextPassword:
            reply = PasswordMessage{login.password}.Encode();
            break;
          case Authentication::kMd5Password:
            if (auth->data.size() != 4)
              co_return absl::InvalidArgumentError("malformed MD5 salt from the database");
            reply = PasswordMessage{Md5PasswordResponse(login.user, login.password, auth->data)}
                        .Encode();
            break;
          case Authentication::kSasl: {
            bool offered = false;
            for (absl::string_view mech : absl::StrSplit(auth->data, '\0')) {
              if (mech == ScramSha256Client::kMechanism) offered = true;
            }
            if (!offered)
              co_return absl::FailedPreconditionError(
                  "the database offers no SASL mechanism the agent supports (SCRAM-SHA-256)");
            scram.emplace("", login.password);
            reply = SaslMessage(ScramSha256Client::kMechanism, scram->ClientFirst());
            break;
          }
          case Authentication::kSaslContinue: {
            if (!scram)
              co_return absl::InvalidArgumentError("unexpected SASL continue from the database");
            auto final_msg = scram->ClientFinal(auth->data);
            if (!final_msg.ok()) co_return final_msg.status();
            reply = Frame('p', *final_msg);
            break;
          }
          case Authentication::kSaslFinal: {
            if (!scram)
              co_return absl::InvalidArgumentError("unexpected SASL final from the database");
            absl::Status v = scram->VerifyServerFinal(auth->data);
            if (!v.ok()) co_return v;
            break;
          }
          default:
            co_return absl::FailedPreconditionError(absl::StrCat(
                "the database asks for an authentication method the agent does not support (code ",
                auth->code, ")"));
        }
        if (!reply.empty()) {
          st = co_await s.Write(reply);
          if (!st.ok()) co_return st;
        }
        break;
      }
      case 'E':
        co_return absl::PermissionDeniedError(
            absl::StrCat("the database refused the login: ", UpstreamError(*m)));
      case 'S': {
        auto ps = ParameterStatus::Decode(m->payload);
        if (!ps.ok()) co_return ps.status();
        session.parameters.push_back(*ps);
        break;
      }
      case 'K': {
        auto key = BackendKeyData::Decode(m->payload);
        if (!key.ok()) co_return key.status();
        session.key = *key;
        break;
      }
      case 'N':
        session.notices.push_back(Frame('N', m->payload));
        break;
      case 'v':
        break;  // we asked for 3.0, nothing to negotiate
      case 'Z': {
        auto z = ReadyForQuery::Decode(m->payload);
        if (!z.ok()) co_return z.status();
        session.transaction_status = z->status;
        co_return session;
      }
      default:
        co_return absl::InvalidArgumentError(absl::StrCat(
            "unexpected message '", std::string(1, m->type), "' from the database during login"));
    }
  }
}

asio::awaitable<absl::Status> SendUpstreamCancel(asio::any_io_executor executor,
                                                 const UpstreamTarget& target,
                                                 const BackendKeyData& key) {
  auto opened = co_await OpenUpstream(executor, target);
  if (!opened.ok()) co_return opened.status();
  std::string cancel = CancelRequest{key.process_id, key.secret_key}.Encode();
  absl::Status st = co_await opened->first->Write(cancel);
  opened->first->Close();
  co_return st;
}

}  // namespace sluice::agent::postgres
