#include "agent/mysql/kill_registry.h"

#include <gtest/gtest.h>

namespace sluice::agent::mysql {
namespace {

KillTarget Target(const char* connection, const char* subject, uint32_t thread = 7) {
  KillTarget t;
  t.connection = connection;
  t.issuer = "https://idp.test";
  t.subject = subject;
  t.upstream_thread = thread;
  return t;
}

TEST(KillRegistryTest, LooksUpRegisteredSessionsUntilTheyEnd) {
  KillRegistry r;
  r.Register(1, Target("demo", "ada", 42));
  ASSERT_TRUE(r.Lookup(1).has_value());
  EXPECT_EQ(r.Lookup(1)->upstream_thread, 42u);
  EXPECT_FALSE(r.Lookup(2).has_value());
  r.Unregister(1);
  EXPECT_FALSE(r.Lookup(1).has_value());
}

TEST(KillRegistryTest, OnlyConnectionOfTheCallersSessions) {
  KillRegistry r;
  EXPECT_EQ(r.OnlyConnectionOf("https://idp.test", "ada"), std::nullopt);
  r.Register(1, Target("demo", "ada"));
  r.Register(2, Target("demo", "ada"));
  r.Register(3, Target("other", "bob"));
  EXPECT_EQ(r.OnlyConnectionOf("https://idp.test", "ada"), "demo");
  EXPECT_EQ(r.OnlyConnectionOf("https://idp.test", "bob"), "other");
  // Another issuer's subject of the same name is someone else.
  EXPECT_EQ(r.OnlyConnectionOf("https://elsewhere.test", "ada"), std::nullopt);
  // Sessions on two Connections: none is the one.
  r.Register(4, Target("other", "ada"));
  EXPECT_EQ(r.OnlyConnectionOf("https://idp.test", "ada"), std::nullopt);
  r.Unregister(4);
  EXPECT_EQ(r.OnlyConnectionOf("https://idp.test", "ada"), "demo");
}

TEST(ParseKillTest, TheFormsClientsSend) {
  auto q = ParseKill("KILL QUERY 12", LexMode());
  ASSERT_TRUE(q.has_value());
  EXPECT_TRUE(q->query_only);
  EXPECT_EQ(q->id, 12u);
  auto c = ParseKill("kill 12;", LexMode());
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->query_only);
  auto hard = ParseKill("KILL HARD CONNECTION 3", LexMode());
  ASSERT_TRUE(hard.has_value());
  EXPECT_FALSE(hard->query_only);
  EXPECT_EQ(hard->id, 3u);
}

TEST(ParseKillTest, OtherFormsAreNotMapped) {
  for (const char* sql : {"KILL QUERY ID 12", "KILL USER app", "KILL 1 + 1", "KILL QUERY",
                          "KILL 99999999999", "SELECT 1"}) {
    EXPECT_FALSE(ParseKill(sql, LexMode()).has_value()) << sql;
  }
}

}  // namespace
}  // namespace sluice::agent::mysql
