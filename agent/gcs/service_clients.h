// Clients of the cloud services, kept between requests: each keeps its connection open
// (keep-alive) and its TLS context, which OpenSSL 3 makes slowly (a context and a handshake per
// request cost milliseconds of CPU each). A client serves one request at a time: Take lends one
// (or makes it), Give takes it back once its answer was read whole; a client whose request
// failed or was cut short is dropped, so no answer's rest can reach another request. Idle
// clients are kept up to kMaxIdle per service. Requests carry their own Authorization: a client
// holds no credential of its own.
#pragma once

#include <httplib.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::gcs {

class ServiceClients {
 public:
  static constexpr size_t kMaxIdle = 32;

  std::unique_ptr<httplib::Client> Take(const v1::Upstream& up);
  void Give(const v1::Upstream& up, std::unique_ptr<httplib::Client> client);
  size_t idle() const;

  // A new client of the service (TLS as the Connection says), answers as they come.
  static std::unique_ptr<httplib::Client> Make(const v1::Upstream& up);

 private:
  static std::string KeyOf(const v1::Upstream& up);

  mutable absl::Mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<httplib::Client>>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent::gcs
