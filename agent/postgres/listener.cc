#include "agent/postgres/listener.h"

#include <openssl/ssl.h>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "common/log.h"

namespace sluice::agent::postgres {
namespace {

// ALPN for PostgreSQL 17 direct TLS: accept "postgresql"; refuse a client that offers only
// other protocols, as PostgreSQL does. Clients that offer no ALPN (SSLRequest path) are fine.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  static const unsigned char kPostgresql[] = "\x0apostgresql";
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kPostgresql, sizeof(kPostgresql) - 1, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace

Listener::Listener(ListenerOptions options, PolicyHolder* policy, EventSink* events, ApprovalBroker* approvals)
    : options_(std::move(options)), policy_(policy), events_(events), approvals_(approvals) {}

Listener::~Listener() { Stop(); }

absl::StatusOr<int> Listener::Start() {
  config_.allow_plaintext = options_.allow_plaintext;
  config_.limits = options_.limits;
  config_.login_timeout = options_.login_timeout;
  config_.recording = options_.recording;
  if (!options_.tls_cert_file.empty()) {
    asio::error_code ec;
    tls_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    tls_.use_certificate_chain_file(options_.tls_cert_file, ec);
    if (!ec) tls_.use_private_key_file(options_.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load the PostgreSQL listener certificate ",
                                                     options_.tls_cert_file, ": ", ec.message()));
    }
    SSL_CTX_set_alpn_select_cb(tls_.native_handle(), SelectAlpn, nullptr);
    config_.tls_available = true;
  } else if (!options_.allow_plaintext) {
    return absl::InvalidArgumentError(
        "the PostgreSQL listener needs a TLS certificate, or plaintext explicitly allowed");
  }

  std::string host;
  int port = 0;
  if (absl::Status st = SplitHostPort(options_.listen, &host, &port); !st.ok()) return st;
  int workers = std::max(1, options_.workers);
  for (int i = 0; i < workers; ++i) {
    loops_.push_back(std::make_unique<asio::io_context>(1));
    guards_.push_back(asio::make_work_guard(*loops_.back()));
  }
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("PostgreSQL listen address '", host, "': ", ec.message()));
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(*loops_[0]);
  asio::ip::tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  acceptor_->open(endpoint.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_->bind(endpoint, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen, ": ", ec.message()));
  int bound = acceptor_->local_endpoint().port();
  asio::co_spawn(*loops_[0], AcceptLoop(), asio::detached);
  for (auto& loop : loops_) {
    asio::io_context* l = loop.get();
    threads_.emplace_back([l] { l->run(); });
  }
  return bound;
}

asio::awaitable<void> Listener::AcceptLoop() {
  SessionDeps deps{policy_, &cancels_, &tls_, &config_, events_, approvals_, options_.inflight};
  while (acceptor_->is_open()) {
    asio::io_context& loop = *loops_[next_loop_++ % loops_.size()];
    auto [ec, socket] = co_await acceptor_->async_accept(loop, asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      LogWarning("accept failed: ", ec.message());
      continue;
    }
    asio::co_spawn(loop, RunSession(std::move(socket), deps), [](std::exception_ptr e) {
      // Our code does not throw; this would be an allocation failure inside Asio or OpenSSL.
      if (e) LogError("a PostgreSQL session ended by an unexpected exception");
    });
  }
}

void Listener::Stop() {
  if (acceptor_) {
    asio::post(*loops_[0], [this] {
      asio::error_code ignored;
      acceptor_->close(ignored);
    });
  }
  guards_.clear();
  for (auto& loop : loops_) loop->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

}  // namespace sluice::agent::postgres
