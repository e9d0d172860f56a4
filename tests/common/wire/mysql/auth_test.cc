// The replies are checked the way a server checks them: from what it stores (SHA1(SHA1(pw)), or
// SHA256(SHA256(pw))) and the scramble it sent, it recovers the client's first stage and hashes it
// again. A reply for another password or another scramble does not pass. client_ed25519's reply
// is checked as the server checks it: a standard Ed25519 signature under the stored public key.
#include "common/wire/mysql/auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/crypto.h"

namespace sluice::wire::mysql {
namespace {

std::string Xor(std::string a, absl::string_view b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] = static_cast<char>(a[i] ^ b[i]);
  return a;
}

bool NativeServerAccepts(absl::string_view stored, absl::string_view scramble,
                         absl::string_view reply) {
  const std::string stage1 = Xor(std::string(reply), Sha1(absl::StrCat(scramble, stored)));
  return reply.size() == 20 && Sha1(stage1) == stored;
}

bool Sha2ServerAccepts(absl::string_view stored, absl::string_view scramble,
                       absl::string_view reply) {
  const std::string m1 = Xor(std::string(reply), Sha256(absl::StrCat(stored, scramble)));
  return reply.size() == 32 && Sha256(m1) == stored;
}

TEST(MysqlAuth, NativePasswordReplyPassesTheServersCheck) {
  const std::string scramble = "0123456789abcdefghij";
  const std::string stored = Sha1(Sha1("app-secret"));
  EXPECT_EQ(HexEncode(Sha1("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");  // FIPS 180 vector
  EXPECT_TRUE(NativeServerAccepts(stored, scramble, NativePasswordReply("app-secret", scramble)));
  EXPECT_FALSE(NativeServerAccepts(stored, scramble, NativePasswordReply("app-secreT", scramble)));
  EXPECT_FALSE(NativeServerAccepts(stored, scramble,
                                   NativePasswordReply("app-secret", "another scramble..")));
  EXPECT_EQ(NativePasswordReply("", scramble), "");
}

TEST(MysqlAuth, CachingSha2ReplyPassesTheServersCheck) {
  const std::string scramble = "0123456789abcdefghij";
  const std::string stored = Sha256(Sha256("app-secret"));
  EXPECT_TRUE(Sha2ServerAccepts(stored, scramble, CachingSha2Reply("app-secret", scramble)));
  EXPECT_FALSE(Sha2ServerAccepts(stored, scramble, CachingSha2Reply("app-secreT", scramble)));
  EXPECT_FALSE(
      Sha2ServerAccepts(stored, scramble, CachingSha2Reply("app-secret", "another scramble..")));
  EXPECT_EQ(CachingSha2Reply("", scramble), "");
}

// The server's side of full authentication without TLS: decrypt with its private key, undo the
// scramble, and compare with the password it knows.
TEST(MysqlAuth, Sha2RsaReplyIsWhatTheServerDecrypts) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_RSA_gen(2048), EVP_PKEY_free);
  ASSERT_TRUE(key);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  ASSERT_EQ(PEM_write_bio_PUBKEY(bio.get(), key.get()), 1);
  char* pem_data = nullptr;
  const long pem_size = BIO_get_mem_data(bio.get(), &pem_data);
  const std::string pem(pem_data, static_cast<size_t>(pem_size));
  const std::string scramble = "0123456789abcdefghij";

  auto reply = Sha2RsaReply("app-secret-longer-than-the-scramble", scramble, pem);
  ASSERT_TRUE(reply.ok()) << reply.status();
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new(key.get(), nullptr), EVP_PKEY_CTX_free);
  ASSERT_EQ(EVP_PKEY_decrypt_init(ctx.get()), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING), 1);
  std::string plain(512, '\0');
  size_t size = plain.size();
  ASSERT_EQ(EVP_PKEY_decrypt(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &size,
                             reinterpret_cast<const unsigned char*>(reply->data()), reply->size()),
            1);
  plain.resize(size);
  for (size_t i = 0; i < plain.size(); ++i) plain[i] ^= scramble[i % scramble.size()];
  EXPECT_EQ(plain, std::string("app-secret-longer-than-the-scramble\0", 36));

  EXPECT_FALSE(Sha2RsaReply("pw", scramble, "not a key").ok());
  EXPECT_FALSE(Sha2RsaReply(std::string(300, 'x'), scramble, pem).ok());  // too long for 2048 bits
}

