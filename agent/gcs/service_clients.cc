#include "agent/gcs/service_clients.h"

#include "absl/strings/str_cat.h"

namespace sluice::agent::gcs {

std::string ServiceClients::KeyOf(const v1::Upstream& up) {
  // Everything Make reads: a client is only lent for the same service, reached the same way.
  return absl::StrCat(up.host(), "\n", up.port(), "\n", static_cast<int>(up.tls()), "\n",
                      up.ca_file());
}

std::unique_ptr<httplib::Client> ServiceClients::Make(const v1::Upstream& up) {
  const bool tls = up.tls() != v1::UPSTREAM_TLS_DISABLE;
  auto client = std::make_unique<httplib::Client>(
      absl::StrCat(tls ? "https://" : "http://", up.host(), ":", up.port()));
  if (tls) {
    client->enable_server_certificate_verification(up.tls() == v1::UPSTREAM_TLS_VERIFY_FULL);
    if (!up.ca_file().empty()) client->set_ca_cert_path(up.ca_file());
  }
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);  // a request's head and body are separate writes
  client->set_decompress(false);
  client->set_connection_timeout(10);
  client->set_read_timeout(120);
  client->set_write_timeout(120);
  return client;
}

std::unique_ptr<httplib::Client> ServiceClients::Take(const v1::Upstream& up) {
  {
    absl::MutexLock lock(&mu_);
    auto it = idle_.find(KeyOf(up));
    if (it != idle_.end() && !it->second.empty()) {
      std::unique_ptr<httplib::Client> client = std::move(it->second.back());
      it->second.pop_back();
      return client;
    }
  }
  return Make(up);
}

void ServiceClients::Give(const v1::Upstream& up, std::unique_ptr<httplib::Client> client) {
  if (!client || !client->is_socket_open()) return;
  absl::MutexLock lock(&mu_);
  auto& idle = idle_[KeyOf(up)];
  if (idle.size() < kMaxIdle) idle.push_back(std::move(client));
}

size_t ServiceClients::idle() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [key, clients] : idle_) n += clients.size();
  return n;
}

}  // namespace sluice::agent::gcs
