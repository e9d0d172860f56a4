#include "agent/gcs/access_tokens.h"

#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sluice::agent::gcs {

namespace {

constexpr absl::Duration kRefreshBefore = absl::Minutes(5);
constexpr size_t kMaxTokenResponse = 64 << 10;

struct Endpoint {
  std::string host;
  int port = 443;
  std::string path;
};

// https://host[:port]/path, nothing else (no user info).
absl::StatusOr<Endpoint> SplitHttpsUrl(absl::string_view url) {
  constexpr absl::string_view kScheme = "https://";
  if (!absl::StartsWith(url, kScheme)) return absl::InvalidArgumentError("not an https:// URL");
  absl::string_view rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  Endpoint e;
  e.path = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.empty() || absl::StrContains(authority, '@')) {
    return absl::InvalidArgumentError("no host in the URL");
  }
  const size_t colon = authority.rfind(':');
  if (colon != absl::string_view::npos && authority.find(']') == absl::string_view::npos) {
    if (!absl::SimpleAtoi(authority.substr(colon + 1), &e.port) || e.port <= 0 || e.port > 65535) {
      return absl::InvalidArgumentError("a bad port in the URL");
    }
    authority = authority.substr(0, colon);
  }
  e.host = std::string(authority);
  return e;
}

std::unique_ptr<httplib::SSLClient> ClientOf(const Endpoint& e, const v1::Upstream& upstream) {
  auto client = std::make_unique<httplib::SSLClient>(e.host, e.port);
  if (!upstream.ca_file().empty()) client->set_ca_cert_path(upstream.ca_file());
  client->enable_server_certificate_verification(true);
  client->set_connection_timeout(10);
  client->set_read_timeout(20);
  client->set_write_timeout(20);
  return client;
}

// The token in an answer's `field`, which must be a non-empty string of sane length.
absl::StatusOr<std::string> TokenOf(const nlohmann::json& j, const char* field,
                                    absl::string_view who) {
  if (!j.is_object() || !j.contains(field) || !j[field].is_string()) {
    return absl::UnavailableError(absl::StrCat(who, "'s answer has no ", field));
  }
  std::string token = j[field].get<std::string>();
  if (token.empty() || token.size() > 4096) {
    return absl::UnavailableError(absl::StrCat(who, "'s ", field, " is empty or too long"));
  }
  return token;
}

constexpr char kGoogleIamCredentials[] = "https://iamcredentials.googleapis.com";

// The characters a path segment keeps as they are (RFC 3986 unreserved, and '@').
std::string EscapeSegment(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
        c == '~' || c == '@') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> AccessTokens::Impersonated(const cloud::ServiceAccountKey& key,
                                                       const v1::Upstream& upstream,
                                                       const std::string& iam_url,
                                                       const std::string& email,
                                                       const char* scope) {
  const std::string base = iam_url.empty() ? kGoogleIamCredentials : iam_url;
  const std::string id =
      absl::StrCat("as\n", email, "\n", key.client_email, "\n", key.private_key_id, "\n", base,
                   "\n", upstream.ca_file(), "\n", scope);
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(id);
    if (it != cache_.end() && absl::Now() < it->second.refresh_at) return it->second.token;
  }
  auto own = Get(key, upstream, scope);
  if (!own.ok()) return own.status();
  auto endpoint = SplitHttpsUrl(base);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the connection's iam_credentials_url: ", endpoint.status().message()));
  }
  const absl::Time now = absl::Now();
  auto client = ClientOf(*endpoint, upstream);
  std::string prefix = endpoint->path == "/" ? "" : endpoint->path;
  while (absl::EndsWith(prefix, "/")) prefix.pop_back();
  const std::string path = absl::StrCat(prefix, "/v1/projects/-/serviceAccounts/",
                                        EscapeSegment(email), ":generateAccessToken");
  const nlohmann::json request = {{"scope", nlohmann::json::array({scope})}, {"lifetime", "3600s"}};
  auto res =
      client->Post(path.c_str(), httplib::Headers{{"Authorization", absl::StrCat("Bearer ", *own)}},
                   request.dump(), "application/json");
  if (!res) {
    return absl::UnavailableError(absl::StrCat("the IAM Credentials API at ", endpoint->host,
                                               " could not be reached (",
                                               httplib::to_string(res.error()), ")"));
  }
  nlohmann::json j = res->body.size() > kMaxTokenResponse
                         ? nlohmann::json()
                         : nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (res->status != 200) {
    std::string why;
    if (j.is_object() && j.contains("error") && j["error"].is_object() &&
        j["error"].contains("status") && j["error"]["status"].is_string()) {
      why = j["error"]["status"].get<std::string>().substr(0, 64);
    }
    return absl::PermissionDeniedError(
        absl::StrCat("the connection's service account may not act as ", email,
                     " (IAM Credentials: HTTP ", res->status, why.empty() ? "" : ", ", why, ")"));
  }
  Cached c;
  auto token = TokenOf(j, "accessToken", "the IAM Credentials API");
  if (!token.ok()) return token.status();
  c.token = *std::move(token);
  absl::Time expires = now + absl::Hours(1);
  std::string err;
  if (j.contains("expireTime") && j["expireTime"].is_string()) {
    absl::Time parsed;
    if (absl::ParseTime(absl::RFC3339_full, j["expireTime"].get<std::string>(), &parsed, &err)) {
      expires = std::min(parsed, expires);
    }
  }
  c.refresh_at = expires - kRefreshBefore;
  absl::MutexLock lock(&mu_);
  cache_[id] = c;
  return c.token;
}

