// A Google service account's JSON key (what `gcloud iam service-accounts keys create` writes) and
// the OAuth 2.0 JWT-bearer grant the agent mints the account's access tokens with: an RS256
// assertion signed with the key, `aud` = the key's token URI (RFC 7523; Google's "Using OAuth
// 2.0 for Server to Server Applications"). Nothing here logs or returns the private key.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice::cloud {

struct ServiceAccountKey {
  std::string client_email;
  std::string private_key;  // PEM
  std::string private_key_id;
  std::string token_uri;  // https://oauth2.googleapis.com/token for real keys
  std::string project_id;
};

// Parses a key; an error names the field that is missing or wrong, never a value of the key's
// secret fields.
absl::StatusOr<ServiceAccountKey> ParseServiceAccountKey(absl::string_view json);

// The grant's assertion for `scope` (space-separated scopes), valid for an hour from `now`.
absl::StatusOr<std::string> JwtBearerAssertion(const ServiceAccountKey& key,
                                               absl::string_view scope, absl::Time now);

// The form body of the token request that carries `assertion`.
std::string JwtBearerRequestBody(absl::string_view assertion);

}  // namespace sluice::cloud
