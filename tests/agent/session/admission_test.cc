#include "agent/session/admission.h"

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/policy/yaml_codec.h"
#include "common/tls.h"

namespace sluice::agent::session {
namespace {

using audit::RefusalKind;

constexpr int64_t kNow = 1767225600;  // 2026-01-01T00:00:00Z
constexpr char kIss[] = "https://idp.example.com";

absl::Time Now() { return absl::FromUnixSeconds(kNow); }

// An agent's policy: one issuer, two connections, a read rule for developers, a connection
// limit of one session per caller on "tight", a password that cannot be resolved on "lost".
class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto key = GenerateEcPrivateKeyPem();
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = *key;
    auto jwk = jwt::PublicJwk(key_, "k1");
    ASSERT_TRUE(jwk.ok()) << jwk.status();
    auto keys = jwt::ParseJwks(absl::StrCat(R"({"keys":[)", *jwk, "]}"));
    ASSERT_TRUE(keys.ok()) << keys.status();
    jwt::TrustedIssuer issuer;
    issuer.name = "corp";
    issuer.issuer = kIss;
    issuer.audience = "sluice";
    issuer.keys = *keys;
    auto verifier = jwt::Verifier::Create({issuer});
    ASSERT_TRUE(verifier.ok()) << verifier.status();

    auto parsed = policy::ParseYamlDocuments(R"yaml(
kind: Connection
name: demo
protocol: postgres
upstream: {host: db, port: 5432}
agents: {site: a}
credentials: {username: app, password: secret}
---
kind: Connection
name: tight
protocol: postgres
upstream: {host: db, port: 5432}
agents: {site: a}
credentials: {username: app, password: secret}
limits: {max_sessions_per_identity: 1}
---
kind: Connection
name: lost
protocol: postgres
upstream: {host: db, port: 5432}
agents: {site: a}
credentials: {username: app, password_from: "env:SLUICE_ADMISSION_TEST_UNSET"}
---
kind: Connection
name: shop
protocol: mysql
upstream: {host: db, port: 3306}
agents: {site: a}
credentials: {username: app, password: secret}
---
kind: AccessRule
name: developers-read
subjects: {groups: [developers]}
connections: {names: [demo, tight, lost, shop]}
access: read
)yaml");
    ASSERT_TRUE(parsed.errors.empty())
        << parsed.errors.front().field << ": " << parsed.errors.front().message;
    auto policy = std::make_shared<AgentPolicy>();
    for (const auto& r : parsed.resources) {
      if (r.has_connection()) *policy->snapshot.add_connections() = r.connection();
      if (r.has_access_rule()) *policy->snapshot.add_access_rules() = r.access_rule();
    }
    policy->verifier = std::make_shared<const jwt::Verifier>(*std::move(verifier));
    holder_.Set(std::move(policy));
  }

  std::string Token(const std::string& subject, std::vector<std::string> groups,
                    int64_t expires = kNow + 600) {
    nlohmann::json claims = {
        {"iss", kIss}, {"aud", "sluice"}, {"sub", subject}, {"groups", groups}, {"exp", expires}};
    auto token = jwt::SignEs256(key_, "k1", claims);
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : "";
  }

  Admission NewAdmission() {
    return Admission(&holder_, &limiter_, v1::PROTOCOL_POSTGRES, "postgres");
  }

  std::string key_;
  PolicyHolder holder_;
  SessionLimiter limiter_;
};

Refuse RefusedOf(const std::variant<Admitted, Refuse>& v) {
  EXPECT_TRUE(std::holds_alternative<Refuse>(v));
  return std::holds_alternative<Refuse>(v) ? std::get<Refuse>(v) : Refuse{};
}

TEST_F(AdmissionTest, ACallerWithAValidTokenAndARuleIsAdmittedWithTheCredentials) {
  Admission a = NewAdmission();
  ASSERT_FALSE(a.Open("demo").has_value());
  ASSERT_NE(a.connection(), nullptr);
  EXPECT_EQ(a.connection()->name(), "demo");
  auto admitted = a.Admit(Token("alice", {"developers"}), Now(), "127.0.0.1:5000");
  ASSERT_TRUE(std::holds_alternative<Admitted>(admitted)) << RefusedOf(admitted).message;
  const Admitted& ok = std::get<Admitted>(admitted);
  EXPECT_EQ(ok.identity.subject, "alice");
  EXPECT_EQ(ok.identity.issuer, "corp");
  EXPECT_EQ(ok.grant.access, v1::ACCESS_READ);
  EXPECT_EQ(ok.grant.rule, "developers-read");
  EXPECT_EQ(ok.credentials.username, "app");
  EXPECT_EQ(ok.credentials.password, "secret");
  EXPECT_TRUE(ok.ticket.held());
  EXPECT_EQ(limiter_.Sessions("demo"), 1u);
}

