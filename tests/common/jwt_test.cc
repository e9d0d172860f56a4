#include "common/jwt.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::jwt {
namespace {

using nlohmann::json;

constexpr int64_t kNow = 1767225600;  // 2026-01-01T00:00:00Z
constexpr char kIss[] = "https://idp.example.com";
constexpr char kAud[] = "sluice";

absl::Time Now() { return absl::FromUnixSeconds(kNow); }

std::string B64(absl::string_view s) { return absl::WebSafeBase64Escape(s); }

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string PrivatePem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  std::string pem = BioText(bio);
  BIO_free(bio);
  return pem;
}

std::string PublicPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(PEM_write_bio_PUBKEY(bio, key), 1);
  std::string pem = BioText(bio);
  BIO_free(bio);
  return pem;
}

struct TestKey {
  std::string private_pem;
  std::string public_pem;
};

TestKey MakeKey(EVP_PKEY* key) {
  TestKey k{PrivatePem(key), PublicPem(key)};
  EVP_PKEY_free(key);
  return k;
}

std::string Jwk(const TestKey& key, const std::string& kid) {
  absl::StatusOr<std::string> jwk = PublicJwk(key.private_pem, kid);
  EXPECT_TRUE(jwk.ok()) << jwk.status();
  return jwk.ok() ? *jwk : "{}";
}

std::string JwksOf(const std::vector<std::string>& jwks) {
  json doc = {{"keys", json::array()}};
  for (const std::string& k : jwks) doc["keys"].push_back(json::parse(k));
  return doc.dump();
}

// Compact JWS from parts, for tokens the signer would never produce.
std::string RawToken(const json& header, const json& payload, absl::string_view signature) {
  return absl::StrCat(B64(header.dump()), ".", B64(payload.dump()), ".", B64(signature));
}

std::vector<std::string> Parts(const std::string& token) { return absl::StrSplit(token, '.'); }

std::string Join(const std::vector<std::string>& parts) {
  return absl::StrCat(parts[0], ".", parts[1], ".", parts[2]);
}

json Claims() {
  return {{"iss", kIss},        {"aud", kAud},      {"sub", "alice@example.com"},
          {"exp", kNow + 3600}, {"iat", kNow - 10}, {"groups", {"dba", "oncall"}},
          {"run_id", 12345},    {"sha", "abc123"},  {"ref", json::object()}};
}

v1::Issuer IssuerResource(const std::string& jwks) {
  v1::Issuer i;
  i.set_name("corp");
  i.set_issuer(kIss);
  i.set_audience(kAud);
  i.mutable_jwks()->set_inline_(jwks);
  i.mutable_claims()->add_attribution("run_id");
  i.mutable_claims()->add_attribution("sha");
  i.mutable_claims()->add_attribution("ref");
  i.mutable_claims()->add_attribution("absent");
  return i;
}

#define EXPECT_REFUSED(result, text)                                                  \
  do {                                                                                \
    const auto& r_ = (result);                                                        \
    ASSERT_FALSE(r_.ok());                                                            \
    EXPECT_EQ(r_.status().code(), absl::StatusCode::kUnauthenticated) << r_.status(); \
    EXPECT_EQ(std::string(r_.status().message()), (text));                            \
  } while (0)

#define EXPECT_INVALID(result, text)                                                  \
  do {                                                                                \
    const auto& r_ = (result);                                                        \
    ASSERT_FALSE(r_.ok());                                                            \
    EXPECT_EQ(r_.status().code(), absl::StatusCode::kInvalidArgument) << r_.status(); \
    EXPECT_EQ(std::string(r_.status().message()), (text));                            \
  } while (0)

class JwtTest : public ::testing::Test {
 protected:
  // RSA key generation is slow: once per suite.
  static void SetUpTestSuite() {
    ec1_ = new TestKey(MakeKey(EVP_EC_gen("P-256")));
    ec2_ = new TestKey(MakeKey(EVP_EC_gen("P-256")));
    rsa1_ = new TestKey(MakeKey(EVP_RSA_gen(2048)));
    rsa2_ = new TestKey(MakeKey(EVP_RSA_gen(2048)));
  }
  static void TearDownTestSuite() {
    delete ec1_;
    delete ec2_;
    delete rsa1_;
    delete rsa2_;
  }

  void SetUp() override { verifier_ = MakeVerifier(AllKeys()); }

  static std::string AllKeys() {
    return JwksOf(
        {Jwk(*ec1_, "ec-1"), Jwk(*ec2_, "ec-2"), Jwk(*rsa1_, "rsa-1"), Jwk(*rsa2_, "rsa-2")});
  }

  static Verifier MakeVerifier(const std::string& jwks) {
    absl::StatusOr<Verifier> v = Verifier::FromIssuers({IssuerResource(jwks)});
    EXPECT_TRUE(v.ok()) << v.status();
    return *std::move(v);
  }

