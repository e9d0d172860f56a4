// The replies are checked the way a server checks them: from what it stores (SHA1(SHA1(pw)), or
// SHA256(SHA256(pw))) and the scramble it sent, it recovers the client's first stage and hashes it
// again. A reply for another password or another scramble does not pass.
#include "common/wire/mysql/auth.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace sluice::wire::mysql
