#include "common/jwt.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/crypto.h"
#include "common/status_macros.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::jwt {
namespace {

using Json = nlohmann::json;

constexpr absl::string_view kRs256 = "RS256";
constexpr absl::string_view kEs256 = "ES256";
constexpr int kP256CoordinateBytes = 32;
constexpr size_t kEs256SignatureBytes = 2 * kP256CoordinateBytes;
constexpr int kMaxRsaExponentBits = 64;  // OpenSSL refuses larger exponents for big moduli
// Token values quoted in messages are cut to this many bytes.
constexpr size_t kMaxQuotedBytes = 128;
constexpr size_t kMaxAudiencesShown = 8;

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamDeleter {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct EcdsaSigDeleter {
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
using Bn = std::unique_ptr<BIGNUM, BnDeleter>;
using ParamBld = std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter>;
using Params = std::unique_ptr<OSSL_PARAM, ParamDeleter>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, EcdsaSigDeleter>;
using Bio = std::unique_ptr<BIO, BioDeleter>;

const unsigned char* U(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// A failed OpenSSL call leaves entries on this thread's error queue; clear them so that they are
// not blamed on the next, unrelated TLS call of the same thread.
template <typename T>
T ClearErrors(T result) {
  ERR_clear_error();
  return result;
}

// A value from a token or JWKS, quoted for an error message: control characters replaced and
// long values cut (at a UTF-8 character boundary), so that a message stays one readable line.
std::string Quote(absl::string_view v) {
  bool cut = false;
  if (v.size() > kMaxQuotedBytes) {
    size_t end = kMaxQuotedBytes;
    while (end > 0 && (static_cast<unsigned char>(v[end]) & 0xC0) == 0x80) --end;
    v = v.substr(0, end);
    cut = true;
  }
  std::string out = "'";
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7F ? '?' : c);
  }
  out += cut ? "...'" : "'";
  return out;
}

// Unpadded base64url only (RFC 7515 section 2), in its canonical form: no '=', no characters of
// standard base64 or whitespace, and no stray bits in the last character.
bool DecodeBase64Url(absl::string_view in, std::string* out) {
  for (char c : in) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  if (in.size() % 4 == 1) return false;
  if (!absl::WebSafeBase64Unescape(in, out)) return false;
  return absl::WebSafeBase64Escape(*out) == in;
}

std::string EncodeBase64Url(absl::string_view in) { return absl::WebSafeBase64Escape(in); }

// JSON text that never throws: strings built by a caller may hold invalid UTF-8.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

const Json* Member(const Json& object, const std::string& name) {
  auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

std::string FormatUnix(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

// A NumericDate (RFC 7519 section 2): seconds since the epoch, possibly fractional (floored);
// values beyond int64 are clamped.
bool NumericDate(const Json& j, int64_t* out) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    *out = v > static_cast<uint64_t>(kMax) ? kMax : static_cast<int64_t>(v);
    return true;
  }
  if (j.is_number_integer()) {
    *out = j.get<int64_t>();
    return true;
  }
  if (j.is_number_float()) {
    double v = std::floor(j.get<double>());
    if (v >= 9.2e18) {
      *out = kMax;
    } else if (v <= -9.2e18) {
      *out = kMin;
    } else {
      *out = static_cast<int64_t>(v);
    }
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Keys

std::shared_ptr<EVP_PKEY> Share(Pkey key) {
  return std::shared_ptr<EVP_PKEY>(key.release(), PkeyDeleter());
}

// Builds a public key of `type_name` ("RSA", "EC") from OSSL_PARAMs; null on failure.
Pkey PublicKeyFromParams(const char* type_name, OSSL_PARAM_BLD* bld) {
  Params params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type_name, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return ClearErrors(Pkey());
  }
  return Pkey(raw);
}

class JwkParser {
 public:
  JwkParser(const Json& jwk, size_t index) : jwk_(jwk), index_(index) {}

  // Adds the key to `set`, or counts it as skipped.
  absl::Status ParseInto(KeySet* set) {
    if (!jwk_.is_object()) return Error("is not a JSON object");
    if (const Json* kid = Member(jwk_, "kid")) {
      if (!kid->is_string()) return Error("'kid' is not a string");
      kid_ = kid->get<std::string>();
    }
    const Json* kty = Member(jwk_, "kty");
    if (kty == nullptr || !kty->is_string()) return Error("has no 'kty' string");
    std::string alg;
    if (const Json* a = Member(jwk_, "alg")) {
      if (!a->is_string()) return Error("'alg' is not a string");
      alg = a->get<std::string>();
    }
    if (const Json* use = Member(jwk_, "use")) {
      if (!use->is_string()) return Error("'use' is not a string");
      if (use->get<std::string>() != "sig") return Skip(set);  // an encryption key
    }
    const std::string& type = kty->get_ref<const std::string&>();
    Jwk key;
    key.kid = kid_;
    key.alg = std::move(alg);
    if (type == "RSA") {
      key.type = KeyType::kRsa;
      ASSIGN_OR_RETURN(key.key, ParseRsa());
    } else if (type == "EC") {
      const Json* crv = Member(jwk_, "crv");
      if (crv == nullptr || !crv->is_string()) return Error("EC key has no 'crv' string");
      if (crv->get<std::string>() != "P-256") return Skip(set);
      key.type = KeyType::kEcP256;
      ASSIGN_OR_RETURN(key.key, ParseEcP256());
    } else {
      return Skip(set);
    }
    set->keys.push_back(std::move(key));
    return absl::OkStatus();
  }

 private:
  absl::Status Skip(KeySet* set) {
    ++set->skipped;
    return absl::OkStatus();
  }

  absl::Status Error(absl::string_view why) const {
    std::string kid = kid_.empty() ? "" : absl::StrCat(" (kid ", Quote(kid_), ")");
    return absl::InvalidArgumentError(absl::StrCat("JWKS keys[", index_, "]", kid, ": ", why));
  }

  absl::StatusOr<std::string> Bytes(const char* name) const {
    const Json* v = Member(jwk_, name);
    if (v == nullptr || !v->is_string()) {
      return Error(absl::StrCat("'", name, "' is missing or not a string"));
    }
    std::string out;
    if (!DecodeBase64Url(v->get_ref<const std::string&>(), &out)) {
      return Error(absl::StrCat("'", name, "' is not valid unpadded base64url"));
    }
    if (out.empty()) return Error(absl::StrCat("'", name, "' is empty"));
    return out;
  }

  absl::StatusOr<std::shared_ptr<EVP_PKEY>> ParseRsa() const {
    ASSIGN_OR_RETURN(std::string n_bytes, Bytes("n"));
    ASSIGN_OR_RETURN(std::string e_bytes, Bytes("e"));
    // Bound the work before building numbers: a modulus of 8192 bits is 1024 bytes (one more
    // when an encoder adds a leading zero).
    if (n_bytes.size() > kMaxRsaModulusBits / 8 + 1) {
      return Error(absl::StrCat("RSA modulus is larger than ", kMaxRsaModulusBits, " bits"));
    }
    if (e_bytes.size() > kMaxRsaExponentBits / 8 + 1) {
      return Error(absl::StrCat("RSA exponent is larger than ", kMaxRsaExponentBits, " bits"));
    }
    Bn n(BN_bin2bn(U(n_bytes), static_cast<int>(n_bytes.size()), nullptr));
    Bn e(BN_bin2bn(U(e_bytes), static_cast<int>(e_bytes.size()), nullptr));
    if (!n || !e) return absl::InternalError("out of memory building an RSA key");
    int bits = BN_num_bits(n.get());
    if (bits < kMinRsaModulusBits || bits > kMaxRsaModulusBits) {
      return Error(absl::StrCat("RSA modulus has ", bits, " bits; ", kMinRsaModulusBits, " to ",
                                kMaxRsaModulusBits, " are accepted"));
    }
    if (!BN_is_odd(n.get())) return Error("RSA modulus is even");
    if (!BN_is_odd(e.get()) || BN_num_bits(e.get()) < 2 ||
        BN_num_bits(e.get()) > kMaxRsaExponentBits) {
      return Error("RSA exponent must be odd and from 3 to 64 bits");
    }
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
      return ClearErrors(absl::InternalError("out of memory building an RSA key"));
    }
    Pkey key = PublicKeyFromParams("RSA", bld.get());
    if (!key) return Error("OpenSSL does not accept this RSA public key");
    return Share(std::move(key));
  }

  absl::StatusOr<std::shared_ptr<EVP_PKEY>> ParseEcP256() const {
    ASSIGN_OR_RETURN(std::string x, Bytes("x"));
    ASSIGN_OR_RETURN(std::string y, Bytes("y"));
    // RFC 7518 section 6.2.1.2 wants each coordinate at the full size for the curve, but some
    // JWK writers drop leading zero bytes (one key in 128 has one). A shorter value is the same
    // number, so it is padded back; a longer one is refused. OpenSSL checks the point is on the
    // curve.
    if (x.empty() || y.empty() || x.size() > size_t{kP256CoordinateBytes} ||
        y.size() > size_t{kP256CoordinateBytes}) {
      return Error("P-256 coordinates 'x' and 'y' must be 1 to 32 bytes each");
    }
    x.insert(0, kP256CoordinateBytes - x.size(), '\0');
    y.insert(0, kP256CoordinateBytes - y.size(), '\0');
    std::string point = absl::StrCat("\x04", x, y);  // SEC 1 uncompressed point
    char group[] = "prime256v1";
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!bld ||
        OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                         point.size()) != 1) {
      return ClearErrors(absl::InternalError("out of memory building an EC key"));
    }
    Pkey key = PublicKeyFromParams("EC", bld.get());
    if (!key) return Error("'x', 'y' is not a point on P-256");
    PkeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1) {
      return ClearErrors(Error("'x', 'y' is not a valid P-256 public key"));
    }
    return Share(std::move(key));
  }

  const Json& jwk_;
  size_t index_;
  std::string kid_;
};

