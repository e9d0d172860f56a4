// The control plane's development token issuer (`--dev-issuer`, off by default): an ES256 key in
// the data dir, published as the Issuer resource "sluice-dev" (inline JWKS, so agents verify its
// tokens like any other issuer's), and `sluicectl token` to mint tokens. For quickstarts and
// tests: production callers bring tokens from their own identity provider.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/v1/admin.pb.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::controlplane {

class DevIssuer {
 public:
  static constexpr char kName[] = "sluice-dev";
  static constexpr char kIss[] = "urn:sluice:dev-issuer";
  static constexpr char kAudience[] = "sluice";

  // Loads the signing key from `key_path`, creating it (0600) when absent.
  static absl::StatusOr<std::unique_ptr<DevIssuer>> LoadOrCreate(const std::string& key_path);

  // The Issuer resource agents need to verify this issuer's tokens.
  const v1::Resource& resource() const { return resource_; }

  absl::StatusOr<v1::MintDevTokenResponse> Mint(const v1::MintDevTokenRequest& request,
                                                absl::Time now) const;

 private:
  std::string key_pem_;
  std::string kid_;
  v1::Resource resource_;
};

}  // namespace sluice::controlplane
