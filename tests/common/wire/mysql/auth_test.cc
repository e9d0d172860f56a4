// The replies are checked the way a server checks them: from what it stores (SHA1(SHA1(pw)), or
// SHA256(SHA256(pw))) and the scramble it sent, it recovers the client's first stage and hashes it
// again. A reply for another password or another scramble does not pass.
#include "common/wire/mysql/auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>

#include "absl/strings/str_cat.h"
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

}  // namespace
}  // namespace sluice::wire::mysql