  static std::string Es(const TestKey& key, const std::string& kid, const json& claims) {
    absl::StatusOr<std::string> t = SignEs256(key.private_pem, kid, claims);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : "";
  }
  static std::string Rs(const TestKey& key, const std::string& kid, const json& claims) {
    absl::StatusOr<std::string> t = SignRs256(key.private_pem, kid, claims);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : "";
  }

  absl::StatusOr<Identity> Verify(const std::string& token, absl::Time now = Now()) const {
    return verifier_->Verify(token, now);
  }

  static inline TestKey* ec1_ = nullptr;
  static inline TestKey* ec2_ = nullptr;
  static inline TestKey* rsa1_ = nullptr;
  static inline TestKey* rsa2_ = nullptr;
  std::optional<Verifier> verifier_;
};

TEST_F(JwtTest, Es256ValidTokenGivesIdentity) {
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", Claims()));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->issuer, "corp");
  EXPECT_EQ(id->subject, "alice@example.com");
  EXPECT_EQ(id->groups, (std::vector<std::string>{"dba", "oncall"}));
  // Numbers become text, strings are copied, objects and absent claims are left out.
  EXPECT_EQ(id->attribution,
            (std::map<std::string, std::string>{{"run_id", "12345"}, {"sha", "abc123"}}));
  EXPECT_EQ(id->expires_unix, kNow + 3600);
  EXPECT_EQ(id->issued_at_unix, kNow - 10);
  EXPECT_EQ(id->key_id, "ec-1");
  EXPECT_EQ(id->algorithm, "ES256");
}

TEST_F(JwtTest, Rs256ValidTokenGivesIdentity) {
  json claims = Claims();
  claims["run_id"] = "run-77";
  claims["exp"] = kNow + 60.75;  // a fractional NumericDate is floored
  absl::StatusOr<Identity> id = Verify(Rs(*rsa1_, "rsa-1", claims));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->issuer, "corp");
  EXPECT_EQ(id->subject, "alice@example.com");
  EXPECT_EQ(id->groups, (std::vector<std::string>{"dba", "oncall"}));
  EXPECT_EQ(id->attribution,
            (std::map<std::string, std::string>{{"run_id", "run-77"}, {"sha", "abc123"}}));
  EXPECT_EQ(id->expires_unix, kNow + 60);
  EXPECT_EQ(id->key_id, "rsa-1");
  EXPECT_EQ(id->algorithm, "RS256");
}

TEST_F(JwtTest, SignedTokensHaveTheDocumentedHeader) {
  std::vector<std::string> parts = Parts(Es(*ec1_, "ec-1", Claims()));
  ASSERT_EQ(parts.size(), 3u);
  std::string header;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[0], &header));
  EXPECT_EQ(json::parse(header), (json{{"alg", "ES256"}, {"typ", "JWT"}, {"kid", "ec-1"}}));
  std::string signature;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[2], &signature));
  EXPECT_EQ(signature.size(), 64u);  // raw r||s, not DER
}

TEST_F(JwtTest, KidSelectsAmongSeveralKeys) {
  const std::vector<std::pair<std::string, std::string>> tokens = {
      {"ec-1", Es(*ec1_, "ec-1", Claims())},
      {"ec-2", Es(*ec2_, "ec-2", Claims())},
      {"rsa-1", Rs(*rsa1_, "rsa-1", Claims())},
      {"rsa-2", Rs(*rsa2_, "rsa-2", Claims())}};
  for (const auto& [kid, token] : tokens) {
    absl::StatusOr<Identity> id = Verify(token);
    ASSERT_TRUE(id.ok()) << kid << ": " << id.status();
    EXPECT_EQ(id->key_id, kid);
  }
  // The kid picks one key; a token signed by another key of the same type does not verify.
  EXPECT_REFUSED(Verify(Es(*ec2_, "ec-1", Claims())), "signature does not verify");
  EXPECT_REFUSED(Verify(Rs(*rsa1_, "rsa-2", Claims())), "signature does not verify");
}

TEST_F(JwtTest, UnknownKidIsRefused) {
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-9", Claims())),
                 "no key 'ec-9' for issuer 'https://idp.example.com'");
}

TEST_F(JwtTest, WithoutKidEveryFittingKeyIsTried) {
  absl::StatusOr<Identity> id = Verify(Es(*ec2_, "", Claims()));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->key_id, "ec-2");
  id = Verify(Rs(*rsa2_, "", Claims()));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->key_id, "rsa-2");

  // No key of the issuer made the signature.
  TestKey stranger = MakeKey(EVP_EC_gen("P-256"));
  EXPECT_REFUSED(Verify(Es(stranger, "", Claims())), "signature does not verify");
}

TEST_F(JwtTest, WithoutKidAndNoKeyOfTheRightType) {
  verifier_ = MakeVerifier(JwksOf({Jwk(*rsa1_, "rsa-1")}));
  EXPECT_REFUSED(Verify(Es(*ec1_, "", Claims())),
                 "issuer 'https://idp.example.com' has no key for ES256");
}

