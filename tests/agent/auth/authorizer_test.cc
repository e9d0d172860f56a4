#include "agent/auth/authorizer.h"

#include <gtest/gtest.h>

#include "common/policy/yaml_codec.h"

namespace sluice::agent {
namespace {

v1::PolicySnapshot Snapshot() {
  auto p = policy::ParseYamlDocuments(R"yaml(
kind: Connection
name: orders
protocol: postgres
upstream: {host: db, port: 5432}
credentials: {username: app, password: pw}
agents: {vpc: a}
tags: {env: prod}
---
kind: Connection
name: scratch
protocol: postgres
upstream: {host: db, port: 5432}
credentials: {username: app, password: pw}
agents: {vpc: a}
tags: {env: dev}
---
kind: AccessRule
name: ci-read-prod
subjects: {groups: [ci]}
connections: {tags: {env: prod}}
access: read
---
kind: AccessRule
name: release-bot-writes
subjects: {subjects: [release-bot], issuers: [github]}
connections: {names: [orders]}
access: write
---
kind: AccessRule
name: dba-admin
subjects: {groups: [dba]}
connections: {tags: {env: prod}}
access: admin
)yaml");
  EXPECT_TRUE(p.errors.empty());
  v1::PolicySnapshot s;
  for (const auto& r : p.resources) {
    if (r.has_connection()) *s.add_connections() = r.connection();
    if (r.has_access_rule()) *s.add_access_rules() = r.access_rule();
  }
  return s;
}

TEST(Authorize, GroupRuleGrantsReadOnTaggedConnection) {
  auto s = Snapshot();
  auto g = Authorize(s, s.connections(0), {"github", "runner-17", {"ci"}});
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->access, v1::ACCESS_READ);
  EXPECT_EQ(g->rule, "ci-read-prod");
}

TEST(Authorize, NoMatchingRuleMeansNoAccess) {
  auto s = Snapshot();
  EXPECT_FALSE(Authorize(s, s.connections(1), {"github", "runner-17", {"ci"}}).has_value());
  EXPECT_FALSE(Authorize(s, s.connections(0), {"github", "someone", {"marketing"}}).has_value());
}

TEST(Authorize, IssuerRestrictionIsHonoured) {
  auto s = Snapshot();
  EXPECT_EQ(Authorize(s, s.connections(0), {"github", "release-bot", {}})->access,
            v1::ACCESS_WRITE);
  EXPECT_FALSE(Authorize(s, s.connections(0), {"okta", "release-bot", {}}).has_value());
}

TEST(Authorize, HighestLevelWins) {
  auto s = Snapshot();
  auto g = Authorize(s, s.connections(0), {"okta", "alice", {"ci", "dba"}});
  EXPECT_EQ(g->access, v1::ACCESS_ADMIN);
  EXPECT_EQ(g->rule, "dba-admin");
  EXPECT_EQ(AccessName(g->access), "admin");
}

}  // namespace
}  // namespace sluice::agent