// ---------------------------------------------------------------------------------------------
// Signatures

// ES256 signatures are raw r||s (RFC 7518 section 3.4); OpenSSL speaks DER ECDSA-Sig-Value.
absl::StatusOr<std::string> RawEcdsaToDer(absl::string_view raw) {
  EcdsaSig sig(ECDSA_SIG_new());
  Bn r(BN_bin2bn(U(raw), kP256CoordinateBytes, nullptr));
  Bn s(BN_bin2bn(U(raw.substr(kP256CoordinateBytes)), kP256CoordinateBytes, nullptr));
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return ClearErrors(absl::InternalError("out of memory converting an ECDSA signature"));
  }
  r.release();  // owned by sig now
  s.release();
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return ClearErrors(absl::InternalError("cannot encode an ECDSA signature"));
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &p) != len) {
    return ClearErrors(absl::InternalError("cannot encode an ECDSA signature"));
  }
  return der;
}

absl::StatusOr<std::string> DerEcdsaToRaw(absl::string_view der) {
  const auto* p = U(der);
  EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) return ClearErrors(absl::InternalError("OpenSSL returned an unreadable signature"));
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  std::string raw(kEs256SignatureBytes, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(r, out, kP256CoordinateBytes) != kP256CoordinateBytes ||
      BN_bn2binpad(s, out + kP256CoordinateBytes, kP256CoordinateBytes) != kP256CoordinateBytes) {
    return ClearErrors(absl::InternalError("OpenSSL returned an oversized ECDSA signature"));
  }
  return raw;
}

