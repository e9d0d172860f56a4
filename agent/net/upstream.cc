#include "agent/net/upstream.h"

#include "absl/strings/str_cat.h"

namespace sluice::agent::net {

UpstreamTarget TargetOf(const v1::Connection& connection) {
  UpstreamTarget t;
  t.host = connection.upstream().host();
  t.port = static_cast<uint16_t>(connection.upstream().port());
  t.tls = connection.upstream().tls() == v1::UPSTREAM_TLS_UNSPECIFIED ? v1::UPSTREAM_TLS_REQUIRE
                                                                      : connection.upstream().tls();
  t.ca_file = connection.upstream().ca_file();
  return t;
}

asio::awaitable<absl::StatusOr<Dialed>> Dial(asio::any_io_executor executor,
                                             const UpstreamTarget& target) {
  asio::ip::tcp::resolver resolver(executor);
  std::string service = std::to_string(target.port);
  auto [rec, endpoints] = co_await resolver.async_resolve(target.host, service, kNoThrow);
  if (rec)
    co_return absl::UnavailableError(
        absl::StrCat("cannot resolve ", target.host, ": ", rec.message()));
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                   asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  asio::ip::tcp::socket socket(executor);
  auto [cec, ep] = co_await asio::async_connect(socket, endpoints, kNoThrow);
  if (cec) {
    co_return absl::UnavailableError(
        absl::StrCat("cannot connect to ", target.host, ":", target.port, ": ", cec.message()));
  }
  socket.set_option(asio::ip::tcp::no_delay(true));
  co_return Dialed{std::move(socket), std::move(ctx)};
}

absl::Status PrepareClientTls(const UpstreamTarget& target, asio::ssl::context* ctx,
                              Stream* stream) {
  if (target.tls == v1::UPSTREAM_TLS_VERIFY_FULL) {
    asio::error_code ec;
    if (target.ca_file.empty()) {
      ctx->set_default_verify_paths(ec);
    } else {
      ctx->load_verify_file(target.ca_file, ec);
    }
    if (ec)
      return absl::FailedPreconditionError(
          absl::StrCat("cannot load CA ", target.ca_file, ": ", ec.message()));
    stream->tls_stream().set_verify_mode(asio::ssl::verify_peer);
    stream->tls_stream().set_verify_callback(asio::ssl::host_name_verification(target.host));
  } else {
    stream->tls_stream().set_verify_mode(asio::ssl::verify_none);
  }
  SSL_set_tlsext_host_name(stream->tls_stream().native_handle(), target.host.c_str());
  return absl::OkStatus();
}

}  // namespace sluice::agent::net
