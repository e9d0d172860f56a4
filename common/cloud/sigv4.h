// AWS Signature Version 4
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html), as
// S3 uses it: checking the signature a caller's client made (with the fixed, published key pair the
// agent gives callers: integrity, not identity) and signing the request again with the Connection's
// real keys. The hashes and HMACs are OpenSSL's (common/crypto.h).
//
// Canonical form, S3's rules: the path is the request's as sent, decoded and encoded again once
// (unreserved characters and '/' kept; not encoded twice, as other services do), the query's
// parameters decoded, encoded again and sorted, header values trimmed with inner runs of spaces
// folded, the payload's hash as the request's x-amz-content-sha256 says (a hex SHA-256, or
// UNSIGNED-PAYLOAD).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::cloud {

inline constexpr char kSigV4Algorithm[] = "AWS4-HMAC-SHA256";

// The Authorization header of a SigV4 request:
// `AWS4-HMAC-SHA256 Credential=AKID/20261208/us-east-1/s3/aws4_request, SignedHeaders=a;b,
// Signature=<hex>`.
struct SigV4Authorization {
  std::string access_key_id;
  std::string date;  // YYYYMMDD
  std::string region;
  std::string service;                      // "s3"
  std::vector<std::string> signed_headers;  // lower-case, as listed (sorted)
  std::string signature;                    // 64 lower-case hex digits
};

// InvalidArgument naming what is malformed.
absl::StatusOr<SigV4Authorization> ParseSigV4Authorization(absl::string_view header);

struct SigV4Request {
  std::string method;
  std::string path;   // as sent (percent-encoded), without the query
  std::string query;  // as sent, without '?'
  std::vector<std::pair<std::string, std::string>> headers;  // every header of the request
};

// The canonical request over `signed_headers` (lower-case); InvalidArgument when a signed header
// is missing, the path or query is malformed, or there is no x-amz-content-sha256.
absl::StatusOr<std::string> SigV4CanonicalRequest(const SigV4Request& request,
                                                  const std::vector<std::string>& signed_headers);

// The hex signature of `canonical_request` made at `amz_date` (YYYYMMDD'T'HHMMSS'Z') with
// `secret` for the scope of `auth` (date, region, service).
std::string SigV4Signature(absl::string_view secret, absl::string_view amz_date,
                           const SigV4Authorization& auth, absl::string_view canonical_request);

// The Authorization header value for `auth` with `signature`.
std::string SigV4AuthorizationHeader(const SigV4Authorization& auth, absl::string_view signature);

// Percent-encoding of `s` by SigV4's rules: A-Z a-z 0-9 - . _ ~ kept, '/' kept when `keep_slash`,
// every other byte %XX (upper-case hex).
std::string SigV4Encode(absl::string_view s, bool keep_slash);

}  // namespace sluice::cloud
