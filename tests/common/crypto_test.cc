#include "common/crypto.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/files.h"

namespace sluice {
namespace {

TEST(AesGcm, RoundTrip) {
  std::string key = RandomBytes(kAesKeyBytes);
  auto sealed = AesGcmSeal(key, "s3cret password", "Connection/orders");
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->find("s3cret"), std::string::npos);
  auto opened = AesGcmOpen(key, *sealed, "Connection/orders");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "s3cret password");
}

TEST(AesGcm, SameInputSealsDifferently) {
  std::string key = RandomBytes(kAesKeyBytes);
  EXPECT_NE(*AesGcmSeal(key, "x", "a"), *AesGcmSeal(key, "x", "a"));
}

TEST(AesGcm, EveryFlippedByteIsDetected) {
  std::string key = RandomBytes(kAesKeyBytes);
  std::string sealed = *AesGcmSeal(key, "top secret", "aad");
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string tampered = sealed;
    tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
    auto opened = AesGcmOpen(key, tampered, "aad");
    EXPECT_FALSE(opened.ok()) << "byte " << i;
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
  }
}

TEST(AesGcm, WrongAadOrKeyOrTruncationFails) {
  std::string key = RandomBytes(kAesKeyBytes);
  std::string sealed = *AesGcmSeal(key, "v", "Connection/a");
  EXPECT_FALSE(AesGcmOpen(key, sealed, "Connection/b").ok());
  EXPECT_FALSE(AesGcmOpen(RandomBytes(kAesKeyBytes), sealed, "Connection/a").ok());
  EXPECT_FALSE(AesGcmOpen(key, sealed.substr(0, sealed.size() - 1), "Connection/a").ok());
  EXPECT_FALSE(AesGcmOpen(key, "", "Connection/a").ok());
  EXPECT_EQ(AesGcmSeal("short", "v", "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MasterKey, CreatedWithMode0600ThenLoaded) {
  std::string dir = ::testing::TempDir() + "/masterkey_test";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(EnsureDir(dir).ok());
  std::string path = dir + "/master.key";
  bool created = false;
  auto key = LoadOrCreateMasterKey(path, &created);
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(created);
  EXPECT_EQ(key->size(), kAesKeyBytes);
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto again = LoadOrCreateMasterKey(path, &created);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(*again, *key);

  ASSERT_TRUE(WriteFileAtomic(path, "not hex at all", 0600).ok());
  auto bad = LoadOrCreateMasterKey(path, &created);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("64 hex characters"), std::string::npos);
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

TEST(Ed25519, SignsAndVerifiesAndTheKeyIsKept) {
  std::string path = ::testing::TempDir() + "/ed25519_test_key.pem";
  std::remove(path.c_str());
  bool created = false;
  auto pem = LoadOrCreateEd25519Key(path, &created);
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_TRUE(created);
  auto again = LoadOrCreateEd25519Key(path, &created);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(*again, *pem);
  auto pub = Ed25519PublicKey(*pem);
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->size(), 32u);
  auto sig = Ed25519Sign(*pem, "checkpoint 42");
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(sig->size(), 64u);
  EXPECT_TRUE(Ed25519Verify(*pub, "checkpoint 42", *sig));
  EXPECT_FALSE(Ed25519Verify(*pub, "checkpoint 43", *sig));
  std::string bad = *sig;
  bad[0] ^= 1;
  EXPECT_FALSE(Ed25519Verify(*pub, "checkpoint 42", bad));
  std::string other_path = path + ".other";
  std::remove(other_path.c_str());
  auto other = LoadOrCreateEd25519Key(other_path, &created);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(Ed25519Verify(*Ed25519PublicKey(*other), "checkpoint 42", *sig));
  EXPECT_FALSE(Ed25519PublicKey("not a key").ok());
}

}  // namespace
}  // namespace sluice