TEST_F(JwtTest, AlgNoneIsRefused) {
  for (const char* none : {"none", "None", "NONE"}) {
    json header = {{"alg", none}, {"typ", "JWT"}};
    EXPECT_REFUSED(Verify(RawToken(header, Claims(), "")),
                   absl::StrCat("algorithm '", none, "' is not accepted"));
  }
}

// The classic confusion: an attacker signs with HMAC, keyed with the issuer's public RSA key,
// hoping the verifier feeds "the key" to whatever algorithm the header names.
TEST_F(JwtTest, Hs256KeyedWithThePublicKeyIsRefusedAsHmac) {
  json header = {{"alg", "HS256"}, {"typ", "JWT"}, {"kid", "rsa-1"}};
  std::string input = absl::StrCat(B64(header.dump()), ".", B64(Claims().dump()));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  const std::string& secret = rsa1_->public_pem;
  ASSERT_NE(HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                 reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &mac_len),
            nullptr);
  std::string token =
      absl::StrCat(input, ".", B64(std::string(reinterpret_cast<char*>(mac), mac_len)));
  EXPECT_REFUSED(Verify(token), "algorithm 'HS256' is not accepted: only RS256 and ES256 are");
}

TEST_F(JwtTest, OtherAlgorithmsAreRefused) {
  for (const char* alg : {"HS384", "HS512", "RS384", "RS512", "PS256", "ES384", "EdDSA", "rs256"}) {
    json header = {{"alg", alg}, {"kid", "rsa-1"}};
    EXPECT_REFUSED(Verify(RawToken(header, Claims(), std::string(256, 'x'))),
                   absl::StrCat("algorithm '", alg, "' is not accepted: only RS256 and ES256 are"));
  }
  EXPECT_REFUSED(Verify(RawToken({{"typ", "JWT"}}, Claims(), "")),
                 "token is malformed: the header has no 'alg' string");
  EXPECT_REFUSED(Verify(RawToken({{"alg", 256}}, Claims(), "")),
                 "token is malformed: the header has no 'alg' string");
}

TEST_F(JwtTest, AlgMustFitTheKeyType) {
  // An RSA signature presented as RS256 under the kid of an EC key, and the reverse.
  EXPECT_REFUSED(Verify(Rs(*rsa1_, "ec-1", Claims())),
                 "key 'ec-1' of issuer 'https://idp.example.com' is an EC P-256 key and cannot "
                 "verify RS256");
  EXPECT_REFUSED(Verify(Es(*ec1_, "rsa-1", Claims())),
                 "key 'rsa-1' of issuer 'https://idp.example.com' is an RSA key and cannot "
                 "verify ES256");
}

TEST_F(JwtTest, JwkAlgMustEqualTheHeaderAlg) {
  json rsa = json::parse(Jwk(*rsa1_, "rsa-1"));
  rsa["alg"] = "RS512";
  verifier_ = MakeVerifier(JwksOf({rsa.dump()}));
  EXPECT_REFUSED(Verify(Rs(*rsa1_, "rsa-1", Claims())),
                 "key 'rsa-1' of issuer 'https://idp.example.com' is for algorithm 'RS512', not "
                 "RS256");
  // Without a kid such a key is not a candidate at all.
  EXPECT_REFUSED(Verify(Rs(*rsa1_, "", Claims())),
                 "issuer 'https://idp.example.com' has no key for RS256");
}

TEST_F(JwtTest, TamperedPayloadFailsTheSignature) {
  json claims = Claims();
  claims["sub"] = "root";
  for (const std::string& token : {Es(*ec1_, "ec-1", Claims()), Rs(*rsa1_, "rsa-1", Claims())}) {
    std::vector<std::string> parts = Parts(token);
    parts[1] = B64(claims.dump());
    EXPECT_REFUSED(Verify(Join(parts)), "signature does not verify");
  }
  // A flipped bit in the signature.
  std::vector<std::string> parts = Parts(Rs(*rsa1_, "rsa-1", Claims()));
  parts[2][10] = parts[2][10] == 'A' ? 'B' : 'A';
  EXPECT_REFUSED(Verify(Join(parts)), "signature does not verify");
}

// Drops the last `n` bytes of the token's signature, keeping valid base64url.
std::string TruncateSignature(const std::string& token, size_t n) {
  std::vector<std::string> parts = Parts(token);
  std::string signature;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(parts[2], &signature));
  signature.resize(signature.size() - n);
  parts[2] = B64(signature);
  return Join(parts);
}