// True when `signature` (in JWS form) is a valid SHA-256 signature of `input` under `key`.
absl::StatusOr<bool> VerifySignature(const Jwk& key, absl::string_view input,
                                     absl::string_view signature) {
  std::string der;
  if (key.type == KeyType::kEcP256) {
    ASSIGN_OR_RETURN(der, RawEcdsaToDer(signature));
    signature = der;
  }
  MdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key.key.get()) != 1) {
    return ClearErrors(absl::InternalError("cannot start signature verification"));
  }
  if (key.type == KeyType::kRsa && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
    return ClearErrors(absl::InternalError("cannot select RSA PKCS#1 v1.5 padding"));
  }
  int rc = EVP_DigestVerify(ctx.get(), U(signature), signature.size(), U(input), input.size());
  return ClearErrors(rc == 1);
}

absl::StatusOr<Pkey> LoadKeyPem(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return absl::InternalError("out of memory reading a PEM key");
  // A passphrase callback that refuses: the default one would prompt on the terminal.
  auto no_passphrase = [](char*, int, int, void*) -> int { return -1; };
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    bio.reset(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return absl::InternalError("out of memory reading a PEM key");
    key.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, no_passphrase, nullptr));
  }
  if (!key) {
    return ClearErrors(absl::InvalidArgumentError(
        "not a PEM private or public key (encrypted keys are not supported)"));
  }
  return key;
}

