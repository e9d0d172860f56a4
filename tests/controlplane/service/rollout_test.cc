// Staged rollouts: the store's rollout rows and the policy manager's served states (canary agents
// get the new version, the others the previous one; across a restart), the state machine (halt on
// a NACK, promote only when every canary runs the version or forced, abort restores the previous
// documents as a new version), and what `rollout status` says of each agent.
#include "controlplane/service/rollout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/policy/yaml_codec.h"
#include "controlplane/service/policy_manager.h"
#include "controlplane/snapshot/snapshot_builder.h"
#include "controlplane/store/sqlite_store.h"

namespace sluice::controlplane {
namespace {

constexpr char kMaskingKey[] = "masking-hash-key-of-32-bytes!!!!";

using ::testing::HasSubstr;

LiveAgentStatus Live(uint64_t desired, uint64_t applied, uint64_t checked) {
  LiveAgentStatus s;
  s.connected = true;
  s.desired_version = desired;
  s.applied_version = applied;
  s.checked_version = checked;
  return s;
}

constexpr char kPolicy[] =
    "kind: Connection\nname: orders-a\nprotocol: postgres\nupstream: {host: db-a, port: 5432}\n"
    "credentials: {username: app, password: secret-a-v1}\nagents: {vpc: a}\n---\n"
    "kind: Connection\nname: orders-b\nprotocol: postgres\nupstream: {host: db-b, port: 5432}\n"
    "credentials: {username: app, password: secret-b-v1}\nagents: {vpc: b}\n";

// Both connections change (a new password for a, a new port for b), and a webhook is created.
constexpr char kChange[] =
    "kind: Connection\nname: orders-a\nprotocol: postgres\nupstream: {host: db-a, port: 5432}\n"
    "credentials: {username: app, password: secret-a-v2}\nagents: {vpc: a}\n---\n"
    "kind: Connection\nname: orders-b\nprotocol: postgres\nupstream: {host: db-b, port: 6432}\n"
    "credentials: {username: app, password: secret-b-v1}\nagents: {vpc: b}\n---\n"
    "kind: Webhook\nname: pager\nurl: https://pager.example\n";

class RolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/rollout_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    key_ = RandomBytes(kAesKeyBytes);
    Reopen();
    Enroll("agent-a", {{"vpc", "a"}});
    Enroll("agent-b", {{"vpc", "b"}});
  }

  // A control plane's restart: the store and the policy manager are opened again.
  void Reopen() {
    manager_.reset();
    store_.reset();
    store_ = *SqliteStore::Open(dir_ + "/sluice.db");
    manager_ = std::make_unique<PolicyManager>(store_.get(), key_, kMaskingKey);
    ASSERT_TRUE(manager_->Load().ok());
  }

  void Enroll(const std::string& id, const Labels& labels) {
    ASSERT_TRUE(store_->CreateEnrollment({"token-" + id, id, labels, 0, 1LL << 50, {}}).ok());
    ASSERT_TRUE(store_->ConsumeEnrollment("token-" + id, "secret-hash", 1, {}).ok());
  }

  absl::Status Apply(const std::string& yaml, const Labels& canary = {},
                     v1::ApplyResponse* resp = nullptr) {
    policy::ParsedDocuments p = policy::ParseYamlDocuments(yaml);
    EXPECT_TRUE(p.errors.empty());
    v1::ApplyRequest req;
    req.set_source("test.yaml");
    for (auto& r : p.resources) *req.add_resources() = r;
    req.mutable_canary()->insert(canary.begin(), canary.end());
    v1::ApplyResponse local;
    return manager_->Apply(req, "tester", resp ? resp : &local);
  }

  // The snapshot an agent with `labels` is sent now.
  v1::PolicySnapshot SnapshotFor(const Labels& labels) {
    return BuildSnapshot(*manager_->state(), labels);
  }

  std::vector<std::string> AuditActions() {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<AuditRecord>> audit = store_->ListAudit(100);
    EXPECT_TRUE(audit.ok());
    if (!audit.ok()) return out;
    for (const AuditRecord& r : *audit) {
      if (absl::StartsWith(r.action, "Rollout.")) out.push_back(r.actor + " " + r.action);
    }
    return out;
  }

  std::string dir_, key_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<PolicyManager> manager_;
};

