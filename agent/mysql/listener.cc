#include "agent/mysql/listener.h"

#include "agent/net/tls.h"

namespace sluice::agent::mysql {

struct Listener::Shared {
  SessionConfig config;
  KillRegistry kills;
  asio::ssl::context tls{asio::ssl::context::tls_server};
  SessionDeps deps;  // points into this and at what outlives the pool
};

namespace {

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
      listener_("MySQL", pool, [shared = shared_](asio::ip::tcp::socket socket) {
        return Serve(shared, std::move(socket));
      }) {
  shared_->deps = SessionDeps{policy,    &shared_->tls,     &shared_->config, events,
                              approvals, options_.inflight, options_.limiter, &shared_->kills};
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
                                              options_.tls_key_file, "MySQL");
    if (!st.ok()) return st;
    config.tls_available = true;
  } else if (!options_.allow_plaintext) {
    return absl::InvalidArgumentError(
        "the MySQL listener needs a TLS certificate, or plaintext explicitly allowed");
  }
  return listener_.Start(options_.listen);
}

void Listener::Stop() { listener_.Stop(); }

}  // namespace sluice::agent::mysql
