#include "common/cloud/service_account.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/jwt.h"

namespace sluice::cloud {

namespace {

constexpr size_t kMaxKeyBytes = 64 << 10;

absl::Status Wrong(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("not a service account's JSON key: ", what));
}

// application/x-www-form-urlencoded: unreserved bytes as they are, the rest %XX.
std::string FormEncode(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<ServiceAccountKey> ParseServiceAccountKey(absl::string_view json) {
  if (json.size() > kMaxKeyBytes) return Wrong("over 64 KiB");
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Wrong("not a JSON object");
  auto text = [&](const char* name) -> std::string {
    auto it = j.find(name);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (text("type") != "service_account") return Wrong("\"type\" is not \"service_account\"");
  ServiceAccountKey key;
  key.client_email = text("client_email");
  key.private_key = text("private_key");
  key.private_key_id = text("private_key_id");
  key.token_uri = text("token_uri");
  key.project_id = text("project_id");
  if (key.client_email.empty() || key.client_email.size() > 320 ||
      key.client_email.find('@') == std::string::npos) {
    return Wrong("no \"client_email\"");
  }
  if (!absl::StartsWith(key.private_key, "-----BEGIN PRIVATE KEY-----") &&
      !absl::StartsWith(key.private_key, "-----BEGIN RSA PRIVATE KEY-----")) {
    return Wrong("\"private_key\" is not a PEM private key");
  }
  if (!absl::StartsWith(key.token_uri, "https://") || key.token_uri.size() > 2048) {
    return Wrong("\"token_uri\" is not an https:// URL");
  }
  // The key must sign: a damaged one is refused here, not at the first request.
  auto probe = jwt::SignRs256(key.private_key, "", nlohmann::json::object());
  if (!probe.ok()) return Wrong("\"private_key\" is not a usable RSA key");
  return key;
}

absl::StatusOr<std::string> JwtBearerAssertion(const ServiceAccountKey& key,
                                               absl::string_view scope, absl::Time now) {
  const int64_t iat = absl::ToUnixSeconds(now);
  nlohmann::json claims = {{"iss", key.client_email},
                           {"scope", std::string(scope)},
                           {"aud", key.token_uri},
                           {"iat", iat},
                           {"exp", iat + 3600}};
  return jwt::SignRs256(key.private_key, key.private_key_id, claims);
}

std::string JwtBearerRequestBody(absl::string_view assertion) {
  return absl::StrCat("grant_type=", FormEncode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
                      "&assertion=", FormEncode(assertion));
}

}  // namespace sluice::cloud
