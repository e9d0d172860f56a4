#include "common/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace sluice {
namespace {

constexpr absl::string_view kSealVersion = "v1";
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

const unsigned char* U(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  // RAND_bytes only fails when the CSPRNG cannot be seeded; nothing can run safely then.
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();
  }
  return out;
}

std::string HexEncode(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

std::string RandomHex(size_t n) { return HexEncode(RandomBytes(n)); }

std::string Sha1(absl::string_view data) {
  std::string out(20, '\0');
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 EVP_sha1(), nullptr) != 1) {
    std::abort();  // without memory or without the default provider
  }
  return out;
}

std::string Sha256(absl::string_view data) {
  // The audit chain hashes every event: the algorithm is fetched from the provider once (an
  // implicit fetch per call cost as much as the hash of a small event) and each thread reuses one
  // context.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  struct CtxDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, CtxDeleter> ctx(EVP_MD_CTX_new());
  std::string out(32, '\0');
  unsigned int len = 0;
  // Fails only without memory or without the default provider; nothing can be audited then.
  if (md == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len) != 1) {
    std::abort();
  }
  return out;
}

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string Sha256Hex(absl::string_view data) { return HexEncode(Sha256(data)); }

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<std::string> AesGcmSeal(absl::string_view key, absl::string_view plaintext,
                                       absl::string_view aad) {
  if (key.size() != kAesKeyBytes)
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  std::string nonce = RandomBytes(kNonceBytes);
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return absl::InternalError("EVP_CIPHER_CTX_new failed");
  std::string out;
  out.reserve(kSealVersion.size() + kNonceBytes + plaintext.size() + kTagBytes);
  out.append(kSealVersion.data(), kSealVersion.size());
  out.append(nonce);
  size_t ct_off = out.size();
  out.resize(ct_off + plaintext.size() + kTagBytes);
  auto* ct = reinterpret_cast<unsigned char*>(out.data() + ct_off);
  int len = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, U(key), U(nonce)) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), ct, &len, U(plaintext), static_cast<int>(plaintext.size())) !=
          1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  int fin = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), ct + len, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, ct + plaintext.size()) != 1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  return out;
}

absl::StatusOr<std::string> AesGcmOpen(absl::string_view key, absl::string_view sealed,
                                       absl::string_view aad) {
  if (key.size() != kAesKeyBytes)
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  if (sealed.size() < kSealVersion.size() + kNonceBytes + kTagBytes ||
      sealed.substr(0, kSealVersion.size()) != kSealVersion) {
    return absl::DataLossError("sealed value is malformed");
  }
  absl::string_view nonce = sealed.substr(kSealVersion.size(), kNonceBytes);
  absl::string_view body = sealed.substr(kSealVersion.size() + kNonceBytes);
  absl::string_view ct = body.substr(0, body.size() - kTagBytes);
  std::string tag(body.substr(body.size() - kTagBytes));
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return absl::InternalError("EVP_CIPHER_CTX_new failed");
  std::string out(ct.size(), '\0');
  int len = 0;
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, U(key), U(nonce)) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, U(ct),
                        static_cast<int>(ct.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) != 1) {
    return absl::DataLossError("AES-256-GCM decryption failed");
  }
  int fin = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &fin) !=
      1) {
    return absl::DataLossError(
        "sealed value failed authentication (altered, wrong key, or moved from another record)");
  }
  return out;
}

absl::StatusOr<std::string> LoadOrCreateMasterKey(const std::string& path, bool* created) {
  *created = false;
  if (!FileExists(path)) {
    std::string key = RandomBytes(kAesKeyBytes);
    RETURN_IF_ERROR(WriteFileAtomic(path, HexEncode(key) + "\n", 0600));
    *created = true;
    return key;
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4096));
  std::string hex(absl::StripAsciiWhitespace(text));
  if (hex.size() != 2 * kAesKeyBytes ||
      hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "master key file ", path, " must hold exactly 64 hex characters (a 32-byte key)"));
  }
  return absl::HexStringToBytes(hex);
}

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::StatusOr<Pkey> ReadEd25519(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  Pkey key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key || EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError("not an Ed25519 private key (PEM)");
  }
  return key;
}

}  // namespace

absl::StatusOr<std::string> RsaOaepEncrypt(absl::string_view public_key_pem,
                                           absl::string_view plaintext) {
  if (public_key_pem.size() > (64 << 10)) return absl::InvalidArgumentError("RSA key too long");
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(public_key_pem.data(), static_cast<int>(public_key_pem.size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (!key || EVP_PKEY_base_id(key.get()) != EVP_PKEY_RSA) {
    return absl::InvalidArgumentError("not an RSA public key in PEM form");
  }
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new(key.get(), nullptr), EVP_PKEY_CTX_free);
  size_t size = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(plaintext.data());
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) <= 0 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) <= 0 ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &size, in, plaintext.size()) <= 0) {
    return absl::InvalidArgumentError("RSA encryption cannot be set up with this key");
  }
  std::string out(size, '\0');
  if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &size, in,
                       plaintext.size()) <= 0) {
    return absl::InvalidArgumentError("the text is too long for RSA encryption with this key");
  }
  out.resize(size);
  return out;
}

absl::StatusOr<std::string> LoadOrCreateEd25519Key(const std::string& path, bool* created) {
  *created = false;
  if (auto existing = ReadFile(path, 16384); existing.ok()) {
    ASSIGN_OR_RETURN(Pkey key, ReadEd25519(*existing));
    return *existing;
  }
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return absl::InternalError("cannot create an Ed25519 key");
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return absl::InternalError("cannot encode the Ed25519 key");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<size_t>(len));
  RETURN_IF_ERROR(WriteFileAtomic(path, pem, 0600));
  *created = true;
  return pem;
}

absl::StatusOr<std::string> Ed25519PublicKey(const std::string& private_pem) {
  ASSIGN_OR_RETURN(Pkey key, ReadEd25519(private_pem));
  std::string out(32, '\0');
  size_t len = out.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(out.data()), &len) !=
          1 ||
      len != 32) {
    return absl::InternalError("cannot read the Ed25519 public key");
  }
  return out;
}

absl::StatusOr<std::string> Ed25519Sign(const std::string& private_pem, absl::string_view message) {
  ASSIGN_OR_RETURN(Pkey key, ReadEd25519(private_pem));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::string sig(64, '\0');
  size_t len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return absl::InternalError("Ed25519 signing failed");
  }
  sig.resize(len);
  return sig;
}

bool Ed25519Verify(absl::string_view public_key, absl::string_view message,
                   absl::string_view signature) {
  if (public_key.size() != 32 || signature.size() != 64) return false;
  Pkey key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(public_key.data()), 32));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!key || !ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1)
    return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

}  // namespace sluice