TEST_F(JwtTest, TruncatedSignature) {
  std::string rs = Rs(*rsa1_, "rsa-1", Claims());
  EXPECT_REFUSED(Verify(TruncateSignature(rs, 1)), "signature does not verify");
  EXPECT_REFUSED(Verify(TruncateSignature(rs, 256)), "signature does not verify");

  std::string es = Es(*ec1_, "ec-1", Claims());
  EXPECT_REFUSED(Verify(TruncateSignature(es, 3)),
                 "token is malformed: an ES256 signature is 64 bytes, not 61");
  EXPECT_REFUSED(Verify(TruncateSignature(es, 64)),
                 "token is malformed: an ES256 signature is 64 bytes, not 0");
  // Cut as text: a length or a last character that no base64url encoding has.
  std::vector<std::string> parts = Parts(es);
  parts[2].resize(parts[2].size() - 1);
  EXPECT_REFUSED(Verify(Join(parts)), "token is malformed: the signature is not valid base64url");
  parts[2].resize(parts[2].size() - 4);
  EXPECT_REFUSED(Verify(Join(parts)), "token is malformed: the signature is not valid base64url");
}

TEST_F(JwtTest, NonCanonicalBase64IsRefused) {
  // 64 bytes take 86 characters; the low 4 bits of the last one carry no data. Setting one gives
  // a second spelling of the same signature, which is refused rather than accepted.
  constexpr absl::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::vector<std::string> parts = Parts(Es(*ec1_, "ec-1", Claims()));
  ASSERT_EQ(parts[2].size(), 86u);
  size_t last = kAlphabet.find(parts[2].back());
  ASSERT_EQ(last & 0xF, 0u);
  parts[2].back() = kAlphabet[last | 1];
  EXPECT_REFUSED(Verify(Join(parts)), "token is malformed: the signature is not valid base64url");
}

TEST_F(JwtTest, IssuerMustBeTrusted) {
  json claims = Claims();
  claims["iss"] = "https://evil.example.com";
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "issuer 'https://evil.example.com' is not trusted");
  claims["iss"] = "https://idp.example.com/";  // exact match only
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "issuer 'https://idp.example.com/' is not trusted");
  claims.erase("iss");
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)), "token has no issuer ('iss')");
  claims["iss"] = json::array({kIss});
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)), "token is malformed: 'iss' is not a string");
}

TEST_F(JwtTest, QuotedValuesAreBoundedAndPrintable) {
  json claims = Claims();
  claims["iss"] = absl::StrCat("evil\n", std::string(300, 'x'));
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  EXPECT_REFUSED(id, absl::StrCat("issuer 'evil?", std::string(123, 'x'), "...' is not trusted"));
}

TEST_F(JwtTest, AudienceAsString) {
  json claims = Claims();
  claims["aud"] = "other-service";
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "audience 'other-service' is not accepted here; expected 'sluice'");
  claims.erase("aud");
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "token has no audience ('aud'); expected 'sluice'");
  claims["aud"] = 7;
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "token is malformed: 'aud' is neither a string nor an array of strings");
}

TEST_F(JwtTest, AudienceAsArray) {
  json claims = Claims();
  claims["aud"] = {"billing", "reports"};
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "audience ['billing', 'reports'] is not accepted here; expected 'sluice'");
  claims["aud"] = json::array();
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "audience [] is not accepted here; expected 'sluice'");
  claims["aud"] = {"billing", 3, "sluice"};
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  EXPECT_TRUE(id.ok()) << id.status();
}

TEST_F(JwtTest, ExpiryWithinLeewayIsAccepted) {
  json claims = Claims();
  claims["exp"] = kNow - 59;
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  EXPECT_TRUE(id.ok()) << id.status();
}

TEST_F(JwtTest, ExpiryBeyondLeewayIsRefused) {
  json claims = Claims();
  claims["exp"] = kNow - 61;
  claims.erase("iat");
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)), "token expired at 2025-12-31T23:58:59Z");
  // The same token, checked an hour earlier, was fine.
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims), Now() - absl::Hours(1));
  EXPECT_TRUE(id.ok()) << id.status();
}

TEST_F(JwtTest, AVerifiedTokenIsKnownOnlyWhileItIsValid) {
  json claims = Claims();
  claims["nbf"] = kNow - 5;
  const std::string token = Es(*ec1_, "ec-1", claims);
  ASSERT_TRUE(Verify(token).ok());
  // Known now (the same identity), and still checked against the clock: after its expiry and
  // before its nbf it is refused as a token seen for the first time would be.
  absl::StatusOr<Identity> again = Verify(token);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->subject, "alice@example.com");
  EXPECT_REFUSED(Verify(token, Now() + absl::Hours(2)), "token expired at 2026-01-01T01:00:00Z");
  EXPECT_REFUSED(Verify(token, Now() - absl::Minutes(10)),
                 "token is not valid before 2025-12-31T23:59:55Z");
  // A verifier of another policy (the key gone from its JWKS) knows nothing of it.
  Verifier other = MakeVerifier(JwksOf({Jwk(*ec2_, "ec-2")}));
  EXPECT_FALSE(other.Verify(token, Now()).ok());
  // A changed token is not the known one.
  std::string tampered = token;
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(Verify(tampered).ok());
}