absl::StatusOr<std::string> AccessTokens::Get(const cloud::ServiceAccountKey& key,
                                              const v1::Upstream& upstream, const char* scope) {
  const std::string id = absl::StrCat(key.client_email, "\n", key.private_key_id, "\n",
                                      key.token_uri, "\n", upstream.ca_file(), "\n", scope);
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(id);
    if (it != cache_.end() && absl::Now() < it->second.refresh_at) return it->second.token;
  }
  // Minted outside the lock: a slow endpoint does not hold up the other Connections' requests.
  auto minted = Mint(key, upstream, scope);
  if (!minted.ok()) return minted.status();
  absl::MutexLock lock(&mu_);
  cache_[id] = *minted;
  return minted->token;
}

absl::StatusOr<AccessTokens::Cached> AccessTokens::Mint(const cloud::ServiceAccountKey& key,
                                                        const v1::Upstream& upstream,
                                                        const char* scope) {
  auto endpoint = SplitHttpsUrl(key.token_uri);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the service account key's token_uri: ", endpoint.status().message()));
  }
  const absl::Time now = absl::Now();
  auto assertion = cloud::JwtBearerAssertion(key, scope, now);
  if (!assertion.ok()) {
    return absl::InternalError("the service account key could not sign the token request");
  }
  auto client = ClientOf(*endpoint, upstream);
  std::string body;
  bool too_long = false;
  auto res =
      client->Post(endpoint->path.c_str(), httplib::Headers{},
                   cloud::JwtBearerRequestBody(*assertion), "application/x-www-form-urlencoded");
  if (!res) {
    return absl::UnavailableError(absl::StrCat("the token endpoint ", endpoint->host,
                                               " could not be reached (",
                                               httplib::to_string(res.error()), ")"));
  }
  body = res->body;
  too_long = body.size() > kMaxTokenResponse;
  nlohmann::json j = too_long ? nlohmann::json()
                              : nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (res->status != 200) {
    const bool has_code = j.is_object() && j.contains("error") && j["error"].is_string();
    const std::string code = has_code ? j["error"].get<std::string>() : "";
    return absl::UnavailableError(
        absl::StrCat("the token endpoint refused the service account's grant (HTTP ", res->status,
                     code.empty() ? "" : ", ", code.substr(0, 64), ")"));
  }
  Cached c;
  auto token = TokenOf(j, "access_token", "the token endpoint");
  if (!token.ok()) return token.status();
  c.token = *std::move(token);
  int64_t expires_in = 3600;
  if (j.contains("expires_in") && j["expires_in"].is_number_integer()) {
    expires_in = j["expires_in"].get<int64_t>();
  }
  c.refresh_at = now + absl::Seconds(expires_in) - kRefreshBefore;
  return c;
}

}  // namespace sluice::agent::gcs
