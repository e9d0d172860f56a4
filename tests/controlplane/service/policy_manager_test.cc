#include "controlplane/service/policy_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/policy/yaml_codec.h"
#include "controlplane/store/sqlite_store.h"

namespace sluice::controlplane {
namespace {

constexpr char kMaskingKey[] = "masking-hash-key-of-32-bytes!!!!";

using ::testing::HasSubstr;

class PolicyManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/policy_manager_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    store_ = *SqliteStore::Open(dir_ + "/sluice.db");
    key_ = RandomBytes(kAesKeyBytes);
    manager_ = std::make_unique<PolicyManager>(store_.get(), key_, kMaskingKey);
    ASSERT_TRUE(manager_->Load().ok());
  }

  absl::Status Apply(const std::string& yaml, v1::ApplyResponse* resp = nullptr) {
    policy::ParsedDocuments p = policy::ParseYamlDocuments(yaml);
    EXPECT_TRUE(p.errors.empty()) << p.errors[0].ToString("");
    v1::ApplyRequest req;
    req.set_source("test.yaml");
    for (auto& r : p.resources) *req.add_resources() = r;
    v1::ApplyResponse local;
    return manager_->Apply(req, "tester", resp ? resp : &local);
  }

  // Every byte stored in the resources table, for at-rest checks.
  std::string RawResourceBytes() {
    sqlite3* db;
    sqlite3_open((dir_ + "/sluice.db").c_str(), &db);
    sqlite3_stmt* s;
    sqlite3_prepare_v2(db, "SELECT spec, sealed_secret FROM resources", -1, &s, nullptr);
    std::string all;
    while (sqlite3_step(s) == SQLITE_ROW) {
      for (int c = 0; c < 2; ++c) {
        const char* p = static_cast<const char*>(sqlite3_column_blob(s, c));
        if (p) all.append(p, static_cast<size_t>(sqlite3_column_bytes(s, c)));
      }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return all;
  }

  std::string dir_, key_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<PolicyManager> manager_;
};

constexpr char kConnection[] =
    "kind: Connection\nname: orders\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
    "credentials: {username: app, password: Tr0ub4dor-orders}\nagents: {vpc: a}\n";

TEST_F(PolicyManagerTest, SecretsAreEncryptedAtRestAndRedactedOnRead) {
  ASSERT_TRUE(Apply(kConnection).ok());
  EXPECT_EQ(RawResourceBytes().find("Tr0ub4dor"), std::string::npos);
  auto got = manager_->Get("connection", "orders");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->connection().credentials().password(), "(redacted)");
  auto listed = manager_->List("");
  EXPECT_EQ(listed->resources(0).connection().credentials().password(), "(redacted)");
  // The state that snapshots are cut from holds the real secret.
  EXPECT_EQ(manager_->state()->connections[0].credentials().password(), "Tr0ub4dor-orders");

  // A new manager with the same key reads it back; with another key it refuses to start.
  PolicyManager again(store_.get(), key_, kMaskingKey);
  ASSERT_TRUE(again.Load().ok());
  EXPECT_EQ(again.state()->connections[0].credentials().password(), "Tr0ub4dor-orders");
  PolicyManager wrong(store_.get(), RandomBytes(kAesKeyBytes), kMaskingKey);
  absl::Status st = wrong.Load();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(st.message(), HasSubstr("--master-key-file"));
}

TEST_F(PolicyManagerTest, ApplyingTheRedactedMarkerKeepsTheStoredSecret) {
  ASSERT_TRUE(Apply(kConnection).ok());
  std::string yaml = policy::ResourceToYaml(*manager_->Get("Connection", "orders"));
  v1::ApplyResponse resp;
  ASSERT_TRUE(Apply(yaml, &resp).ok());
  EXPECT_EQ(resp.unchanged(), 1);
  EXPECT_EQ(resp.version(), 1u);
  EXPECT_EQ(manager_->state()->connections[0].credentials().password(), "Tr0ub4dor-orders");
}