TEST_F(JwtTest, ExpiryIsRequired) {
  json claims = Claims();
  claims.erase("exp");
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)), "token has no expiry ('exp')");
  claims["exp"] = "tomorrow";
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "token is malformed: 'exp' is not a number of seconds");
}

TEST_F(JwtTest, AbsurdTimesAreClampedNotOverflowed) {
  json claims = Claims();
  claims["exp"] = -1e300;
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StartsWith(id.status().message(), "token expired at ")) << id.status();
  claims["exp"] = 1e300;
  claims["nbf"] = 18446744073709551615u;
  id = Verify(Es(*ec1_, "ec-1", claims));
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StartsWith(id.status().message(), "token is not valid before ")) << id.status();
  claims.erase("nbf");
  id = Verify(Es(*ec1_, "ec-1", claims));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->expires_unix, std::numeric_limits<int64_t>::max());
}

TEST_F(JwtTest, NotBeforeInTheFuture) {
  json claims = Claims();
  claims["nbf"] = kNow + 120;
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "token is not valid before 2026-01-01T00:02:00Z");
  claims["nbf"] = kNow + 30;  // within leeway
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  EXPECT_TRUE(id.ok()) << id.status();
}

TEST_F(JwtTest, IssuedInTheFuture) {
  json claims = Claims();
  claims["iat"] = kNow + 120;
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "token is not valid before 2026-01-01T00:02:00Z (it was issued in the future; "
                 "check the clocks)");
  claims["iat"] = kNow + 60;  // at the edge of the leeway
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  EXPECT_TRUE(id.ok()) << id.status();
}

TEST_F(JwtTest, SubjectIsRequired) {
  json claims = Claims();
  claims.erase("sub");
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)), "token has no subject claim 'sub'");
  claims["sub"] = "";
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "subject claim 'sub' is not a non-empty string");
  claims["sub"] = 42;
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "subject claim 'sub' is not a non-empty string");
}

TEST_F(JwtTest, ClaimMappingPicksSubjectAndGroups) {
  v1::Issuer issuer = IssuerResource(AllKeys());
  issuer.mutable_claims()->set_subject("email");
  issuer.mutable_claims()->set_groups("roles");
  absl::StatusOr<Verifier> v = Verifier::FromIssuers({issuer});
  ASSERT_TRUE(v.ok()) << v.status();
  json claims = Claims();
  claims["email"] = "bob@example.com";
  claims["roles"] = {"readers"};
  absl::StatusOr<Identity> id = v->Verify(Es(*ec1_, "ec-1", claims), Now());
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->subject, "bob@example.com");
  EXPECT_EQ(id->groups, std::vector<std::string>{"readers"});
  claims.erase("email");
  EXPECT_REFUSED(v->Verify(Es(*ec1_, "ec-1", claims), Now()), "token has no subject claim 'email'");
}

TEST_F(JwtTest, GroupsThatAreNotAStringArrayAreIgnored) {
  for (const json& groups : {json("dba"), json({"dba", 1}), json(json::object()), json(3)}) {
    json claims = Claims();
    claims["groups"] = groups;
    absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(id->groups.empty()) << groups.dump();
  }
  json claims = Claims();
  claims.erase("groups");
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_TRUE(id->groups.empty());
}

TEST_F(JwtTest, GroupCaps) {
  json claims = Claims();
  claims["groups"] = json::array();
  for (int i = 0; i < 256; ++i) claims["groups"].push_back(absl::StrCat("g", i));
  absl::StatusOr<Identity> id = Verify(Es(*ec1_, "ec-1", claims));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->groups.size(), 256u);
  claims["groups"].push_back("one-too-many");
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "token has 257 groups; at most 256 are accepted");
  claims["groups"] = {std::string(256, 'g')};
  EXPECT_TRUE(Verify(Es(*ec1_, "ec-1", claims)).ok());
  claims["groups"] = {std::string(257, 'g')};
  EXPECT_REFUSED(Verify(Es(*ec1_, "ec-1", claims)),
                 "a group name in the token is longer than 256 bytes");
}

TEST_F(JwtTest, MalformedTokens) {
  std::vector<std::string> parts = Parts(Es(*ec1_, "ec-1", Claims()));
  EXPECT_REFUSED(Verify(absl::StrCat(parts[0], ".", parts[1])),
                 "token is malformed: expected three base64url parts separated by '.'");
  EXPECT_REFUSED(Verify(absl::StrCat(Join(parts), ".x")),
                 "token is malformed: expected three base64url parts separated by '.'");
  EXPECT_REFUSED(Verify(""), "token is malformed: expected three base64url parts separated by '.'");
  EXPECT_REFUSED(Verify("secret-password"),
                 "token is malformed: expected three base64url parts separated by '.'");

  std::vector<std::string> bad = parts;
  bad[0] = "eyJ!bGciOiJFUzI1NiJ9";
  EXPECT_REFUSED(Verify(Join(bad)), "token is malformed: the header is not valid base64url");
  bad = parts;
  bad[1] += "==";  // padding is not base64url as JWS uses it
  EXPECT_REFUSED(Verify(Join(bad)), "token is malformed: the payload is not valid base64url");
  bad = parts;
  bad[1].insert(4, "+/");  // standard base64, not base64url
  EXPECT_REFUSED(Verify(Join(bad)), "token is malformed: the payload is not valid base64url");

  bad = parts;
  bad[1] = B64(R"(["iss", "sub"])");
  EXPECT_REFUSED(Verify(Join(bad)), "token is malformed: the payload is not a JSON object");
  bad[1] = B64(R"({"iss": "x",)");
  EXPECT_REFUSED(Verify(Join(bad)), "token is malformed: the payload is not a JSON object");
  bad = parts;
  bad[0] = B64("not json");
  EXPECT_REFUSED(Verify(Join(bad)), "token is malformed: the header is not a JSON object");
}