bool IsP256(EVP_PKEY* key) {
  if (!EVP_PKEY_is_a(key, "EC")) return false;
  char group[64] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) !=
      1) {
    return ClearErrors(false);
  }
  absl::string_view name(group, len);
  return name == "prime256v1" || name == "P-256";
}

absl::Status CheckSigningKey(EVP_PKEY* key, absl::string_view alg) {
  if (alg == kEs256) {
    if (!IsP256(key)) return absl::InvalidArgumentError("ES256 needs an EC P-256 key");
  } else if (!EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_get_bits(key) < kMinRsaModulusBits ||
             EVP_PKEY_get_bits(key) > kMaxRsaModulusBits) {
    return absl::InvalidArgumentError(absl::StrCat("RS256 needs an RSA key of ", kMinRsaModulusBits,
                                                   " to ", kMaxRsaModulusBits, " bits"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Sign(const std::string& pem, const std::string& kid, const Json& claims,
                                 absl::string_view alg) {
  if (!claims.is_object()) return absl::InvalidArgumentError("JWT claims must be a JSON object");
  ASSIGN_OR_RETURN(Pkey key, LoadKeyPem(pem));
  RETURN_IF_ERROR(CheckSigningKey(key.get(), alg));
  Json header = Json::object();
  header["alg"] = std::string(alg);
  header["typ"] = "JWT";
  if (!kid.empty()) header["kid"] = kid;
  std::string input =
      absl::StrCat(EncodeBase64Url(Dump(header)), ".", EncodeBase64Url(Dump(claims)));

  MdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key.get()) != 1 ||
      (alg == kRs256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)) {
    return ClearErrors(absl::InternalError("cannot start signing"));
  }
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, U(input), input.size()) != 1) {
    return ClearErrors(absl::InternalError("signing failed"));
  }
  std::string signature(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &len, U(input),
                     input.size()) != 1) {
    return ClearErrors(absl::InternalError("signing failed"));
  }
  signature.resize(len);
  if (alg == kEs256) {
    ASSIGN_OR_RETURN(signature, DerEcdsaToRaw(signature));
  }
  return absl::StrCat(input, ".", EncodeBase64Url(signature));
}

absl::StatusOr<std::string> BnParam(EVP_PKEY* key, const char* name, int pad_to) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) {
    return ClearErrors(absl::InternalError(absl::StrCat("cannot read key parameter ", name)));
  }
  Bn bn(raw);
  int size = pad_to > 0 ? pad_to : BN_num_bytes(bn.get());
  std::string out(static_cast<size_t>(size), '\0');
  if (BN_bn2binpad(bn.get(), reinterpret_cast<unsigned char*>(out.data()), size) != size) {
    return absl::InternalError(absl::StrCat("key parameter ", name, " is too large"));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Verification

absl::Status Refused(absl::string_view why) { return absl::UnauthenticatedError(why); }

absl::Status Malformed(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat("token is malformed: ", why));
}

absl::StatusOr<Json> DecodeObject(absl::string_view part, absl::string_view what) {
  std::string text;
  if (!DecodeBase64Url(part, &text)) {
    return Malformed(absl::StrCat("the ", what, " is not valid base64url"));
  }
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Malformed(absl::StrCat("the ", what, " is not a JSON object"));
  }
  return j;
}

const char* KeyTypeName(KeyType type) {
  return type == KeyType::kRsa ? "an RSA key" : "an EC P-256 key";
}

bool KeyFits(const Jwk& key, KeyType type, absl::string_view alg) {
  return key.type == type && (key.alg.empty() || key.alg == alg);
}

