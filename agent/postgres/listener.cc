#include "agent/postgres/listener.h"

#include <openssl/ssl.h>

#include "agent/net/tls.h"
#include "agent/postgres/cancel_registry.h"

namespace sluice::agent::postgres {

struct Listener::Shared {
  SessionConfig config;
  CancelRegistry cancels;
  asio::ssl::context tls{asio::ssl::context::tls_server};
  SessionDeps deps;  // points into this and at what outlives the pool
};

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

// A session holds the port's shared state (in its coroutine frame) for as long as it runs.
asio::awaitable<void> Serve(std::shared_ptr<Listener::Shared> shared,
                            asio::ip::tcp::socket socket) {
  co_await RunSession(std::move(socket), shared->deps);
}

}  // namespace

Listener::Listener(ListenerOptions options, net::WorkerPool* pool, PolicyHolder* policy,
                   EventSink* events, ApprovalBroker* approvals)
    : options_(std::move(options)),
      shared_(std::make_shared<Shared>()),
      listener_("PostgreSQL", pool, [shared = shared_](asio::ip::tcp::socket socket) {
        return Serve(shared, std::move(socket));
      }) {
  shared_->deps = SessionDeps{policy, &shared_->cancels, &shared_->tls,     &shared_->config,
                              events, approvals,         options_.inflight, options_.limiter};
}

Listener::~Listener() { Stop(); }

absl::StatusOr<int> Listener::Start() {
  SessionConfig& config = shared_->config;
  config.allow_plaintext = options_.allow_plaintext;
  config.limits = options_.limits;
  config.login_timeout = options_.login_timeout;
  config.recording = options_.recording;
  if (!options_.tls_cert_file.empty()) {
    absl::Status st = net::ConfigureServerTls(&shared_->tls, options_.tls_cert_file,
                                              options_.tls_key_file, "PostgreSQL");
    if (!st.ok()) return st;
    SSL_CTX_set_alpn_select_cb(shared_->tls.native_handle(), SelectAlpn, nullptr);
    config.tls_available = true;
  } else if (!options_.allow_plaintext) {
    return absl::InvalidArgumentError(
        "the PostgreSQL listener needs a TLS certificate, or plaintext explicitly allowed");
  }
  return listener_.Start(options_.listen);
}

void Listener::Stop() { listener_.Stop(); }

}  // namespace sluice::agent::postgres
