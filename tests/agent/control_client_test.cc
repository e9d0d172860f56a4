#include "agent/control_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/files.h"
#include "common/policy/yaml_codec.h"

namespace sluice::agent {
namespace {

using ::testing::HasSubstr;

v1::PolicySnapshot Snapshot(uint64_t version, const std::string& protocol) {
  policy::ParsedDocuments p = policy::ParseYamlDocuments(
      "kind: Connection\nname: db\nprotocol: " + protocol +
      "\nupstream: {host: 127.0.0.1, port: 5432}\ncredentials: {username: u, password: pw-123}\n"
      "agents: {vpc: a}\n");
  EXPECT_TRUE(p.errors.empty());
  v1::PolicySnapshot s;
  s.set_version(version);
  *s.add_connections() = p.resources[0].connection();
  return s;
}

class ControlClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/control_client_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    opts_.data_dir = dir_;
    opts_.capabilities = {"postgres"};
  }
  std::string dir_;
  ControlClientOptions opts_;
  PolicyHolder holder_;
};

TEST_F(ControlClientTest, ValidSnapshotIsAppliedAndPersistedPrivately) {
  ControlClient client(opts_, &holder_);
  EXPECT_TRUE(client.Apply(Snapshot(3, "postgres"), "control-plane").ok());
  ASSERT_NE(holder_.Get(), nullptr);
  EXPECT_EQ(holder_.Get()->snapshot.version(), 3u);
  std::string path = dir_ + "/snapshot.json";
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_THAT(*ReadFile(path), HasSubstr("pw-123"));

  // A fresh agent starts from it.
  PolicyHolder again;
  ControlClient restarted(opts_, &again);
  EXPECT_EQ(restarted.LoadFromDisk(), 3u);
  EXPECT_EQ(again.Get()->snapshot.connections(0).name(), "db");
  EXPECT_THAT(restarted.StatusJson(), HasSubstr("\"snapshot_source\": \"disk\""));
}

TEST_F(ControlClientTest, RejectedSnapshotKeepsThePreviousOne) {
  ControlClient client(opts_, &holder_);
  ASSERT_TRUE(client.Apply(Snapshot(3, "postgres"), "control-plane").ok());
  std::string reason(client.Apply(Snapshot(4, "mysql"), "control-plane").message());
  EXPECT_THAT(reason,
              HasSubstr("protocol mysql is not supported by this agent (it serves: postgres)"));
  EXPECT_EQ(holder_.Get()->snapshot.version(), 3u);
  EXPECT_THAT(*ReadFile(dir_ + "/snapshot.json"), ::testing::Not(HasSubstr("PROTOCOL_MYSQL")));
  EXPECT_THAT(client.StatusJson(), HasSubstr("\"last_nack_version\": 4"));
}

TEST_F(ControlClientTest, CorruptSnapshotOnDiskIsNotEnforced) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/snapshot.json", "{not json", 0600).ok());
  ControlClient client(opts_, &holder_);
  EXPECT_EQ(client.LoadFromDisk(), 0u);
  EXPECT_EQ(holder_.Get(), nullptr);
}

TEST_F(ControlClientTest, SnapshotOnDiskThatNoLongerFitsIsNotEnforced) {
  {
    ControlClientOptions wide = opts_;
    wide.capabilities = {"postgres", "mysql"};
    ControlClient client(wide, &holder_);
    ASSERT_TRUE(client.Apply(Snapshot(5, "mysql"), "control-plane").ok());
  }
  PolicyHolder narrow_holder;
  ControlClient narrow(opts_, &narrow_holder);  // restarted with --protocols postgres
  EXPECT_EQ(narrow.LoadFromDisk(), 0u);
  EXPECT_EQ(narrow_holder.Get(), nullptr);
}

}  // namespace
}  // namespace sluice::agent
