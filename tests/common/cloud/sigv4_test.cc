#include "common/cloud/sigv4.h"

#include <gtest/gtest.h>

namespace sluice::cloud {
namespace {

// The vectors: requests signed by botocore 1.43's S3SigV4Auth (the AWS CLI's signer) with AWS's
// documentation key pair, their headers and signatures copied here. The agent must reach the same
// signature from what the client sent.
constexpr char kSecret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr char kDate[] = "20261208T045141Z";
constexpr char kEmptyHash[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct Vector {
  const char* method;
  const char* path;
  const char* query;
  std::vector<std::pair<std::string, std::string>> headers;
  const char* authorization;
};

std::vector<Vector> Vectors() {
  return {
      {"GET",
       "/demo-bucket",
       "list-type=2&prefix=logs%2F&encoding-type=url",
       {{"Host", "127.0.0.1:9000"},
        {"X-Amz-Date", kDate},
        {"X-Amz-Security-Token", "session-token-jwt"},
        {"X-Amz-Content-SHA256", kEmptyHash}},
       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261208/us-east-1/s3/aws4_request, "
       "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
       "Signature=3a7336e9578d6923d13562a7a18065973ef96d1783b0109666beef6673c66ff4"},
      {"PUT",
       "/demo-bucket/dir/a%20b%2Bc.txt",
       "",
       {{"Host", "127.0.0.1:9000"},
        {"Content-Type", "text/plain"},
        {"X-Amz-Meta-Note", "  two   spaces "},
        {"X-Amz-Date", kDate},
        {"X-Amz-Security-Token", "session-token-jwt"},
        {"X-Amz-Content-SHA256",
         "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}},
       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261208/eu-west-1/s3/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note;"
       "x-amz-security-token, "
       "Signature=459560dc57e836fb2c8455ba8806da3544efdaad2947a0d13c04b71d22562a02"},
      {"DELETE",
       "/demo-bucket/x",
       "versionId=3%2F4",
       {{"Host", "127.0.0.1:9000"},
        {"X-Amz-Date", kDate},
        {"X-Amz-Security-Token", "session-token-jwt"},
        {"X-Amz-Content-SHA256", kEmptyHash}},
       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261208/us-east-1/s3/aws4_request, "
       "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
       "Signature=872e566972cc8114e775239f0056442e19508f1ea79973323686c8cb622acec7"},
  };
}

TEST(SigV4, TheAwsCliSignaturesAreReproduced) {
  for (const Vector& v : Vectors()) {
    auto auth = ParseSigV4Authorization(v.authorization);
    ASSERT_TRUE(auth.ok()) << auth.status();
    EXPECT_EQ(auth->access_key_id, "AKIDEXAMPLE");
    EXPECT_EQ(auth->service, "s3");
    SigV4Request r{v.method, v.path, v.query, v.headers};
    auto canonical = SigV4CanonicalRequest(r, auth->signed_headers);
    ASSERT_TRUE(canonical.ok()) << canonical.status();
    EXPECT_EQ(SigV4Signature(kSecret, kDate, *auth, *canonical), auth->signature) << v.path;
    // And signed again, the header reads as the client's did.
    EXPECT_EQ(SigV4AuthorizationHeader(*auth, auth->signature), v.authorization);
  }
}

TEST(SigV4, AnyChangeBreaksTheSignature) {
  const Vector v = Vectors()[1];
  auto auth = ParseSigV4Authorization(v.authorization);
  ASSERT_TRUE(auth.ok());
  auto sign = [&](SigV4Request r) {
    auto canonical = SigV4CanonicalRequest(r, auth->signed_headers);
    return canonical.ok() ? SigV4Signature(kSecret, kDate, *auth, *canonical) : std::string();
  };
  SigV4Request base{v.method, v.path, v.query, v.headers};
  ASSERT_EQ(sign(base), auth->signature);
  SigV4Request changed = base;
  changed.path = "/demo-bucket/dir/other.txt";
  EXPECT_NE(sign(changed), auth->signature);
  changed = base;
  changed.method = "DELETE";
  EXPECT_NE(sign(changed), auth->signature);
  changed = base;
  changed.query = "acl=";
  EXPECT_NE(sign(changed), auth->signature);
  changed = base;
  changed.headers[1].second = "text/html";
  EXPECT_NE(sign(changed), auth->signature);
  EXPECT_NE(SigV4Signature("another secret", kDate, *auth,
                           *SigV4CanonicalRequest(base, auth->signed_headers)),
            auth->signature);
  // A signed header that is not there.
  changed = base;
  changed.headers.erase(changed.headers.begin() + 1);
  EXPECT_FALSE(SigV4CanonicalRequest(changed, auth->signed_headers).ok());
}

TEST(SigV4, CanonicalFormNormalizesWhatClientsEncodeDifferently) {
  SigV4Request a{"GET", "/b/k%7Ey", "b=2&a=1&c", {{"x-amz-content-sha256", "UNSIGNED-PAYLOAD"}}};
  SigV4Request b{"GET", "/b/k~y", "c=&a=1&b=%32", {{"x-amz-content-sha256", "UNSIGNED-PAYLOAD"}}};
  EXPECT_EQ(*SigV4CanonicalRequest(a, {"x-amz-content-sha256"}),
            *SigV4CanonicalRequest(b, {"x-amz-content-sha256"}));
  EXPECT_EQ(*SigV4CanonicalRequest(a, {"x-amz-content-sha256"}),
            "GET\n/b/k~y\na=1&b=2&c=\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n\n"
            "x-amz-content-sha256\nUNSIGNED-PAYLOAD");
  EXPECT_EQ(SigV4Encode("a b/c+d~", true), "a%20b/c%2Bd~");
  EXPECT_EQ(SigV4Encode("a b/c", false), "a%20b%2Fc");
  SigV4Request bad{"GET", "/b/%zz", "", {{"x-amz-content-sha256", "UNSIGNED-PAYLOAD"}}};
  EXPECT_FALSE(SigV4CanonicalRequest(bad, {"x-amz-content-sha256"}).ok());
  bad = {"GET", "/b/k", "a=%2", {{"x-amz-content-sha256", "UNSIGNED-PAYLOAD"}}};
  EXPECT_FALSE(SigV4CanonicalRequest(bad, {"x-amz-content-sha256"}).ok());
  bad = {"GET", "/b/k", "", {}};
  EXPECT_FALSE(SigV4CanonicalRequest(bad, {}).ok());  // no payload hash
}

TEST(SigV4, MalformedAuthorizationHeadersAreNamed) {
  for (const char* bad :
       {"",
        "AWS4-HMAC-SHA1 Credential=a/20261208/r/s3/aws4_request, SignedHeaders=host, "
        "Signature=00",
        "AWS4-HMAC-SHA256 Credential=a/2026/r/s3/aws4_request, SignedHeaders=host, Signature=",
        "AWS4-HMAC-SHA256 Credential=a/20261208/r/s3/aws4_request, SignedHeaders=x;host, "
        "Signature=3a7336e9578d6923d13562a7a18065973ef96d1783b0109666beef6673c66ff4",
        "AWS4-HMAC-SHA256 Credential=a/20261208/r/s3/aws4_request, SignedHeaders=Host, "
        "Signature=3a7336e9578d6923d13562a7a18065973ef96d1783b0109666beef6673c66ff4",
        "AWS4-HMAC-SHA256 Credential=a/20261208/r/s3/aws4_request, SignedHeaders=host, "
        "Signature=xyz",
        "AWS4-HMAC-SHA256 Credential=a/20261208/r/s3/aws4_request, SignedHeaders=host"}) {
    auto a = ParseSigV4Authorization(bad);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace sluice::cloud
