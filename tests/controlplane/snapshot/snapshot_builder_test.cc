#include "controlplane/snapshot/snapshot_builder.h"

#include <gtest/gtest.h>

#include "common/policy/yaml_codec.h"

namespace sluice::controlplane {
namespace {

constexpr char kPolicy[] = R"yaml(
kind: Connection
name: orders-a
protocol: postgres
upstream: {host: db-a, port: 5432}
credentials: {username: app, password: secret-a}
agents: {vpc: a}
tags: {env: prod}
---
kind: Connection
name: shop-b
protocol: mysql
upstream: {host: db-b, port: 3306}
credentials: {username: app, password: secret-b}
agents: {vpc: b, region: eu}
tags: {env: dev}
---
kind: Issuer
name: gha
issuer: https://token.actions.githubusercontent.com
audience: sluice
jwks: {inline: '{"keys": []}'}
---
kind: Issuer
name: okta
issuer: https://okta.example
audience: sluice
jwks: {inline: '{"keys": []}'}
---
kind: AccessRule
name: ci-prod
subjects: {groups: [ci], issuers: [gha]}
connections: {tags: {env: prod}}
access: read
---
kind: AccessRule
name: devs-shop
subjects: {groups: [devs]}
connections: {names: [shop-b]}
access: write
---
kind: ApprovalPolicy
name: dba
approvers: {groups: [dba]}
webhooks: [pager]
---
kind: Guardrail
name: prod-safety
connections: {tags: {env: prod}}
rules:
  - {match: ddl, action: require_approval, approval: dba}
---
kind: MaskingRule
name: pii
connections: {names: [shop-b]}
columns: ["*.email"]
strategy: redact
---
kind: Webhook
name: pager
url: https://pager.example
secret: hook-secret
)yaml";

PolicyState State() {
  policy::ParsedDocuments p = policy::ParseYamlDocuments(kPolicy);
  EXPECT_TRUE(p.errors.empty());
  PolicyState s;
  s.version = 7;
  s.masking_hash_key = std::string(32, 'k');
  for (const auto& r : p.resources) s.Add(r);
  return s;
}

std::vector<std::string> Names(const auto& list) {
  std::vector<std::string> out;
  for (const auto& x : list) out.push_back(x.name());
  return out;
}

TEST(SnapshotBuilder, AgentGetsOnlyItsConnectionsAndWhatAppliesToThem) {
  PolicyState s = State();
  v1::PolicySnapshot a = BuildSnapshot(s, {{"vpc", "a"}, {"zone", "1"}});
  EXPECT_EQ(a.version(), 7u);
  EXPECT_EQ(Names(a.connections()), std::vector<std::string>{"orders-a"});
  EXPECT_EQ(a.connections(0).credentials().password(), "secret-a");
  EXPECT_EQ(Names(a.access_rules()), std::vector<std::string>{"ci-prod"});
  EXPECT_EQ(Names(a.issuers()), std::vector<std::string>{"gha"});  // ci-prod accepts only gha
  EXPECT_EQ(Names(a.guardrails()), std::vector<std::string>{"prod-safety"});
  EXPECT_TRUE(a.masking_rules().empty());
  EXPECT_TRUE(a.masking_hash_key().empty());  // the key goes only with masking rules
  ASSERT_EQ(Names(a.approval_policies()), std::vector<std::string>{"dba"});
  EXPECT_TRUE(a.approval_policies(0).webhooks().empty());  // webhooks stay on the control plane
  EXPECT_EQ(a.SerializeAsString().find("secret-b"), std::string::npos);
  EXPECT_EQ(a.SerializeAsString().find("hook-secret"), std::string::npos);

  v1::PolicySnapshot b = BuildSnapshot(s, {{"vpc", "b"}, {"region", "eu"}});
  EXPECT_EQ(Names(b.connections()), std::vector<std::string>{"shop-b"});
  EXPECT_EQ(Names(b.access_rules()), std::vector<std::string>{"devs-shop"});
  EXPECT_EQ(Names(b.issuers()), (std::vector<std::string>{"gha", "okta"}));  // any issuer
  EXPECT_TRUE(b.guardrails().empty());
  EXPECT_EQ(Names(b.masking_rules()), std::vector<std::string>{"pii"});
  EXPECT_EQ(b.masking_hash_key(), std::string(32, 'k'));
  EXPECT_EQ(b.SerializeAsString().find("secret-a"), std::string::npos);
}

TEST(SnapshotBuilder, EveryLabelOfTheSelectorMustMatch) {
  PolicyState s = State();
  EXPECT_TRUE(BuildSnapshot(s, {{"vpc", "b"}}).connections().empty());  // region missing
  EXPECT_TRUE(BuildSnapshot(s, {{"vpc", "b"}, {"region", "us"}}).connections().empty());
  v1::PolicySnapshot none = BuildSnapshot(s, {});
  EXPECT_TRUE(none.connections().empty());
  EXPECT_TRUE(none.issuers().empty());
  EXPECT_TRUE(none.access_rules().empty());
}

TEST(SnapshotBuilder, DigestIgnoresVersionButSeesContent) {
  PolicyState s = State();
  v1::PolicySnapshot a1 = BuildSnapshot(s, {{"vpc", "a"}});
  s.version = 8;
  v1::PolicySnapshot a2 = BuildSnapshot(s, {{"vpc", "a"}});
  EXPECT_EQ(SnapshotDigest(a1), SnapshotDigest(a2));
  s.connections[0].mutable_credentials()->set_password("rotated");
  EXPECT_NE(SnapshotDigest(a1), SnapshotDigest(BuildSnapshot(s, {{"vpc", "a"}})));
  // A change to b's connection does not concern a.
  PolicyState s2 = State();
  s2.connections[1].mutable_upstream()->set_port(3307);
  EXPECT_EQ(SnapshotDigest(a1), SnapshotDigest(BuildSnapshot(s2, {{"vpc", "a"}})));
}

}  // namespace
}  // namespace sluice::controlplane
