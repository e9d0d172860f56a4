#include "controlplane/service/jwks_fetcher.h"

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "common/jwt.h"
#include "common/log.h"

namespace sluice::controlplane {

JwksFetcher::JwksFetcher(absl::Duration interval, std::function<std::vector<std::string>()> urls,
                         std::function<void(const std::string&, const std::string&)> on_change)
    : interval_(interval), urls_(std::move(urls)), on_change_(std::move(on_change)) {}

JwksFetcher::~JwksFetcher() { Stop(); }

void JwksFetcher::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void JwksFetcher::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

void JwksFetcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::string> JwksFetcher::Fetch(const std::string& url) {
  std::string origin, path;
  if (absl::Status st = SplitUrl(url, &origin, &path); !st.ok()) return st;
  httplib::Client client(origin);
  client.set_connection_timeout(5);
  client.set_read_timeout(5);
  client.set_follow_location(false);
  if (absl::StartsWith(url, "https://")) client.enable_server_certificate_verification(true);
  std::string body;
  bool too_big = false;
  auto res = client.Get(path.c_str(), [&](const char* data, size_t n) {
    if (body.size() + n > jwt::kMaxJwksBytes) {
      too_big = true;
      return false;
    }
    body.append(data, n);
    return true;
  });
  if (too_big)
    return absl::InvalidArgumentError(absl::StrCat("JWKS at ", url, " is larger than 256 KiB"));
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("cannot fetch ", url, ": ", httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return absl::UnavailableError(absl::StrCat("cannot fetch ", url, ": HTTP ", res->status));
  }
  auto keys = jwt::ParseJwks(body);
  if (!keys.ok())
    return absl::InvalidArgumentError(absl::StrCat("JWKS at ", url, ": ", keys.status().message()));
  if (keys->keys.empty())
    return absl::InvalidArgumentError(absl::StrCat("JWKS at ", url, " has no usable keys"));
  return body;
}

void JwksFetcher::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      woken_ = false;
    }
    for (const std::string& url : urls_()) {
      auto doc = Fetch(url);
      if (!doc.ok()) {
        LogWarning("JWKS refresh: ", doc.status().message(), " (keeping the last good keys)");
        continue;
      }
      if (last_[url] == *doc) continue;
      last_[url] = *doc;
      LogInfo("JWKS from ", url, " changed: shipping the new keys to agents");
      on_change_(url, *doc);
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](JwksFetcher* f) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                               return f->stopping_ || f->woken_;
                             },
                             this),
                         interval_);
  }
}

}  // namespace sluice::controlplane