TEST_F(RolloutTest, CanaryAgentsGetTheNewVersionOthersKeepThePreviousAcrossARestart) {
  ASSERT_TRUE(Apply(kPolicy).ok());
  v1::ApplyResponse resp;
  ASSERT_TRUE(Apply(kChange, {{"vpc", "a"}}, &resp).ok());
  EXPECT_EQ(resp.version(), 2u);
  EXPECT_EQ(resp.rollout_id(), 1u);
  EXPECT_EQ(resp.canary_agents(), 1u);
  EXPECT_EQ(resp.updated(), 2);
  EXPECT_EQ(resp.created(), 1);

  for (int restart = 0; restart < 2; ++restart) {
    SCOPED_TRACE(restart ? "after a restart" : "before a restart");
    v1::PolicySnapshot a = SnapshotFor({{"vpc", "a"}, {"zone", "1"}});
    EXPECT_EQ(a.version(), 2u);
    EXPECT_EQ(a.connections(0).credentials().password(), "secret-a-v2");
    v1::PolicySnapshot b = SnapshotFor({{"vpc", "b"}});
    EXPECT_EQ(b.version(), 1u);
    EXPECT_EQ(b.connections(0).upstream().port(), 5432u);
    // The stored documents are the new version's.
    EXPECT_EQ(manager_->state()->version, 2u);
    EXPECT_TRUE(store_->GetResource("Webhook", "pager").ok());
    auto r = *store_->GetRollout(0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->state, kRolloutCanary);
    EXPECT_EQ(r->previous_version, 1u);
    EXPECT_EQ(r->selector, (Labels{{"vpc", "a"}}));
    Reopen();
  }

  // No other change while it is in progress, with or without a canary; an unchanged apply is fine.
  absl::Status st = Apply(kPolicy);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("rollout 1 of policy version 2 to the canary agents vpc=a is "
                                      "in progress (canary); promote it"));
  EXPECT_EQ(Apply(kPolicy, {{"vpc", "b"}}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Delete("webhook", "pager", "tester").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Apply(kChange).ok());
  EXPECT_EQ(*store_->PolicyVersion(), 2u);
}

