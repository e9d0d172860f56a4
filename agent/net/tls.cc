#include "agent/net/tls.h"

#include "absl/strings/str_cat.h"

namespace sluice::agent::net {

absl::Status ConfigureServerTls(asio::ssl::context* ctx, const std::string& cert_file,
                                const std::string& key_file, absl::string_view what) {
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  asio::error_code ec;
  ctx->use_certificate_chain_file(cert_file, ec);
  if (!ec) ctx->use_private_key_file(key_file, asio::ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load the ", what, " listener certificate ", cert_file, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace sluice::agent::net
