#include "controlplane/service/master_keys.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/crypto.h"
#include "common/policy/yaml_codec.h"
#include "controlplane/service/policy_manager.h"

namespace sluice::controlplane {
namespace {

using ::testing::HasSubstr;

constexpr char kConnection[] =
    "kind: Connection\nname: orders\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
    "credentials: {username: app, password: Tr0ub4dor-orders}\nagents: {vpc: a}\n";

class MasterKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/master_keys_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    store_ = *SqliteStore::Open(dir_ + "/sluice.db");
    old_ = RandomBytes(kAesKeyBytes);
    new_ = RandomBytes(kAesKeyBytes);
  }

  // What a start with `master` (and `previous`) gives, the policy loaded with it.
  absl::StatusOr<MasterKeys> Start(const std::string& master, const std::string& previous = "") {
    auto keys = OpenMasterKeys(store_.get(), master, previous);
    if (!keys.ok()) return keys.status();
    manager_ = std::make_unique<PolicyManager>(store_.get(), master, keys->masking_hash_key);
    absl::Status st = manager_->Load();
    if (!st.ok()) return st;
    return keys;
  }

  void ApplyConnection() {
    policy::ParsedDocuments p = policy::ParseYamlDocuments(kConnection);
    ASSERT_TRUE(p.errors.empty());
    v1::ApplyRequest req;
    *req.add_resources() = p.resources[0];
    v1::ApplyResponse resp;
    ASSERT_TRUE(manager_->Apply(req, "tester", &resp).ok());
  }

  std::string Password() const {
    return manager_->state()->connections.at(0).credentials().password();
  }

  std::string dir_, old_, new_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<PolicyManager> manager_;
};

TEST_F(MasterKeysTest, DerivedKeysAreKeptAsTheyWereDerived) {
  auto first = Start(old_);
  ASSERT_TRUE(first.ok()) << first.status();
  // A store that had none derives them from its master key as before: tokens do not change.
  EXPECT_EQ(first->masking_hash_key, HmacSha256(old_, "sluice masking hash key v1"));
  EXPECT_EQ(first->approval_link_key, HmacSha256(old_, "sluice approval links v1"));
  EXPECT_EQ(first->resealed, 0);
  auto again = Start(old_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->masking_hash_key, first->masking_hash_key);
}

TEST_F(MasterKeysTest, RotationSealsEverythingUnderTheNewKeyAndKeepsTokens) {
  auto before = Start(old_);
  ASSERT_TRUE(before.ok()) << before.status();
  ApplyConnection();

  auto rotated = Start(new_, old_);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->resealed, 3);  // the password and the two keys
  EXPECT_EQ(Password(), "Tr0ub4dor-orders");
  EXPECT_EQ(rotated->masking_hash_key, before->masking_hash_key);
  EXPECT_EQ(rotated->approval_link_key, before->approval_link_key);

  // Starting again with the previous key still given changes nothing more.
  auto again = Start(new_, old_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->resealed, 0);
  // The new key alone opens everything; the old one alone no longer does.
  auto alone = Start(new_);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(Password(), "Tr0ub4dor-orders");
  EXPECT_EQ(alone->masking_hash_key, before->masking_hash_key);
  auto old_alone = OpenMasterKeys(store_.get(), old_, "");
  EXPECT_EQ(old_alone.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(old_alone.status().message(), HasSubstr("Connection 'orders'"));
  EXPECT_THAT(old_alone.status().message(), HasSubstr("--previous-master-key-file"));
}

TEST_F(MasterKeysTest, AWrongPreviousKeyChangesNothing) {
  ASSERT_TRUE(Start(old_).ok());
  ApplyConnection();
  auto wrong = OpenMasterKeys(store_.get(), new_, RandomBytes(kAesKeyBytes));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(wrong.status().message(), HasSubstr("nothing was changed"));
  // The old key still opens all of it (the transaction was rolled back).
  auto old_again = Start(old_);
  ASSERT_TRUE(old_again.ok()) << old_again.status();
  EXPECT_EQ(old_again->resealed, 0);
  EXPECT_EQ(Password(), "Tr0ub4dor-orders");
}

TEST_F(MasterKeysTest, ThePreviousKeyMustDiffer) {
  auto same = OpenMasterKeys(store_.get(), old_, old_);
  EXPECT_EQ(same.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(same.status().message(), HasSubstr("same key"));
}

}  // namespace
}  // namespace sluice::controlplane
