// Access tokens of the Connections' service accounts, minted with the OAuth 2.0 JWT-bearer grant
// at the key's token URI (common/cloud/service_account.h), and of the accounts callers run as
// (impersonated: IAM Credentials' generateAccessToken), cached until five minutes before they
// expire. Thread-safe. Neither the key nor a token is ever logged: an error
// says what failed (the endpoint's status and OAuth error code), not with what.
#pragma once

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/cloud/service_account.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::gcs {

// The scope asked for: Cloud Storage, full control (what the agent lets through is decided by
// the policy, not by the token's scope).
inline constexpr char kStorageScope[] = "https://www.googleapis.com/auth/devstorage.full_control";
// BigQuery's scope, likewise.
inline constexpr char kBigQueryScope[] = "https://www.googleapis.com/auth/bigquery";

class AccessTokens {
 public:
  // A token for `key`, for `scope`. `upstream` says how the token endpoint's certificate is
  // checked: its ca_file when set (a private endpoint, the tests' stand-in), else the system's CAs.
  absl::StatusOr<std::string> Get(const cloud::ServiceAccountKey& key, const v1::Upstream& upstream,
                                  const char* scope = kStorageScope);
  // A token of the service account `email`, minted by `key`'s account with the IAM Credentials
  // API's generateAccessToken at `iam_url` ("" = Google's), and cached the same way.
  absl::StatusOr<std::string> Impersonated(const cloud::ServiceAccountKey& key,
                                           const v1::Upstream& upstream, const std::string& iam_url,
                                           const std::string& email,
                                           const char* scope = kStorageScope);

 private:
  struct Cached {
    std::string token;
    absl::Time refresh_at;
  };
  absl::StatusOr<Cached> Mint(const cloud::ServiceAccountKey& key, const v1::Upstream& upstream,
                              const char* scope);

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Cached> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent::gcs