TEST_F(PolicyManagerTest, OneBadDocumentChangesNothing) {
  ASSERT_TRUE(Apply(kConnection).ok());
  std::string batch = std::string(
      "kind: Webhook\nname: pager\nurl: https://pager\n---\n"
      "kind: Connection\nname: orders\nprotocol: postgres\nupstream: {host: other, port: 5432}\n"
      "credentials: {username: app, password: new}\nagents: {vpc: a}\n---\n"
      "kind: Guardrail\nname: g\nconnections: {names: [orders]}\nrules:\n"
      "  - {match: ddl, action: require_approval, approval: missing-policy}\n");
  v1::ApplyResponse resp;
  absl::Status st = Apply(batch, &resp);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("test.yaml: document 3 (Guardrail g): rules[0].approval: "
                                      "ApprovalPolicy 'missing-policy' does not exist"));
  ASSERT_EQ(resp.errors_size(), 1);
  EXPECT_EQ(resp.errors(0).index(), 2);
  EXPECT_EQ(*store_->PolicyVersion(), 1u);
  EXPECT_EQ(store_->GetResource("Webhook", "pager").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->state()->connections[0].upstream().host(), "db");
}

TEST_F(PolicyManagerTest, OnlyRealChangesBumpTheVersion) {
  v1::ApplyResponse resp;
  ASSERT_TRUE(Apply(kConnection, &resp).ok());
  EXPECT_EQ(resp.created(), 1);
  ASSERT_TRUE(Apply(kConnection, &resp).ok());
  EXPECT_EQ(resp.unchanged(), 1);
  EXPECT_EQ(resp.version(), 1u);
  std::string changed(kConnection);
  changed.replace(changed.find("port: 5432"), 10, "port: 6432");
  ASSERT_TRUE(Apply(changed, &resp).ok());
  EXPECT_EQ(resp.updated(), 1);
  EXPECT_EQ(resp.version(), 2u);
  EXPECT_EQ(manager_->state()->version, 2u);
}

TEST_F(PolicyManagerTest, ReferencedResourcesCannotBeDeleted) {
  ASSERT_TRUE(
      Apply("kind: Webhook\nname: pager\nurl: https://pager\nsecret: hmac-key\n---\n"
            "kind: ApprovalPolicy\nname: dba\napprovers: {groups: [dba]}\nwebhooks: [pager]\n---\n"
            "kind: Guardrail\nname: g\nconnections: {names: [orders]}\nrules:\n"
            "  - {match: ddl, action: require_approval, approval: dba}\n")
          .ok());
  auto st = manager_->Delete("approval_policy", "dba", "tester");
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.status().message(), HasSubstr("used by Guardrail 'g'"));
  EXPECT_EQ(manager_->Delete("webhook", "pager", "tester").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(manager_->Delete("guardrail", "g", "tester").ok());
  ASSERT_TRUE(manager_->Delete("approval_policy", "dba", "tester").ok());
  auto v = manager_->Delete("webhook", "pager", "tester");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 4u);
  EXPECT_EQ(manager_->Delete("webhook", "pager", "tester").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PolicyManagerTest, EachStoredChangeIsAnAuditRecord) {
  ASSERT_TRUE(Apply(kConnection).ok());
  ASSERT_TRUE(Apply(kConnection).ok());  // unchanged: no record
  std::string changed(kConnection);
  changed.replace(changed.find("port: 5432"), 10, "port: 6432");
  ASSERT_TRUE(Apply(changed).ok());
  ASSERT_TRUE(manager_->Delete("connections", "orders", "remover").ok());
  auto audit = store_->ListAudit(10);
  ASSERT_TRUE(audit.ok());
  std::vector<std::string> records;
  for (const AuditRecord& r : *audit) {
    records.push_back(absl::StrCat(r.actor, " ", r.action, " ", r.target, " ", r.detail));
  }
  EXPECT_THAT(records,
              ::testing::ElementsAre("remover Policy.delete Connection/orders policy version 3",
                                     "tester Policy.update Connection/orders policy version 2",
                                     "tester Policy.create Connection/orders policy version 1"));
}

TEST_F(PolicyManagerTest, RedactedMarkerWithoutAStoredSecretIsAnError) {
  std::string yaml(kConnection);
  yaml.replace(yaml.find("Tr0ub4dor-orders"), 16, "\"(redacted)\"");
  absl::Status st = Apply(yaml);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(),
              HasSubstr("credentials.password: is \"(redacted)\" but no secret is stored"));
}

}  // namespace
}  // namespace sluice::controlplane