TEST_F(JwtTest, OversizedTokenIsRefusedBeforeParsing) {
  json claims = Claims();
  claims["padding"] = std::string(17 * 1024, 'p');
  std::string token = Es(*ec1_, "ec-1", claims);
  ASSERT_GT(token.size(), kMaxTokenBytes);
  EXPECT_REFUSED(Verify(token), absl::StrCat("token is too long: ", token.size(),
                                             " bytes; at most 16384 are accepted"));
  EXPECT_REFUSED(Verify(std::string(17 * 1024, 'a')),
                 "token is too long: 17408 bytes; at most 16384 are accepted");
}

TEST_F(JwtTest, CriticalHeaderExtensionsAreRefused) {
  json header = {{"alg", "ES256"}, {"kid", "ec-1"}, {"crit", {"exp"}}};
  EXPECT_REFUSED(Verify(RawToken(header, Claims(), std::string(64, 'x'))),
                 "token uses critical header extensions ('crit'), which are not supported");
}

TEST_F(JwtTest, IssuerWithOnlyAUrlHasNoKeysYet) {
  v1::Issuer issuer = IssuerResource("");
  issuer.mutable_jwks()->set_url("https://idp.example.com/.well-known/jwks.json");
  absl::StatusOr<Verifier> v = Verifier::FromIssuers({issuer});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_REFUSED(v->Verify(Es(*ec1_, "", Claims()), Now()),
                 "issuer 'https://idp.example.com' has no signing keys yet");
  EXPECT_REFUSED(v->Verify(Es(*ec1_, "ec-1", Claims()), Now()),
                 "no key 'ec-1' for issuer 'https://idp.example.com'");
}

TEST_F(JwtTest, SeveralIssuers) {
  absl::StatusOr<KeySet> a = ParseJwks(JwksOf({Jwk(*ec1_, "k")}));
  absl::StatusOr<KeySet> b = ParseJwks(JwksOf({Jwk(*ec2_, "k")}));
  ASSERT_TRUE(a.ok() && b.ok());
  TrustedIssuer first;
  first.name = "first";
  first.issuer = "https://a";
  first.audience = "db";
  first.keys = *a;
  TrustedIssuer second = first;
  second.name = "second";
  second.issuer = "https://b";
  second.keys = *b;
  absl::StatusOr<Verifier> v = Verifier::Create({first, second});
  ASSERT_TRUE(v.ok()) << v.status();
  json claims = Claims();
  claims["aud"] = "db";
  claims["iss"] = "https://b";
  absl::StatusOr<Identity> id = v->Verify(Es(*ec2_, "k", claims), Now());
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->issuer, "second");
  EXPECT_TRUE(id->attribution.empty());
  // Issuer b's key id does not make issuer a's key verify b's token.
  EXPECT_REFUSED(v->Verify(Es(*ec1_, "k", claims), Now()), "signature does not verify");

  second.issuer = "https://a";
  EXPECT_INVALID(Verifier::Create({first, second}),
                 "issuers 'first' and 'second' both trust iss 'https://a'; each iss may be "
                 "configured once");
  second.issuer = "https://b";
  second.audience = "";
  EXPECT_INVALID(Verifier::Create({first, second}),
                 "issuer 'second' needs both an issuer and an audience");
}

