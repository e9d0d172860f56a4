#include "controlplane/approvals/desk.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "controlplane/store/sqlite_store.h"

namespace sluice::controlplane {
namespace {

// A live agent stream that keeps what it is sent.
class FakeStream : public AgentStreamHandle {
 public:
  const std::string& agent_id() const override { return id_; }
  const Labels& labels() const override { return labels_; }
  void Send(v1::ControlMessage m) override { sent.push_back(std::move(m)); }
  void Close(const std::string&) override {}
  std::vector<v1::ControlMessage> sent;

 private:
  std::string id_ = "agent-a";
  Labels labels_ = {{"vpc", "a"}};
};

class DeskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // ctest runs the tests of this binary in parallel: one directory each.
    std::string dir = ::testing::TempDir() + "/desk_test_" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    store_ = *SqliteStore::Open(dir + "/sluice.db");
    v1::ApprovalPolicy p;
    p.set_name("dba");
    p.mutable_approvers()->add_groups("dba");
    p.set_min_approvals(2);
    p.mutable_timeout()->set_seconds(60);
    state_.approval_policies.push_back(p);
    hub_.SetState(std::make_shared<PolicyState>(state_));
    hub_.Register(&stream_);
    stream_.sent.clear();  // the first snapshot
    desk_ = std::make_unique<ApprovalDesk>(store_.get(), &hub_, nullptr, std::string(32, 'k'),
                                           "http://cp:7080/");
  }

  uint64_t Request(const std::string& subject = "ci-bot") {
    v1::ApprovalRequest r;
    r.set_request_id("s1-1");
    r.set_subject(subject);
    r.set_issuer("idp");
    r.set_statement("UPDATE items SET n = 0");
    r.set_approval_policy("dba");
    r.set_rule("update_without_where");
    auto reg = desk_->Register("agent-a", r, state_, 1000);
    EXPECT_EQ(reg.error(), "");
    EXPECT_EQ(reg.expires_unix_ms(), 61000);
    return reg.approval_id();
  }

  std::unique_ptr<SqliteStore> store_;
  PolicyState state_;
  AgentHub hub_;
  FakeStream stream_;
  std::unique_ptr<ApprovalDesk> desk_;
};

Approver Who(const std::string& subject, std::vector<std::string> groups = {"dba"}) {
  return Approver{subject, "idp", std::move(groups), ""};
}

TEST_F(DeskTest, TwoDifferentApproversReleaseAndTheAgentIsTold) {
  uint64_t id = Request();
  auto a = desk_->Decide(id, Who("dora"), true, "ok", state_, 2000);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->status(), "pending");
  EXPECT_TRUE(stream_.sent.empty());
  EXPECT_EQ(desk_->Decide(id, Who("dora"), true, "", state_, 2100).status().message(),
            "dora (idp) has already decided on request 1");
  a = desk_->Decide(id, Who("erin"), true, "", state_, 2200);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->status(), "approved");
  ASSERT_EQ(stream_.sent.size(), 1u);
  const auto& d = stream_.sent[0].approval_decision();
  EXPECT_EQ(d.request_id(), "s1-1");
  EXPECT_TRUE(d.approved());
  EXPECT_EQ(std::vector<std::string>(d.approvers().begin(), d.approvers().end()),
            (std::vector<std::string>{"dora (idp)", "erin (idp)"}));
  EXPECT_EQ(desk_->Decide(id, Who("finn"), false, "", state_, 2300).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(DeskTest, RequestersNonApproversAndExpiredRequestsAreRefused) {
  uint64_t id = Request("dora");
  EXPECT_EQ(desk_->Decide(id, Who("dora"), true, "", state_, 2000).status().code(),
            absl::StatusCode::kPermissionDenied);
  // The refusal is its own audit record (separation-of-duties evidence).
  auto records = store_->ListAudit(1);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].action, "Approval.refuse_self");
  EXPECT_EQ((*records)[0].actor, "dora (idp)");
  EXPECT_EQ((*records)[0].target, absl::StrCat("Approval/", id));
  auto st = desk_->Decide(id, Who("mallory", {"ci"}), true, "", state_, 2000).status();
  EXPECT_EQ(st.message(),
            "mallory (idp) is not an approver of ApprovalPolicy 'dba' (approvers: groups [dba])");
  // A deny by one approver decides at once, with the reason.
  auto a = desk_->Decide(id, Who("erin"), false, "not now", state_, 3000);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status(), "denied");
  EXPECT_EQ(a->reason(), "erin (idp): not now");
  EXPECT_FALSE(stream_.sent.back().approval_decision().approved());
  // Expiry.
  uint64_t late = Request();
  desk_->ExpireDue(61000);
  auto r = store_->GetApproval(late);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->approval.status(), "expired");
  EXPECT_EQ(r->approval.reason(), "no decision within 60 s");
  EXPECT_EQ(stream_.sent.back().approval_decision().reason(), "no decision within 60 s");
}

TEST_F(DeskTest, UnknownPoliciesAndOversizedRequestsAreRefused) {
  v1::ApprovalRequest r;
  r.set_request_id("x");
  r.set_approval_policy("nope");
  EXPECT_EQ(desk_->Register("agent-a", r, state_, 1).error(),
            "ApprovalPolicy 'nope' does not exist");
  r.set_approval_policy("dba");
  r.set_statement(std::string(70000, 'x'));
  EXPECT_EQ(desk_->Register("agent-a", r, state_, 1).error(), "statement longer than 64 KiB");
}

TEST_F(DeskTest, CallbackLinksAreSignedAndBound) {
  uint64_t id = Request();
  std::string link = desk_->Link(id, true, "pager", 61000);
  EXPECT_EQ(link.rfind("http://cp:7080/approvals/1/approve?webhook=pager&exp=61000&sig=", 0), 0u)
      << link;
  std::string sig = link.substr(link.find("sig=") + 4);
  EXPECT_TRUE(desk_->CheckLink(id, true, "pager", 61000, sig, 2000).ok());
  EXPECT_FALSE(desk_->CheckLink(id, false, "pager", 61000, sig, 2000).ok());  // the other decision
  EXPECT_FALSE(desk_->CheckLink(id + 1, true, "pager", 61000, sig, 2000).ok());
  EXPECT_FALSE(desk_->CheckLink(id, true, "pager", 62000, sig, 2000).ok());  // a later expiry
  EXPECT_EQ(desk_->CheckLink(id, true, "pager", 61000, sig, 61000).message(),
            "this link has expired");
  Approver link_user;
  link_user.link_webhook = "pager";
  auto a = desk_->Decide(id, link_user, true, "", state_, 3000);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->votes(0).approver(), "link:pager");
  EXPECT_EQ(desk_->Decide(id, link_user, true, "", state_, 3001).status().message(),
            "link:pager has already decided on request 1");
}

TEST(Webhooks, SignatureIsHmacOfTimestampAndBody) {
  // HMAC-SHA256("key", "1700000000.{}"), computed independently with Python's hmac module.
  EXPECT_EQ(
      WebhookSignature("key", 1700000000, "{}"),
      "v1=" + std::string("9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"));
}

}  // namespace
}  // namespace sluice::controlplane