// What MariaDB stores for an ed25519 user: base64 of the public key, without padding.
std::string StoredEd25519(absl::string_view password) {
  std::string b64 = absl::Base64Escape(Ed25519PasswordPublicKey(password));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return b64;
}

bool Ed25519ServerAccepts(absl::string_view public_key, absl::string_view scramble,
                          absl::string_view reply) {
  return public_key.size() == crypto_sign_ed25519_PUBLICKEYBYTES &&
         reply.size() == crypto_sign_ed25519_BYTES &&
         crypto_sign_ed25519_verify_detached(
             reinterpret_cast<const unsigned char*>(reply.data()),
             reinterpret_cast<const unsigned char*>(scramble.data()), scramble.size(),
             reinterpret_cast<const unsigned char*>(public_key.data())) == 0;
}

// MariaDB 10.11.19's own answers (`SELECT ed25519_password(pw)`, and the authentication_string of
// a user created IDENTIFIED VIA ed25519 USING PASSWORD(pw)), taken once from the server.
TEST(MysqlAuth, Ed25519PublicKeyIsWhatMariaDbStores) {
  EXPECT_EQ(StoredEd25519("secret"), "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY");
  EXPECT_EQ(StoredEd25519("foo"), "vubFBzIrapbfHct1/J72dnUryz5VS7lA6XHH8sIx4TI");
  EXPECT_EQ(StoredEd25519(""), "4LH+dBF+G5W2CKTyId8xR3SyDqZoQjUNUVNxx8aWbG4");
  EXPECT_EQ(StoredEd25519("a much longer password of more than thirty-two bytes, with "
                          "\xc3\xbc"
                          "n\xc3\xaf"
                          "code"),
            "ueiVKsPgeeqqIRpHmwKW9hhtPCIm5pUNb0Nv6ufwShg");
}

TEST(MysqlAuth, Ed25519ReplyIsASignatureUnderThePasswordsKey) {
  const std::string scramble("0123456789abcdefghijklmnopqrstu\0", 32);  // the 0 is part of it
  ASSERT_EQ(scramble.size(), 32u);
  const std::string key = Ed25519PasswordPublicKey("app_password");
  ASSERT_EQ(key.size(), 32u);

  auto reply = Ed25519PasswordReply("app_password", scramble);
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->size(), 64u);
  EXPECT_TRUE(Ed25519ServerAccepts(key, scramble, *reply));
  EXPECT_TRUE(Ed25519Verify(key, scramble, *reply));  // OpenSSL agrees with libsodium
  // Deterministic, as Ed25519 is: the same password and scramble sign the same.
  EXPECT_EQ(*Ed25519PasswordReply("app_password", scramble), *reply);

  // Another password signs under another key; another scramble's signature does not fit this one.
  auto wrong = Ed25519PasswordReply("app_passworD", scramble);
  ASSERT_TRUE(wrong.ok());
  EXPECT_FALSE(Ed25519ServerAccepts(key, scramble, *wrong));
  std::string other_scramble = scramble;
  other_scramble[0] = 'X';
  auto other = Ed25519PasswordReply("app_password", other_scramble);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(Ed25519ServerAccepts(key, scramble, *other));
  EXPECT_TRUE(Ed25519ServerAccepts(key, other_scramble, *other));
  std::string flipped = *reply;
  flipped[40] = static_cast<char>(flipped[40] ^ 1);
  EXPECT_FALSE(Ed25519ServerAccepts(key, scramble, flipped));

  // Passwords of any length, the empty one included, hash to a key of their own.
  for (const std::string& password : {std::string(), std::string(1, 'x'), std::string(200, 'y')}) {
    auto r = Ed25519PasswordReply(password, scramble);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(Ed25519ServerAccepts(Ed25519PasswordPublicKey(password), scramble, *r));
    EXPECT_FALSE(Ed25519ServerAccepts(key, scramble, *r));
  }
}

TEST(MysqlAuth, Ed25519ReplyNeedsA32ByteScramble) {
  for (size_t size : {0, 20, 31, 33}) {
    auto r = Ed25519PasswordReply("app_password", std::string(size, 's'));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << size;
  }
}

}  // namespace
}  // namespace sluice::wire::mysql