TEST_F(JwtTest, SignerRefusesUnfitInput) {
  EXPECT_INVALID(SignEs256(rsa1_->private_pem, "k", Claims()), "ES256 needs an EC P-256 key");
  EXPECT_INVALID(SignRs256(ec1_->private_pem, "k", Claims()),
                 "RS256 needs an RSA key of 2048 to 8192 bits");
  EXPECT_INVALID(SignEs256(ec1_->private_pem, "k", json::array({1, 2})),
                 "JWT claims must be a JSON object");
  EXPECT_INVALID(
      SignEs256("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "k", Claims()),
      "not a PEM private or public key (encrypted keys are not supported)");
  TestKey p384 = MakeKey(EVP_EC_gen("P-384"));
  EXPECT_INVALID(SignEs256(p384.private_pem, "k", Claims()), "ES256 needs an EC P-256 key");
  EXPECT_INVALID(PublicJwk(p384.private_pem, "k"), "only EC P-256 and RSA keys have a JWK here");
}

TEST_F(JwtTest, PublicJwkFromPublicPemMatchesPrivate) {
  absl::StatusOr<std::string> from_private = PublicJwk(ec1_->private_pem, "ec-1");
  absl::StatusOr<std::string> from_public = PublicJwk(ec1_->public_pem, "ec-1");
  ASSERT_TRUE(from_private.ok() && from_public.ok());
  EXPECT_EQ(*from_private, *from_public);
  json jwk = json::parse(*from_private);
  EXPECT_EQ(jwk["kty"], "EC");
  EXPECT_EQ(jwk["crv"], "P-256");
  EXPECT_EQ(jwk["alg"], "ES256");
  EXPECT_EQ(jwk["use"], "sig");
  EXPECT_EQ(jwk["x"].get<std::string>().size(), 43u);  // 32 bytes, unpadded
  EXPECT_FALSE(jwk.contains("d"));
  json rsa = json::parse(Jwk(*rsa1_, "rsa-1"));
  EXPECT_EQ(rsa["e"], "AQAB");
  EXPECT_FALSE(rsa.contains("d"));
}

// ---------------------------------------------------------------------------------------------

class JwksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ec_ = new TestKey(MakeKey(EVP_EC_gen("P-256")));
    rsa_ = new TestKey(MakeKey(EVP_RSA_gen(2048)));
  }
  static void TearDownTestSuite() {
    delete ec_;
    delete rsa_;
  }
  static json EcJwk() { return json::parse(Jwk(*ec_, "e")); }
  static json RsaJwk() { return json::parse(Jwk(*rsa_, "r")); }
  static absl::StatusOr<KeySet> Parse(const std::vector<json>& keys) {
    return ParseJwks(json{{"keys", keys}}.dump());
  }

  static inline TestKey* ec_ = nullptr;
  static inline TestKey* rsa_ = nullptr;
};

TEST_F(JwksTest, ParsesRsaAndEcKeysKeepingKidAndAlg) {
  json rsa = RsaJwk();
  rsa.erase("alg");
  json ec = EcJwk();
  ec.erase("kid");
  absl::StatusOr<KeySet> set = Parse({rsa, ec});
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->keys.size(), 2u);
  EXPECT_EQ(set->skipped, 0u);
  EXPECT_EQ(set->keys[0].type, KeyType::kRsa);
  EXPECT_EQ(set->keys[0].kid, "r");
  EXPECT_EQ(set->keys[0].alg, "");
  EXPECT_NE(set->keys[0].key, nullptr);
  EXPECT_EQ(set->keys[1].type, KeyType::kEcP256);
  EXPECT_EQ(set->keys[1].kid, "");
  EXPECT_EQ(set->keys[1].alg, "ES256");
  EXPECT_NE(set->keys[1].key, nullptr);
}

TEST_F(JwksTest, OtherKeyTypesAreSkipped) {
  json oct = {{"kty", "oct"}, {"kid", "h"}, {"k", "c2VjcmV0"}};
  json okp = {
      {"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}};
  json p384 = {{"kty", "EC"},
               {"crv", "P-384"},
               {"kid", "p384"},
               {"x", "AAAA"},
               {"y", "AAAA"}};  // not even checked: the curve is not ours
  json enc = RsaJwk();
  enc["use"] = "enc";
  absl::StatusOr<KeySet> set = Parse({oct, okp, p384, enc, EcJwk()});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->skipped, 4u);
  ASSERT_EQ(set->keys.size(), 1u);
  EXPECT_EQ(set->keys[0].kid, "e");

  absl::StatusOr<KeySet> empty = ParseJwks(R"({"keys": []})");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->keys.empty());
}

TEST_F(JwksTest, BadBase64InModulus) {
  json rsa = RsaJwk();
  rsa["n"] = "!!!" + rsa["n"].get<std::string>();
  EXPECT_INVALID(Parse({EcJwk(), rsa}),
                 "JWKS keys[1] (kid 'r'): 'n' is not valid unpadded base64url");
  rsa = RsaJwk();
  rsa["e"] = "AQAB==";
  EXPECT_INVALID(Parse({rsa}), "JWKS keys[0] (kid 'r'): 'e' is not valid unpadded base64url");
  rsa.erase("e");
  EXPECT_INVALID(Parse({rsa}), "JWKS keys[0] (kid 'r'): 'e' is missing or not a string");
}

TEST_F(JwksTest, SmallRsaModulusIsRejected) {
  TestKey small = MakeKey(EVP_RSA_gen(1024));
  EXPECT_INVALID(Parse({json::parse(Jwk(small, "small"))}),
                 "JWKS keys[0] (kid 'small'): RSA modulus has 1024 bits; 2048 to 8192 are "
                 "accepted");
  // Nor can it sign.
  EXPECT_INVALID(SignRs256(small.private_pem, "small", {{"sub", "x"}}),
                 "RS256 needs an RSA key of 2048 to 8192 bits");
}