// Optional NumericDate claim: absent leaves *out alone.
absl::Status DateClaim(const Json& payload, const char* name, bool* present, int64_t* out) {
  const Json* j = Member(payload, name);
  *present = j != nullptr;
  if (j != nullptr && !NumericDate(*j, out)) {
    return Malformed(absl::StrCat("'", name, "' is not a number of seconds"));
  }
  return absl::OkStatus();
}

absl::Status CheckAudience(const Json& payload, const std::string& expected) {
  const Json* aud = Member(payload, "aud");
  if (aud == nullptr) {
    return Refused(absl::StrCat("token has no audience ('aud'); expected ", Quote(expected)));
  }
  if (aud->is_string()) {
    if (aud->get_ref<const std::string&>() == expected) return absl::OkStatus();
    return Refused(absl::StrCat("audience ", Quote(aud->get_ref<const std::string&>()),
                                " is not accepted here; expected ", Quote(expected)));
  }
  if (!aud->is_array()) return Malformed("'aud' is neither a string nor an array of strings");
  std::vector<std::string> shown;
  size_t strings = 0;
  for (const Json& a : *aud) {
    if (!a.is_string()) continue;
    if (a.get_ref<const std::string&>() == expected) return absl::OkStatus();
    if (++strings <= kMaxAudiencesShown) shown.push_back(Quote(a.get_ref<const std::string&>()));
  }
  if (strings > shown.size()) shown.push_back("...");
  return Refused(absl::StrCat("audience [", absl::StrJoin(shown, ", "),
                              "] is not accepted here; expected ", Quote(expected)));
}

}  // namespace

absl::StatusOr<KeySet> ParseJwks(absl::string_view json) {
  if (json.size() > kMaxJwksBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWKS is ", json.size(), " bytes; at most ", kMaxJwksBytes, " are accepted"));
  }
  Json doc = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("JWKS is not a JSON object");
  }
  const Json* keys = Member(doc, "keys");
  if (keys == nullptr || !keys->is_array()) {
    return absl::InvalidArgumentError("JWKS has no \"keys\" array");
  }
  if (keys->size() > kMaxJwksKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWKS has ", keys->size(), " keys; at most ", kMaxJwksKeys, " are accepted"));
  }
  KeySet set;
  for (size_t i = 0; i < keys->size(); ++i) {
    RETURN_IF_ERROR(JwkParser((*keys)[i], i).ParseInto(&set));
  }
  return set;
}

// Tokens verified by one Verifier: by SHA-256 of the token, the identity and when it is valid.
struct Verifier::Verified {
  static constexpr size_t kMaxTokens = 4096;
  struct Entry {
    Identity identity;
    absl::Time from, until;
  };
  absl::Mutex mu;
  absl::flat_hash_map<std::string, Entry> tokens ABSL_GUARDED_BY(mu);
};

absl::StatusOr<Verifier> Verifier::Create(std::vector<TrustedIssuer> issuers) {
  Verifier v;
  v.verified_ = std::make_shared<Verified>();
  for (TrustedIssuer& ti : issuers) {
    if (ti.name.empty()) return absl::InvalidArgumentError("a trusted issuer has no name");
    if (ti.issuer.empty() || ti.audience.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("issuer '", ti.name, "' needs both an issuer and an audience"));
    }
    if (ti.subject_claim.empty()) ti.subject_claim = "sub";
    if (ti.groups_claim.empty()) ti.groups_claim = "groups";
    auto it = v.by_iss_.find(ti.issuer);
    if (it != v.by_iss_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("issuers '", it->second.name, "' and '",
                                                     ti.name, "' both trust iss '", ti.issuer,
                                                     "'; each iss may be configured once"));
    }
    std::string iss = ti.issuer;
    v.by_iss_.emplace(std::move(iss), std::move(ti));
  }
  return v;
}

