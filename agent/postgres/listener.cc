#include "agent/postgres/listener.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// Moves an accepted socket to another loop (the fd is re-registered with that loop's reactor);
// on failure the connection is closed.
asio::error_code MoveToLoop(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to) {
  asio::error_code ec;
  auto protocol = from.local_endpoint(ec).protocol();
  if (ec) return ec;
  int fd = from.release(ec);
  if (ec) return ec;
  to.assign(protocol, fd, ec);
  if (ec) ::close(fd);
  return ec;
}

// Limits `thread` to `cpus`; 0 or an errno value.
int SetThreadCpus(std::thread& thread, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  return pthread_setaffinity_np(thread.native_handle(), sizeof(set), &set);
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
  // One worker per CPU the agent may run on: each is pinned to its CPU (see worker_placement.h).
  std::vector<int> cpus = options_.cpu_affinity ? AllowedCpus() : std::vector<int>{};
  std::vector<int> worker_cpus;
  if (cpus.size() > 1 && cpus.size() == static_cast<size_t>(workers)) worker_cpus = cpus;
  for (auto& loop : loops_) {
    asio::io_context* l = loop.get();
    threads_.emplace_back([l] { l->run(); });
  }
  for (size_t i = 0; i < worker_cpus.size(); ++i) {
    if (int err = SetThreadCpus(threads_[i], {worker_cpus[i]}); err != 0) {
      LogWarning("PostgreSQL worker ", i, " not pinned to CPU ", worker_cpus[i], ": ", std::strerror(err),
                 "; workers float and connections are spread round robin");
      for (size_t j = 0; j < i; ++j) SetThreadCpus(threads_[j], cpus);  // none stays half-pinned
      worker_cpus.clear();
    }
  }
  if (!worker_cpus.empty()) {
    LogInfo("PostgreSQL workers pinned to CPUs ", absl::StrJoin(worker_cpus, ","),
            "; each connection goes to the worker on the CPU it arrives on, while the workers stay balanced");
  } else if (options_.cpu_affinity && cpus.size() > 1) {
    LogInfo("PostgreSQL workers not pinned: ", workers, " workers for ", cpus.size(),
            " CPUs (pinning needs one worker per CPU the agent may run on)");
  }
  placement_ = std::make_unique<WorkerPlacement>(loops_.size(), std::move(worker_cpus));
  asio::co_spawn(*loops_[0], AcceptLoop(), asio::detached);
  return bound;
}

asio::awaitable<void> Listener::AcceptLoop() {
  SessionDeps deps{policy_, &cancels_, &tls_, &config_, events_, approvals_, options_.inflight,
                   options_.limiter};
  while (acceptor_->is_open()) {
    auto [ec, accepted] = co_await acceptor_->async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      LogWarning("accept failed: ", ec.message());
      continue;
    }
    int cpu = -1;
    socklen_t len = sizeof(cpu);
    if (getsockopt(accepted.native_handle(), SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) != 0) cpu = -1;
    size_t worker = placement_->Pick(cpu);
    // The socket moves to its worker's loop (accepted on the acceptor's, which is worker 0's).
    asio::ip::tcp::socket socket(*loops_[worker]);
    if (asio::error_code move_ec = MoveToLoop(accepted, socket)) {
      LogWarning("accepted connection dropped: ", move_ec.message());
      placement_->Release(worker);
      continue;
    }
    WorkerPlacement* placement = placement_.get();
    asio::co_spawn(*loops_[worker], RunSession(std::move(socket), deps), [placement, worker](std::exception_ptr e) {
      placement->Release(worker);
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