TEST_F(JwksTest, BadRsaExponent) {
  json rsa = RsaJwk();
  rsa["e"] = B64(std::string("\x01\x00\x00", 3));  // even
  EXPECT_INVALID(Parse({rsa}),
                 "JWKS keys[0] (kid 'r'): RSA exponent must be odd and from 3 to 64 bits");
  rsa["e"] = B64(std::string("\x01", 1));
  EXPECT_INVALID(Parse({rsa}),
                 "JWKS keys[0] (kid 'r'): RSA exponent must be odd and from 3 to 64 bits");
}

TEST_F(JwksTest, EcPointMustBeOnTheCurve) {
  json ec = EcJwk();
  std::string y;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(ec["y"].get<std::string>(), &y));
  y[31] = static_cast<char>(y[31] ^ 1);
  ec["y"] = B64(y);
  EXPECT_INVALID(Parse({ec}), "JWKS keys[0] (kid 'e'): 'x', 'y' is not a point on P-256");
  ec = EcJwk();
  ec["x"] = B64(std::string(33, '\x01'));
  EXPECT_INVALID(
      Parse({ec}),
      "JWKS keys[0] (kid 'e'): P-256 coordinates 'x' and 'y' must be 1 to 32 bytes each");
  ec.erase("crv");
  EXPECT_INVALID(Parse({ec}), "JWKS keys[0] (kid 'e'): EC key has no 'crv' string");
}

TEST_F(JwksTest, CoordinateWithoutItsLeadingZeroIsTheSameKey) {
  // Some JWK writers drop a coordinate's leading zero byte (one key in 128 has one).
  for (int attempt = 0; attempt < 20000; ++attempt) {
    TestKey key = MakeKey(EVP_EC_gen("P-256"));
    json full = json::parse(Jwk(key, "z"));
    std::string x;
    ASSERT_TRUE(absl::WebSafeBase64Unescape(full["x"].get<std::string>(), &x));
    if (x[0] != '\0') continue;
    json trimmed = full;
    trimmed["x"] = B64(x.substr(1));
    absl::StatusOr<KeySet> a = Parse({full});
    absl::StatusOr<KeySet> b = Parse({trimmed});
    ASSERT_TRUE(a.ok() && b.ok()) << b.status();
    EXPECT_EQ(EVP_PKEY_eq(a->keys[0].key.get(), b->keys[0].key.get()), 1);
    return;
  }
  FAIL() << "no key with a leading zero in x after 20000 tries";
}

TEST_F(JwksTest, MalformedEntries) {
  EXPECT_INVALID(Parse({json("key")}), "JWKS keys[0]: is not a JSON object");
  EXPECT_INVALID(Parse({json{{"kid", "a"}}}), "JWKS keys[0] (kid 'a'): has no 'kty' string");
  EXPECT_INVALID(Parse({json{{"kty", "RSA"}, {"kid", 5}}}), "JWKS keys[0]: 'kid' is not a string");
  json rsa = RsaJwk();
  rsa["alg"] = json::array({"RS256"});
  EXPECT_INVALID(Parse({rsa}), "JWKS keys[0] (kid 'r'): 'alg' is not a string");
}

TEST_F(JwksTest, DocumentErrors) {
  EXPECT_INVALID(ParseJwks(""), "JWKS is not a JSON object");
  EXPECT_INVALID(ParseJwks("[]"), "JWKS is not a JSON object");
  EXPECT_INVALID(ParseJwks(R"({"keys": )"), "JWKS is not a JSON object");
  EXPECT_INVALID(ParseJwks("{}"), "JWKS has no \"keys\" array");
  EXPECT_INVALID(ParseJwks(R"({"keys": {}})"), "JWKS has no \"keys\" array");
  std::vector<json> many(65, json{{"kty", "oct"}, {"k", "AAAA"}});
  EXPECT_INVALID(Parse(many), "JWKS has 65 keys; at most 64 are accepted");
  many.resize(64);
  EXPECT_TRUE(Parse(many).ok());
  std::string big = json{{"keys", json::array()}, {"pad", std::string(256 * 1024, ' ')}}.dump();
  EXPECT_INVALID(ParseJwks(big),
                 absl::StrCat("JWKS is ", big.size(), " bytes; at most 262144 are accepted"));
}

TEST_F(JwksTest, FromIssuersNamesTheIssuerInErrors) {
  json rsa = RsaJwk();
  rsa["n"] = "AAAA";
  absl::StatusOr<Verifier> v =
      Verifier::FromIssuers({IssuerResource(json{{"keys", {rsa}}}.dump())});
  EXPECT_INVALID(v,
                 "issuer 'corp': JWKS keys[0] (kid 'r'): RSA modulus has 0 bits; 2048 to 8192 "
                 "are accepted");
}

}  // namespace
}  // namespace sluice::jwt
