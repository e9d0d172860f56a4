// JSON Web Tokens (RFC 7519) signed with JWS (RFC 7515), and the JSON Web Key Sets (RFC 7517)
// that publish their keys: what the agent needs to authenticate a caller by the OIDC token it
// sends as its PostgreSQL password.
//
// Only two algorithms are accepted, RS256 (RSASSA-PKCS1-v1_5 with SHA-256) and ES256 (ECDSA on
// P-256 with SHA-256), RFC 7518 section 3. Every signature check is OpenSSL 3 EVP; nothing here is
// hand-rolled crypto. No exceptions: JSON is parsed with nlohmann's non-throwing parse and every
// type is checked before a value is read.
//
// Error messages are written for the caller (a PostgreSQL client shows them). They name at most
// the token's issuer, audience, key id, algorithm and times, quoted and cut to a bounded length;
// never other token contents.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice::v1 {
class Issuer;
}  // namespace sluice::v1

namespace sluice::jwt {

// Caps on untrusted input.
inline constexpr size_t kMaxTokenBytes = 16 * 1024;
inline constexpr size_t kMaxJwksBytes = 256 * 1024;
inline constexpr size_t kMaxJwksKeys = 64;
inline constexpr int kMinRsaModulusBits = 2048;
inline constexpr int kMaxRsaModulusBits = 8192;
inline constexpr size_t kMaxGroups = 256;
inline constexpr size_t kMaxGroupBytes = 256;
// Clock skew tolerated on `exp`, `nbf` and `iat`.
inline constexpr absl::Duration kClockLeeway = absl::Seconds(60);

enum class KeyType {
  kRsa,    // verifies RS256
  kEcP256  // verifies ES256
};

// One public key from a JWKS.
struct Jwk {
  KeyType type = KeyType::kRsa;
  std::string kid;  // empty when the JWK has no "kid"
  std::string alg;  // empty when the JWK has no "alg"; else tokens must use exactly this alg
  // Immutable once built; shared so that key sets copy cheaply. OpenSSL 3 allows concurrent
  // read-only use of one EVP_PKEY from several threads.
  std::shared_ptr<EVP_PKEY> key;
};

// The usable keys of one JWKS document.
struct KeySet {
  std::vector<Jwk> keys;
  // JWKs left out because this module cannot verify with them: another "kty" (oct, OKP, ...),
  // an EC curve other than P-256, or "use" other than "sig".
  size_t skipped = 0;
};

// Parses a JWKS document, `{"keys": [...]}`. RSA keys ("kty": "RSA", "n", "e") must have a
// modulus of 2048 to 8192 bits and an odd public exponent of 3 to 64 bits; EC keys ("kty": "EC",
// "crv": "P-256", "x", "y") must carry 32-byte coordinates of a point on the curve. Values are
// unpadded base64url. A malformed key of a supported type fails the whole document with
// InvalidArgument naming the key ("JWKS keys[2] (kid 'k1'): ..."); so does a document over
// 256 KiB, with more than 64 keys, or that is not a JSON object with a "keys" array.
absl::StatusOr<KeySet> ParseJwks(absl::string_view json);

// Who a verified token says the caller is.
struct Identity {
  std::string issuer;  // the trusted issuer's name (what SubjectSelector.issuers lists)
  std::string subject;
  std::vector<std::string> groups;
  std::map<std::string, std::string> attribution;  // configured claims present in the token
  int64_t expires_unix = 0;
  int64_t issued_at_unix = 0;  // 0 when the token has no "iat"
  std::string key_id;          // "kid" of the JWK that verified the signature (may be empty)
  std::string algorithm;       // "RS256" or "ES256"
};

// An identity provider whose tokens are accepted.
struct TrustedIssuer {
  std::string name;      // the Issuer resource name; required
  std::string issuer;    // the exact "iss" its tokens carry; required, unique per Verifier
  std::string audience;  // the "aud" its tokens must carry for us; required
  KeySet keys;           // may be empty (a JWKS URL not fetched yet): its tokens then fail
  std::string subject_claim = "sub";
  std::string groups_claim = "groups";
  std::vector<std::string> attribution_claims;
};

// Verifies compact-serialised JWTs against a fixed set of trusted issuers. Immutable after
// creation, so one Verifier may be shared by every event loop of the agent.
//
// Verify accepts a token when all of these hold, checked in this order, and otherwise returns
// Unauthenticated with a message saying which did not:
//  - at most 16 KiB, three unpadded base64url parts, header and payload JSON objects;
//  - header "alg" is RS256 or ES256 ("none" and HS256/384/512 are named as such), and there is
//    no "crit" header (no JWS extension is understood);
//  - payload "iss" is the `issuer` of a trusted issuer;
//  - a key of that issuer verifies the signature: with a header "kid", the key with that kid;
//    without, every key of that issuer fitting the alg is tried. RS256 needs an RSA key, ES256 a
//    P-256 key, and a JWK with an "alg" accepts only that alg;
//  - "aud", a string or an array of strings, contains the issuer's audience;
//  - "exp" is present and now < exp + 60 s; "nbf" and "iat", when present, are <= now + 60 s;
//  - the subject claim is a non-empty string.
// The groups claim is used when it is an array of strings (at most 256, each at most 256 bytes;
// more is an error), else ignored. Attribution claims that are strings or numbers are copied
// (numbers as JSON text); others are skipped.
class Verifier {
 public:
  // InvalidArgument when an issuer lacks a name, issuer or audience, or two share an `issuer`.
  static absl::StatusOr<Verifier> Create(std::vector<TrustedIssuer> issuers);
  // From policy resources. The inline JWKS is parsed (its errors name the issuer); an issuer
  // with only a JWKS URL is trusted with no keys until the control plane inlines them. Empty
  // claim mappings take the defaults "sub" and "groups".
  static absl::StatusOr<Verifier> FromIssuers(const std::vector<sluice::v1::Issuer>& issuers);

  // A token verified once is known by its digest until it expires (a verifier is made anew for
  // every policy, so a change of issuers or keys starts afresh): an HTTP caller's every request
  // carries the same token, and a signature check costs about 100 µs of CPU.
  absl::StatusOr<Identity> Verify(absl::string_view token, absl::Time now) const;

 private:
  Verifier() = default;
  absl::StatusOr<Identity> VerifyWhole(absl::string_view token, absl::Time now,
                                       absl::Time* valid_from) const;

  absl::flat_hash_map<std::string, TrustedIssuer> by_iss_;
  struct Verified;
  std::shared_ptr<Verified> verified_;
};

// Signing, for tests and for the control plane's development issuer. `private_key_pem` is a
// PKCS#8 or traditional PEM private key (not encrypted): EC P-256 for ES256, RSA of at least
// 2048 bits for RS256. The header is {"alg", "typ": "JWT", "kid"} ("kid" left out when empty);
// `claims` must be a JSON object. Returns the compact serialisation header.payload.signature.
absl::StatusOr<std::string> SignEs256(const std::string& private_key_pem, const std::string& kid,
                                      const nlohmann::json& claims);
absl::StatusOr<std::string> SignRs256(const std::string& private_key_pem, const std::string& kid,
                                      const nlohmann::json& claims);

// The JWK (a JSON object, as text) of the public half of an EC P-256 or RSA key given as PEM
// (private, or a public SubjectPublicKeyInfo): {"kty", "kid", "use": "sig", "alg", and "n"/"e"
// or "crv"/"x"/"y"}. Wrap several in {"keys": [...]} to make a JWKS.
absl::StatusOr<std::string> PublicJwk(const std::string& private_key_pem, const std::string& kid);

}  // namespace sluice::jwt