TEST_F(RolloutTest, ACanaryNeedsAnEnrolledAgentAndValidLabels) {
  ASSERT_TRUE(Apply(kPolicy).ok());
  absl::Status st = Apply(kChange, {{"vpc", "z"}});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("no enrolled agent has the labels vpc=z"));
  EXPECT_EQ(Apply(kChange, {{"", "a"}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->PolicyVersion(), 1u);
  EXPECT_FALSE(store_->GetRollout(0)->has_value());
  // Nothing changes: no rollout.
  v1::ApplyResponse resp;
  ASSERT_TRUE(Apply(kPolicy, {{"vpc", "a"}}, &resp).ok());
  EXPECT_EQ(resp.rollout_id(), 0u);
}

TEST_F(RolloutTest, ANackHaltsItAndPromoteIsRefusedUnlessForced) {
  ASSERT_TRUE(Apply(kPolicy).ok());
  ASSERT_TRUE(Apply(kChange, {{"vpc", "a"}}).ok());
  // A NACK of another version, or by a version not in canary, halts nothing.
  EXPECT_FALSE(store_->HaltRollout(1, "agent-a", "old news", 10)->has_value());
  auto halted = store_->HaltRollout(2, "agent-a", "protocol mysql is not supported", 10);
  ASSERT_TRUE(halted.ok());
  ASSERT_TRUE(halted->has_value());
  EXPECT_EQ((*halted)->state, kRolloutHalted);
  EXPECT_EQ((*halted)->reason, "agent agent-a NACKed version 2: protocol mysql is not supported");
  EXPECT_EQ((*halted)->updated_by, "agent:agent-a");
  EXPECT_FALSE(store_->HaltRollout(2, "agent-a", "again", 11)->has_value());
  // Halted, the others still keep the previous version.
  Reopen();
  EXPECT_EQ(SnapshotFor({{"vpc", "b"}}).version(), 1u);
  EXPECT_EQ(SnapshotFor({{"vpc", "a"}}).version(), 2u);

  RolloutRecord r = **store_->GetRollout(0);
  auto agents = *store_->ListAgents();
  absl::Status st = CheckPromote(r, agents, {}, /*force=*/false);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("rollout 1 is halted (agent agent-a NACKed version 2"));
  EXPECT_TRUE(CheckPromote(r, agents, {}, /*force=*/true).ok());
  auto promoted = manager_->PromoteRollout(r.id, "tester", "forced");
  ASSERT_TRUE(promoted.ok());
  EXPECT_EQ(promoted->state, kRolloutPromoted);
  EXPECT_EQ(SnapshotFor({{"vpc", "b"}}).version(), 2u);
  EXPECT_EQ(SnapshotFor({{"vpc", "b"}}).connections(0).upstream().port(), 6432u);
  // Ended: nothing more to promote or abort, and changes go through again.
  EXPECT_EQ(CheckPromote(*promoted, agents, {}, true).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->AbortRollout(r.id, "tester", "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(manager_->Delete("webhook", "pager", "tester").ok());
  EXPECT_THAT(AuditActions(),
              ::testing::ElementsAre("tester Rollout.promote", "agent:agent-a Rollout.halt",
                                     "tester Rollout.start"));
}

TEST_F(RolloutTest, PromoteWaitsForEveryCanaryToRunTheVersion) {
  Enroll("agent-a2", {{"vpc", "a"}});
  ASSERT_TRUE(Apply(kPolicy).ok());
  ASSERT_TRUE(Apply(kChange, {{"vpc", "a"}}).ok());
  RolloutRecord r = **store_->GetRollout(0);
  // agent-a ACKed version 2 on its live stream; agent-a2 is connected and was sent it, no answer.
  std::map<std::string, LiveAgentStatus> live;
  live["agent-a"] = Live(2, 2, 2);
  live["agent-a2"] = Live(2, 1, 2);
  live["agent-b"] = Live(1, 1, 1);
  auto agents = *store_->ListAgents();
  absl::Status st = CheckPromote(r, agents, live, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("not every canary agent runs version 2: agent-a2 (pending)"));
  // An agent not connected counts by the ACK stored for it.
  live.erase("agent-a2");
  EXPECT_THAT(CheckPromote(r, agents, live, false).message(), HasSubstr("agent-a2 (offline)"));
  ASSERT_TRUE(store_->RecordAck("agent-a2", 2, 20).ok());
  agents = *store_->ListAgents();
  EXPECT_TRUE(CheckPromote(r, agents, live, false).ok());
  // A canary whose view the version does not change is never sent it: it runs it all the same.
  live["agent-a"] = Live(1, 1, 2);
  EXPECT_TRUE(CheckPromote(r, agents, live, false).ok());

  v1::RolloutStatus status = DescribeRollout(r, agents, live, 2);
  ASSERT_EQ(status.agents_size(), 3);
  EXPECT_EQ(status.rollout().state(), "canary");
  EXPECT_EQ(status.agents(0).agent_id(), "agent-a");
  EXPECT_TRUE(status.agents(0).canary());
  EXPECT_EQ(status.agents(0).answer(), "ack");
  EXPECT_EQ(status.agents(1).agent_id(), "agent-a2");
  EXPECT_FALSE(status.agents(1).connected());
  EXPECT_EQ(status.agents(1).answer(), "ack");
  EXPECT_EQ(status.agents(2).agent_id(), "agent-b");
  EXPECT_FALSE(status.agents(2).canary());
  EXPECT_EQ(status.agents(2).answer(), "held");
  EXPECT_EQ(status.agents(2).target_version(), 1u);

  ASSERT_TRUE(manager_->PromoteRollout(r.id, "tester", "").ok());
  r = **store_->GetRollout(0);
  status = DescribeRollout(r, agents, live, 2);
  EXPECT_EQ(status.agents(2).answer(), "pending");  // now it is meant to run version 2
  EXPECT_EQ(status.agents(2).target_version(), 2u);
}

TEST_F(RolloutTest, AbortStoresThePreviousDocumentsAgainAsANewVersion) {
  ASSERT_TRUE(Apply(kPolicy).ok());
  std::string before_a = SnapshotDigest(SnapshotFor({{"vpc", "a"}}));
  ASSERT_TRUE(Apply(kChange, {{"vpc", "a"}}).ok());
  ASSERT_TRUE(store_->RecordNack("agent-a", 2, "no", 5).ok());
  ASSERT_TRUE(store_->HaltRollout(2, "agent-a", "no", 5)->has_value());

  auto aborted = manager_->AbortRollout(1, "operator", "bad canary");
  ASSERT_TRUE(aborted.ok()) << aborted.status();
  EXPECT_EQ(aborted->state, kRolloutAborted);
  EXPECT_EQ(aborted->restored_version, 3u);
  EXPECT_EQ(aborted->reason, "bad canary");
  EXPECT_EQ(manager_->state()->version, 3u);
  EXPECT_EQ(manager_->state()->previous, nullptr);
  // Every agent is served version 3, whose content is version 1's.
  v1::PolicySnapshot a = SnapshotFor({{"vpc", "a"}});
  EXPECT_EQ(a.version(), 3u);
  EXPECT_EQ(a.connections(0).credentials().password(), "secret-a-v1");
  EXPECT_EQ(SnapshotDigest(a), before_a);
  EXPECT_EQ(SnapshotFor({{"vpc", "b"}}).connections(0).upstream().port(), 5432u);
  // The created webhook is gone; what did not change keeps its version; what did gets version 3.
  EXPECT_EQ(store_->GetResource("Webhook", "pager").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetResource("Connection", "orders-a")->resource.meta().version(), 3u);
  EXPECT_EQ(store_->GetResource("Connection", "orders-b")->resource.meta().version(), 3u);
  Reopen();
  EXPECT_EQ(SnapshotFor({{"vpc", "a"}}).connections(0).credentials().password(), "secret-a-v1");
  EXPECT_EQ(manager_->state()->previous, nullptr);

  // Each restored document is a change in the audit trail, with the rollout's records.
  std::vector<std::string> records;
  absl::StatusOr<std::vector<AuditRecord>> audit = store_->ListAudit(100);
  ASSERT_TRUE(audit.ok());
  for (const AuditRecord& r : *audit) {
    if (r.actor == "operator") records.push_back(absl::StrCat(r.action, " ", r.target));
  }
  EXPECT_THAT(records, ::testing::UnorderedElementsAre(
                           "Policy.update Connection/orders-a", "Policy.update Connection/orders-b",
                           "Policy.delete Webhook/pager", "Rollout.abort Rollout/1"));
  EXPECT_THAT(AuditActions(),
              ::testing::ElementsAre("operator Rollout.abort", "agent:agent-a Rollout.halt",
                                     "tester Rollout.start"));

  // The canary answers for the restored version.
  RolloutRecord r = **store_->GetRollout(0);
  std::map<std::string, LiveAgentStatus> live;
  live["agent-a"] = Live(3, 3, 3);
  v1::RolloutStatus status = DescribeRollout(r, *store_->ListAgents(), live, 3);
  EXPECT_EQ(status.agents(0).target_version(), 3u);
  EXPECT_EQ(status.agents(0).answer(), "ack");
  EXPECT_EQ(status.agents(1).answer(), "offline");  // agent-b: not connected, never ACKed 3

  // A new rollout can start; the first one's documents were dropped.
  v1::ApplyResponse resp;
  ASSERT_TRUE(Apply(kChange, {{"vpc", "b"}}, &resp).ok());
  EXPECT_EQ(resp.rollout_id(), 2u);
  EXPECT_TRUE(store_->RolloutPreviousResources(1)->empty());
  EXPECT_EQ(store_->RolloutPreviousResources(2)->size(), 2u);
}

TEST_F(RolloutTest, ANackedCanaryShowsItsError) {
  ASSERT_TRUE(Apply(kPolicy).ok());
  ASSERT_TRUE(Apply(kChange, {{"vpc", "a"}}).ok());
  ASSERT_TRUE(store_->RecordNack("agent-a", 2, "Connection x: protocol mysql", 5).ok());
  ASSERT_TRUE(store_->HaltRollout(2, "agent-a", "Connection x: protocol mysql", 5)->has_value());
  std::map<std::string, LiveAgentStatus> live;
  live["agent-a"] = Live(2, 1, 2);
  v1::RolloutStatus status =
      DescribeRollout(*store_->GetRollout(0), *store_->ListAgents(), live, 2);
  EXPECT_EQ(status.rollout().state(), "halted");
  EXPECT_EQ(status.agents(0).answer(), "nack");
  EXPECT_EQ(status.agents(0).nack_error(), "Connection x: protocol mysql");
  EXPECT_EQ(status.agents(0).applied_version(), 1u);
  EXPECT_EQ(status.agents(0).desired_version(), 2u);
}

TEST_F(RolloutTest, NoRolloutYet) {
  v1::RolloutStatus status = DescribeRollout(std::nullopt, *store_->ListAgents(), {}, 0);
  EXPECT_FALSE(status.has_rollout());
  EXPECT_EQ(status.agents_size(), 0);
}

}  // namespace
}  // namespace sluice::controlplane