absl::StatusOr<Verifier> Verifier::FromIssuers(const std::vector<sluice::v1::Issuer>& issuers) {
  std::vector<TrustedIssuer> trusted;
  trusted.reserve(issuers.size());
  for (const sluice::v1::Issuer& i : issuers) {
    TrustedIssuer ti;
    ti.name = i.name();
    ti.issuer = i.issuer();
    ti.audience = i.audience();
    if (!i.jwks().inline_().empty()) {
      absl::StatusOr<KeySet> keys = ParseJwks(i.jwks().inline_());
      if (!keys.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("issuer '", i.name(), "': ", keys.status().message()));
      }
      ti.keys = *std::move(keys);
    }
    if (!i.claims().subject().empty()) ti.subject_claim = i.claims().subject();
    if (!i.claims().groups().empty()) ti.groups_claim = i.claims().groups();
    ti.attribution_claims.assign(i.claims().attribution().begin(), i.claims().attribution().end());
    trusted.push_back(std::move(ti));
  }
  return Create(std::move(trusted));
}

namespace {

// The algorithm, from an allow-list of two, so that "none" and HMAC keyed with a public key (the
// classic algorithm confusion) can never reach a verifier; the key type it needs.
absl::StatusOr<KeyType> CheckAlgorithm(const Json& header, const std::string& signature,
                                       std::string* alg_out) {
  const Json* alg_json = Member(header, "alg");
  if (alg_json == nullptr || !alg_json->is_string()) {
    return Malformed("the header has no 'alg' string");
  }
  const std::string& alg = alg_json->get_ref<const std::string&>();
  if (absl::EqualsIgnoreCase(alg, "none")) {
    return Refused(absl::StrCat("algorithm ", Quote(alg), " is not accepted"));
  }
  if (alg != kRs256 && alg != kEs256) {
    return Refused(
        absl::StrCat("algorithm ", Quote(alg), " is not accepted: only RS256 and ES256 are"));
  }
  // RFC 7515 section 4.1.11: extensions listed in "crit" must be understood; we know none.
  if (header.contains("crit")) {
    return Refused("token uses critical header extensions ('crit'), which are not supported");
  }
  const KeyType key_type = alg == kRs256 ? KeyType::kRsa : KeyType::kEcP256;
  if (key_type == KeyType::kEcP256 && signature.size() != kEs256SignatureBytes) {
    return Malformed(absl::StrCat("an ES256 signature is ", kEs256SignatureBytes, " bytes, not ",
                                  signature.size()));
  }
  *alg_out = alg;
  return key_type;
}

// The issuer's keys that may have signed: the one named by 'kid', or every key that fits.
absl::StatusOr<std::vector<const Jwk*>> CandidateKeys(const Json& header, const std::string& iss,
                                                      const TrustedIssuer& issuer, KeyType key_type,
                                                      const std::string& alg) {
  std::vector<const Jwk*> candidates;
  const Json* kid_json = Member(header, "kid");
  if (kid_json == nullptr) {
    if (issuer.keys.keys.empty()) {
      return Refused(absl::StrCat("issuer ", Quote(iss), " has no signing keys yet"));
    }
    for (const Jwk& k : issuer.keys.keys) {
      if (KeyFits(k, key_type, alg)) candidates.push_back(&k);
    }
    if (candidates.empty())
      return Refused(absl::StrCat("issuer ", Quote(iss), " has no key for ", alg));
    return candidates;
  }
  if (!kid_json->is_string()) return Malformed("'kid' is not a string");
  const std::string& kid = kid_json->get_ref<const std::string&>();
  const Jwk* unfit = nullptr;
  for (const Jwk& k : issuer.keys.keys) {
    if (k.kid != kid) continue;
    if (KeyFits(k, key_type, alg)) {
      candidates.push_back(&k);
    } else {
      unfit = &k;
    }
  }
  if (!candidates.empty()) return candidates;
  if (unfit == nullptr)
    return Refused(absl::StrCat("no key ", Quote(kid), " for issuer ", Quote(iss)));
  if (unfit->type != key_type) {
    return Refused(absl::StrCat("key ", Quote(kid), " of issuer ", Quote(iss), " is ",
                                KeyTypeName(unfit->type), " and cannot verify ", alg));
  }
  return Refused(absl::StrCat("key ", Quote(kid), " of issuer ", Quote(iss), " is for algorithm ",
                              Quote(unfit->alg), ", not ", alg));
}

// exp (required), nbf and iat, with the clock leeway.
absl::Status CheckTimes(const Json& payload, absl::Time now, Identity* id, absl::Time* valid_from) {
  bool present = false;
  RETURN_IF_ERROR(DateClaim(payload, "exp", &present, &id->expires_unix));
  if (!present) return Refused("token has no expiry ('exp')");
  if (now >= absl::FromUnixSeconds(id->expires_unix) + kClockLeeway) {
    return Refused(absl::StrCat("token expired at ", FormatUnix(id->expires_unix)));
  }
  int64_t nbf = 0;
  RETURN_IF_ERROR(DateClaim(payload, "nbf", &present, &nbf));
  if (present && absl::FromUnixSeconds(nbf) > now + kClockLeeway) {
    return Refused(absl::StrCat("token is not valid before ", FormatUnix(nbf)));
  }
  RETURN_IF_ERROR(DateClaim(payload, "iat", &present, &id->issued_at_unix));
  if (present && absl::FromUnixSeconds(id->issued_at_unix) > now + kClockLeeway) {
    return Refused(absl::StrCat("token is not valid before ", FormatUnix(id->issued_at_unix),
                                " (it was issued in the future; check the clocks)"));
  }
  *valid_from = absl::FromUnixSeconds(std::max(nbf, id->issued_at_unix)) - kClockLeeway;
  return absl::OkStatus();
}

// Who the token is about: the subject claim (required), groups (an array of strings, capped) and
// the attribution claims the issuer names.
absl::Status ReadIdentity(const Json& payload, const TrustedIssuer& issuer, Identity* id) {
  const Json* sub = Member(payload, issuer.subject_claim);
  if (sub == nullptr) {
    return Refused(absl::StrCat("token has no subject claim ", Quote(issuer.subject_claim)));
  }
  if (!sub->is_string() || sub->get_ref<const std::string&>().empty()) {
    return Refused(
        absl::StrCat("subject claim ", Quote(issuer.subject_claim), " is not a non-empty string"));
  }
  id->subject = sub->get<std::string>();

  const Json* groups = Member(payload, issuer.groups_claim);
  bool string_array = groups != nullptr && groups->is_array();
  if (string_array) {
    for (const Json& g : *groups) string_array = string_array && g.is_string();
  }
  if (string_array) {
    if (groups->size() > kMaxGroups) {
      return Refused(absl::StrCat("token has ", groups->size(), " groups; at most ", kMaxGroups,
                                  " are accepted"));
    }
    for (const Json& g : *groups) {
      if (g.get_ref<const std::string&>().size() > kMaxGroupBytes) {
        return Refused(
            absl::StrCat("a group name in the token is longer than ", kMaxGroupBytes, " bytes"));
      }
      id->groups.push_back(g.get<std::string>());
    }
  }

  for (const std::string& name : issuer.attribution_claims) {
    const Json* v = Member(payload, name);
    if (v == nullptr) continue;
    if (v->is_string()) {
      id->attribution[name] = v->get<std::string>();
    } else if (v->is_number()) {
      id->attribution[name] = Dump(*v);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Identity> Verifier::Verify(absl::string_view token, absl::Time now) const {
  std::string digest;
  if (verified_ != nullptr && token.size() <= kMaxTokenBytes) {
    digest = Sha256(token);
    absl::MutexLock lock(&verified_->mu);
    auto it = verified_->tokens.find(digest);
    if (it != verified_->tokens.end() && now >= it->second.from && now < it->second.until) {
      return it->second.identity;
    }
  }
  absl::Time valid_from = absl::InfinitePast();
  ASSIGN_OR_RETURN(Identity id, VerifyWhole(token, now, &valid_from));
  if (verified_ != nullptr && !digest.empty()) {
    absl::MutexLock lock(&verified_->mu);
    if (verified_->tokens.size() >= Verified::kMaxTokens) verified_->tokens.clear();
    verified_->tokens[digest] =
        Verified::Entry{id, valid_from, absl::FromUnixSeconds(id.expires_unix) + kClockLeeway};
  }
  return id;
}

absl::StatusOr<Identity> Verifier::VerifyWhole(absl::string_view token, absl::Time now,
                                               absl::Time* valid_from) const {
  if (token.size() > kMaxTokenBytes) {
    return Refused(absl::StrCat("token is too long: ", token.size(), " bytes; at most ",
                                kMaxTokenBytes, " are accepted"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) {
    return Malformed("expected three base64url parts separated by '.'");
  }
  ASSIGN_OR_RETURN(Json header, DecodeObject(parts[0], "header"));
  ASSIGN_OR_RETURN(Json payload, DecodeObject(parts[1], "payload"));
  std::string signature;
  if (!DecodeBase64Url(parts[2], &signature)) {
    return Malformed("the signature is not valid base64url");
  }
  std::string alg;
  ASSIGN_OR_RETURN(KeyType key_type, CheckAlgorithm(header, signature, &alg));

  // Issuer. Read before the signature is checked: it picks the keys.
  const Json* iss_json = Member(payload, "iss");
  if (iss_json == nullptr) return Refused("token has no issuer ('iss')");
  if (!iss_json->is_string()) return Malformed("'iss' is not a string");
  const std::string& iss = iss_json->get_ref<const std::string&>();
  auto found = by_iss_.find(iss);
  if (found == by_iss_.end())
    return Refused(absl::StrCat("issuer ", Quote(iss), " is not trusted"));
  const TrustedIssuer& issuer = found->second;

  ASSIGN_OR_RETURN(std::vector<const Jwk*> candidates,
                   CandidateKeys(header, iss, issuer, key_type, alg));
  const absl::string_view signing_input(token.data(), parts[0].size() + 1 + parts[1].size());
  const Jwk* verified_by = nullptr;
  for (const Jwk* k : candidates) {
    ASSIGN_OR_RETURN(bool ok, VerifySignature(*k, signing_input, signature));
    if (ok) {
      verified_by = k;
      break;
    }
  }
  if (verified_by == nullptr) return Refused("signature does not verify");

  // Claims, now that they are known to come from the issuer.
  RETURN_IF_ERROR(CheckAudience(payload, issuer.audience));
  Identity id;
  RETURN_IF_ERROR(CheckTimes(payload, now, &id, valid_from));
  RETURN_IF_ERROR(ReadIdentity(payload, issuer, &id));
  id.issuer = issuer.name;
  id.key_id = verified_by->kid;
  id.algorithm = alg;
  return id;
}

absl::StatusOr<std::string> SignEs256(const std::string& private_key_pem, const std::string& kid,
                                      const nlohmann::json& claims) {
  return Sign(private_key_pem, kid, claims, kEs256);
}

absl::StatusOr<std::string> SignRs256(const std::string& private_key_pem, const std::string& kid,
                                      const nlohmann::json& claims) {
  return Sign(private_key_pem, kid, claims, kRs256);
}

absl::StatusOr<std::string> PublicJwk(const std::string& private_key_pem, const std::string& kid) {
  ASSIGN_OR_RETURN(Pkey key, LoadKeyPem(private_key_pem));
  Json jwk = Json::object();
  if (IsP256(key.get())) {
    ASSIGN_OR_RETURN(std::string x,
                     BnParam(key.get(), OSSL_PKEY_PARAM_EC_PUB_X, kP256CoordinateBytes));
    ASSIGN_OR_RETURN(std::string y,
                     BnParam(key.get(), OSSL_PKEY_PARAM_EC_PUB_Y, kP256CoordinateBytes));
    jwk["kty"] = "EC";
    jwk["crv"] = "P-256";
    jwk["x"] = EncodeBase64Url(x);
    jwk["y"] = EncodeBase64Url(y);
    jwk["alg"] = std::string(kEs256);
  } else if (EVP_PKEY_is_a(key.get(), "RSA")) {
    ASSIGN_OR_RETURN(std::string n, BnParam(key.get(), OSSL_PKEY_PARAM_RSA_N, 0));
    ASSIGN_OR_RETURN(std::string e, BnParam(key.get(), OSSL_PKEY_PARAM_RSA_E, 0));
    jwk["kty"] = "RSA";
    jwk["n"] = EncodeBase64Url(n);
    jwk["e"] = EncodeBase64Url(e);
    jwk["alg"] = std::string(kRs256);
  } else {
    return absl::InvalidArgumentError("only EC P-256 and RSA keys have a JWK here");
  }
  if (!kid.empty()) jwk["kid"] = kid;
  jwk["use"] = "sig";
  return Dump(jwk);
}

}  // namespace sluice::jwt
