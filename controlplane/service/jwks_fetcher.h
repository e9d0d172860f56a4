// Fetches the JWKS of every Issuer that names a `jwks.url`, so that agents need no route to the
// identity provider: the keys travel inside their snapshots (as `jwks.inline`). Fetched at start,
// whenever the policy changes, and every `interval` after that; a failed fetch keeps the last good
// keys. Documents are size-capped and must parse as a JWKS with usable keys.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sluice::controlplane {

class JwksFetcher {
 public:
  // `urls` lists the URLs to fetch (called on the fetcher thread); `on_change` receives a URL whose
  // document changed, with the new document.
  JwksFetcher(absl::Duration interval, std::function<std::vector<std::string>()> urls,
              std::function<void(const std::string& url, const std::string& jwks)> on_change);
  ~JwksFetcher();

  void Start();
  // Fetch now (e.g. after a policy change).
  void Wake();
  void Stop();

  // One GET, with timeouts and a size cap; the body must be a JWKS with at least one usable key.
  static absl::StatusOr<std::string> Fetch(const std::string& url);

 private:
  void Loop();

  absl::Duration interval_;
  std::function<std::vector<std::string>()> urls_;
  std::function<void(const std::string&, const std::string&)> on_change_;
  std::thread thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::string> last_;  // fetcher thread only
};

}  // namespace sluice::controlplane
