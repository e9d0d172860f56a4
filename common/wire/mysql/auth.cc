#include "common/wire/mysql/auth.h"

#include <sodium.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::wire::mysql {
namespace {

constexpr size_t kEd25519ScrambleBytes = 32;

std::string Xor(std::string a, absl::string_view b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] = static_cast<char>(a[i] ^ b[i]);
  return a;
}

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

bool SodiumReady() {
  static const bool ready = sodium_init() >= 0;  // thread-safe, and idempotent in libsodium
  return ready;
}

// client_ed25519's key pair of a password; the secret half is wiped when it goes out of scope.
struct Ed25519PasswordKey {
  // SHA-512(password): the clamped first half is the secret scalar a, the second half the prefix
  // the nonce is hashed from (RFC 8032 5.1.5 takes the same halves of SHA-512(seed)).
  unsigned char az[crypto_hash_sha512_BYTES];
  unsigned char public_key[crypto_core_ed25519_BYTES];  // A = a·B

  ~Ed25519PasswordKey() { sodium_memzero(az, sizeof(az)); }
};

absl::Status DeriveEd25519PasswordKey(absl::string_view password, Ed25519PasswordKey* key) {
  if (!SodiumReady()) return absl::InternalError("libsodium could not be initialised");
  crypto_hash_sha512(key->az, Bytes(password), password.size());
  key->az[0] &= 248;
  key->az[31] &= 63;
  key->az[31] |= 64;
  // The clamped scalar has bit 254 set and is a multiple of 8 below 2^255, so never 0 mod L: this
  // fails only if libsodium does.
  if (crypto_scalarmult_ed25519_base_noclamp(key->public_key, key->az) != 0) {
    return absl::InternalError("the ed25519 public key of the password is the identity");
  }
  return absl::OkStatus();
}

// SHA-512(a || b || c) reduced mod L.
void HashToScalar(absl::string_view a, absl::string_view b, absl::string_view c,
                  unsigned char out[crypto_core_ed25519_SCALARBYTES]) {
  unsigned char digest[crypto_hash_sha512_BYTES];
  crypto_hash_sha512_state state;
  crypto_hash_sha512_init(&state);
  crypto_hash_sha512_update(&state, Bytes(a), a.size());
  crypto_hash_sha512_update(&state, Bytes(b), b.size());
  crypto_hash_sha512_update(&state, Bytes(c), c.size());
  crypto_hash_sha512_final(&state, digest);
  crypto_core_ed25519_scalar_reduce(out, digest);
  sodium_memzero(digest, sizeof(digest));
  sodium_memzero(&state, sizeof(state));
}

absl::string_view View(const unsigned char* p, size_t n) {
  return absl::string_view(reinterpret_cast<const char*>(p), n);
}

}  // namespace

std::string NativePasswordReply(absl::string_view password, absl::string_view scramble) {
  if (password.empty()) return "";
  const std::string stage1 = Sha1(password);
  const std::string stage2 = Sha1(stage1);
  return Xor(stage1, Sha1(absl::StrCat(scramble, stage2)));
}

std::string CachingSha2Reply(absl::string_view password, absl::string_view scramble) {
  if (password.empty()) return "";
  const std::string m1 = Sha256(password);
  const std::string m2 = Sha256(m1);
  return Xor(m1, Sha256(absl::StrCat(m2, scramble)));
}

absl::StatusOr<std::string> Sha2RsaReply(absl::string_view password, absl::string_view scramble,
                                         absl::string_view public_key_pem) {
  if (scramble.empty()) return absl::InvalidArgumentError("the server sent no scramble");
  std::string plain(password);
  plain.push_back('\0');
  for (size_t i = 0; i < plain.size(); ++i) {
    plain[i] = static_cast<char>(plain[i] ^ scramble[i % scramble.size()]);
  }
  return RsaOaepEncrypt(public_key_pem, plain);
}

absl::StatusOr<std::string> Ed25519PasswordReply(absl::string_view password,
                                                 absl::string_view scramble) {
  if (scramble.size() != kEd25519ScrambleBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the database sent a ", scramble.size(),
                                                   "-byte scramble for client_ed25519, not 32"));
  }
  Ed25519PasswordKey key;
  if (absl::Status st = DeriveEd25519PasswordKey(password, &key); !st.ok()) return st;

  // Secret scalars: r (the nonce), a reduced mod L, and k·a.
  struct Scalars {
    unsigned char r[crypto_core_ed25519_SCALARBYTES];
    unsigned char a_wide[crypto_core_ed25519_NONREDUCEDSCALARBYTES];
    unsigned char a[crypto_core_ed25519_SCALARBYTES];
    unsigned char ka[crypto_core_ed25519_SCALARBYTES];
    ~Scalars() { sodium_memzero(this, sizeof(*this)); }
  } secret;
  const absl::string_view public_key = View(key.public_key, sizeof(key.public_key));
  unsigned char big_r[crypto_core_ed25519_BYTES];
  unsigned char k[crypto_core_ed25519_SCALARBYTES];
  unsigned char s[crypto_core_ed25519_SCALARBYTES];

  HashToScalar(View(key.az + 32, 32), scramble, "", secret.r);         // r = H(prefix || M) mod L
  if (crypto_scalarmult_ed25519_base_noclamp(big_r, secret.r) != 0) {  // R = r·B
    return absl::InternalError("the ed25519 nonce of the scramble is 0 mod L");
  }
  HashToScalar(View(big_r, sizeof(big_r)), public_key, scramble, k);  // k = H(R || A || M) mod L
  // S = (k·a + r) mod L, with a first reduced mod L so that every operand is a canonical scalar.
  std::memset(secret.a_wide, 0, sizeof(secret.a_wide));
  std::memcpy(secret.a_wide, key.az, 32);
  crypto_core_ed25519_scalar_reduce(secret.a, secret.a_wide);
  crypto_core_ed25519_scalar_mul(secret.ka, k, secret.a);
  crypto_core_ed25519_scalar_add(s, secret.ka, secret.r);
  return absl::StrCat(View(big_r, sizeof(big_r)), View(s, sizeof(s)));
}

std::string Ed25519PasswordPublicKey(absl::string_view password) {
  Ed25519PasswordKey key;
  if (!DeriveEd25519PasswordKey(password, &key).ok()) return "";
  return std::string(View(key.public_key, sizeof(key.public_key)));
}

}  // namespace sluice::wire::mysql