TEST_F(AdmissionTest, TransportAndAuditAreCheckedBeforeAnything) {
  EXPECT_FALSE(Admission::CheckTransport(/*tls=*/true, /*plaintext_allowed=*/false).has_value());
  EXPECT_FALSE(Admission::CheckTransport(false, true).has_value());
  auto tls = Admission::CheckTransport(false, false);
  ASSERT_TRUE(tls.has_value());
  EXPECT_EQ(tls->kind, RefusalKind::kTlsRequired);
  EXPECT_EQ(tls->message, "Sluice: this listener requires TLS");

  EXPECT_FALSE(Admission::CheckAudit(false).has_value());
  auto audit = Admission::CheckAudit(true);
  ASSERT_TRUE(audit.has_value());
  EXPECT_EQ(audit->kind, RefusalKind::kAuditUnavailable);
  EXPECT_TRUE(absl::StartsWith(audit->message, "Sluice: the agent cannot record audit events now"));
}

TEST_F(AdmissionTest, AnUnknownConnectionIsRefusedByName) {
  Admission a = NewAdmission();
  auto refused = a.Open("nope");
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->kind, RefusalKind::kUnknownConnection);
  EXPECT_EQ(refused->message, "Sluice: connection \"nope\" does not exist on this agent");
  // Another protocol's connection is not this adapter's.
  auto mysql = a.Open("shop");
  ASSERT_TRUE(mysql.has_value());
  EXPECT_EQ(mysql->kind, RefusalKind::kUnknownConnection);
  // No policy yet: nothing exists.
  PolicyHolder empty;
  Admission none(&empty, nullptr, v1::PROTOCOL_POSTGRES, "postgres");
  EXPECT_EQ(none.Open("demo")->kind, RefusalKind::kUnknownConnection);
}

TEST_F(AdmissionTest, ARejectedTokenSaysWhyAndNamesNoOne) {
  Admission a = NewAdmission();
  ASSERT_FALSE(a.Open("demo").has_value());
  Refuse expired = RefusedOf(a.Admit(Token("alice", {"developers"}, kNow - 3600), Now(), "peer"));
  EXPECT_EQ(expired.kind, RefusalKind::kTokenRejected);
  EXPECT_TRUE(absl::StartsWith(expired.message, "Sluice: token rejected: ")) << expired.message;
  EXPECT_FALSE(expired.detail.empty());
  EXPECT_EQ(expired.message, "Sluice: token rejected: " + expired.detail);
  EXPECT_TRUE(a.identity().subject.empty());
  EXPECT_EQ(RefusedOf(a.Admit("not-a-token", Now(), "peer")).kind, RefusalKind::kTokenRejected);
}

TEST_F(AdmissionTest, NoAccessRuleRefusesAVerifiedCaller) {
  Admission a = NewAdmission();
  ASSERT_FALSE(a.Open("demo").has_value());
  Refuse r = RefusedOf(a.Admit(Token("mallory", {"contractors"}), Now(), "peer"));
  EXPECT_EQ(r.kind, RefusalKind::kNoAccessRule);
  EXPECT_EQ(r.message, "Sluice: no access rule lets \"mallory\" use connection \"demo\"");
  EXPECT_EQ(a.identity().subject, "mallory");  // verified: the refusal says who it was
  EXPECT_EQ(limiter_.Sessions("demo"), 0u);
}

TEST_F(AdmissionTest, TheSessionLimitRefusesTheSessionTooMany) {
  Admission first = NewAdmission();
  ASSERT_FALSE(first.Open("tight").has_value());
  auto one = first.Admit(Token("alice", {"developers"}), Now(), "peer");
  ASSERT_TRUE(std::holds_alternative<Admitted>(one));
  Admission second = NewAdmission();
  ASSERT_FALSE(second.Open("tight").has_value());
  Refuse r = RefusedOf(second.Admit(Token("alice", {"developers"}), Now(), "peer"));
  EXPECT_EQ(r.kind, RefusalKind::kSessionLimit);
  EXPECT_TRUE(absl::StartsWith(r.message, "Sluice: too many sessions for \"alice\"")) << r.message;
  // The first session's ticket gives its place back.
  std::get<Admitted>(one).ticket.Release();
  Admission third = NewAdmission();
  ASSERT_FALSE(third.Open("tight").has_value());
  EXPECT_TRUE(
      std::holds_alternative<Admitted>(third.Admit(Token("alice", {"developers"}), Now(), "peer")));
}

TEST_F(AdmissionTest, CredentialsThatCannotBeResolvedRefuseWithoutSayingWhich) {
  Admission a = NewAdmission();
  ASSERT_FALSE(a.Open("lost").has_value());
  Refuse r = RefusedOf(a.Admit(Token("alice", {"developers"}), Now(), "peer"));
  EXPECT_EQ(r.kind, RefusalKind::kUpstreamUnavailable);
  EXPECT_EQ(r.message, "Sluice: the connection's password is not available on this agent");
  EXPECT_EQ(limiter_.Sessions("lost"), 0u);  // the ticket taken went back
}

}  // namespace
}  // namespace sluice::agent::session
