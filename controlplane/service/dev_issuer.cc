#include "controlplane/service/dev_issuer.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/files.h"
#include "common/jwt.h"
#include "common/policy/validation.h"
#include "common/status_macros.h"
#include "common/tls.h"

namespace sluice::controlplane {
namespace {

constexpr uint32_t kDefaultTtlSeconds = 3600;
constexpr uint32_t kMaxTtlSeconds = 24 * 3600;
constexpr size_t kMaxClaims = 32;

}  // namespace

absl::StatusOr<std::unique_ptr<DevIssuer>> DevIssuer::LoadOrCreate(const std::string& key_path) {
  auto issuer = std::unique_ptr<DevIssuer>(new DevIssuer());
  if (!FileExists(key_path)) {
    ASSIGN_OR_RETURN(std::string pem, GenerateEcPrivateKeyPem());
    RETURN_IF_ERROR(WriteFileAtomic(key_path, pem, 0600));
  }
  ASSIGN_OR_RETURN(issuer->key_pem_, ReadFile(key_path, 64 << 10));
  // The key id is derived from the key, so a new key gets a new kid.
  ASSIGN_OR_RETURN(std::string probe, jwt::PublicJwk(issuer->key_pem_, "probe"));
  issuer->kid_ = "dev-" + Sha256Hex(probe).substr(0, 12);
  ASSIGN_OR_RETURN(std::string jwk, jwt::PublicJwk(issuer->key_pem_, issuer->kid_));
  v1::Issuer* i = issuer->resource_.mutable_issuer();
  i->set_name(kName);
  i->set_issuer(kIss);
  i->set_audience(kAudience);
  i->mutable_jwks()->set_inline_(absl::StrCat("{\"keys\":[", jwk, "]}"));
  i->mutable_claims()->add_attribution("run_id");
  return issuer;
}

absl::StatusOr<v1::MintDevTokenResponse> DevIssuer::Mint(const v1::MintDevTokenRequest& req,
                                                         absl::Time now) const {
  if (req.subject().empty() || req.subject().size() > 256) {
    return absl::InvalidArgumentError("subject: required, at most 256 characters");
  }
  if (req.groups_size() > 64) return absl::InvalidArgumentError("groups: at most 64");
  if (req.claims_size() > static_cast<int>(kMaxClaims)) {
    return absl::InvalidArgumentError("claims: at most 32");
  }
  uint32_t ttl = req.ttl_seconds() == 0 ? kDefaultTtlSeconds : req.ttl_seconds();
  if (ttl > kMaxTtlSeconds) return absl::InvalidArgumentError("ttl_seconds: at most 86400 (24h)");
  int64_t iat = absl::ToUnixSeconds(now);
  nlohmann::json claims = {
      {"iss", kIss},
      {"aud", req.audience().empty() ? kAudience : req.audience()},
      {"sub", req.subject()},
      {"groups", std::vector<std::string>(req.groups().begin(), req.groups().end())},
      {"iat", iat},
      {"exp", iat + ttl}};
  for (const auto& [k, v] : req.claims()) {
    if (k == "iss" || k == "aud" || k == "sub" || k == "exp" || k == "iat" || k == "nbf" ||
        k == "groups") {
      return absl::InvalidArgumentError(absl::StrCat("claims: '", k, "' is set by the issuer"));
    }
    claims[k] = v;
  }
  ASSIGN_OR_RETURN(std::string token, jwt::SignEs256(key_pem_, kid_, claims));
  v1::MintDevTokenResponse out;
  out.set_token(token);
  out.set_expires_unix_ms((iat + ttl) * 1000);
  out.set_issuer(kIss);
  return out;
}

}  // namespace sluice::controlplane
