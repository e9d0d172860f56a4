// Cryptographic helpers built on OpenSSL 3. Nothing here is hand-rolled crypto: these are thin,
// checked wrappers around EVP.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice {

// `n` bytes from the OpenSSL CSPRNG.
std::string RandomBytes(size_t n);
// 2*n lowercase hex characters of random data.
std::string RandomHex(size_t n);
std::string HexEncode(absl::string_view bytes);
std::string Sha256(absl::string_view data);  // raw 32 bytes
std::string Sha256Hex(absl::string_view data);
// SHA-1, raw 20 bytes: only where a protocol requires it (MySQL's mysql_native_password).
std::string Sha1(absl::string_view data);
std::string HmacSha256(absl::string_view key, absl::string_view data);  // raw 32 bytes
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// AES-256-GCM with a random 96-bit nonce. The sealed form is
// "v1" || nonce(12) || ciphertext || tag(16); `aad` binds the ciphertext to its context (e.g. the
// resource kind and name), so a sealed value moved to another row fails to open.
inline constexpr size_t kAesKeyBytes = 32;
absl::StatusOr<std::string> AesGcmSeal(absl::string_view key, absl::string_view plaintext,
                                       absl::string_view aad);
// Fails with DataLoss when the value was altered, the aad differs or the key is wrong.
absl::StatusOr<std::string> AesGcmOpen(absl::string_view key, absl::string_view sealed,
                                       absl::string_view aad);

// Ed25519 signing keys (the agent's audit checkpoint key). Private keys are PKCS#8 PEM; public
// keys and signatures are raw (32 and 64 bytes).
// Loads the private key from `path`, or creates it with mode 0600 when the file does not exist.
// RSA encryption with OAEP padding (SHA-1, as MySQL's caching_sha2_password and sha256_password
// use it to send a password without TLS) under a PEM public key. InvalidArgument for a key that
// is not an RSA public key, or a plaintext too long for it.
absl::StatusOr<std::string> RsaOaepEncrypt(absl::string_view public_key_pem,
                                           absl::string_view plaintext);

absl::StatusOr<std::string> LoadOrCreateEd25519Key(const std::string& path, bool* created);
absl::StatusOr<std::string> Ed25519PublicKey(const std::string& private_pem);
absl::StatusOr<std::string> Ed25519Sign(const std::string& private_pem, absl::string_view message);
bool Ed25519Verify(absl::string_view public_key, absl::string_view message,
                   absl::string_view signature);

// Loads the 32-byte master key from `path` (64 hex characters), or creates it with mode 0600 when
// the file does not exist. `created` tells which happened.
absl::StatusOr<std::string> LoadOrCreateMasterKey(const std::string& path, bool* created);

}  // namespace sluice
