#include "agent/session/limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "common/policy/validation.h"

namespace sluice::agent {
namespace {

using ::testing::HasSubstr;

constexpr char kIss[] = "https://idp.test";

v1::ConnectionLimits Limits(uint32_t total, uint32_t per_identity) {
  v1::ConnectionLimits l;
  l.set_max_sessions(total);
  l.set_max_sessions_per_identity(per_identity);
  return l;
}

TEST(SessionLimiter, RefusesTheCallerOverItsLimitAndNamesIt) {
  SessionLimiter limiter;
  v1::ConnectionLimits limits = Limits(5, 3);
  std::vector<SessionTicket> alice;
  for (int i = 0; i < 3; ++i) {
    auto t = limiter.Acquire("demo", kIss, "alice", limits);
    ASSERT_TRUE(t.ok()) << t.status();
    alice.push_back(*std::move(t));
  }
  auto refused = limiter.Acquire("demo", kIss, "alice", limits);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status()));
  EXPECT_EQ(
      refused.status().message(),
      "too many sessions for \"alice\" on connection \"demo\" (limit 3 per caller on this agent); "
      "close one and try again");
  // Another caller is not held back by alice's limit.
  auto bob = limiter.Acquire("demo", kIss, "bob", limits);
  EXPECT_TRUE(bob.ok());
  EXPECT_EQ(limiter.Sessions("demo"), 4u);
  EXPECT_EQ(limiter.SessionsOf("demo", kIss, "alice"), 3u);
  // Closing one lets alice in again.
  alice.pop_back();
  EXPECT_EQ(limiter.SessionsOf("demo", kIss, "alice"), 2u);
  EXPECT_TRUE(limiter.Acquire("demo", kIss, "alice", limits).ok());  // released at once
}

TEST(SessionLimiter, TheTotalHoldsAcrossCallers) {
  SessionLimiter limiter;
  v1::ConnectionLimits limits = Limits(5, 3);
  std::vector<SessionTicket> held;
  for (const char* who : {"a", "a", "a", "b", "b"}) {
    auto t = limiter.Acquire("demo", kIss, who, limits);
    ASSERT_TRUE(t.ok()) << who << ": " << t.status();
    held.push_back(*std::move(t));
  }
  auto refused = limiter.Acquire("demo", kIss, "c", limits);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(
      refused.status().message(),
      "too many sessions on connection \"demo\" (limit 5 for all callers together on this agent); "
      "try again later");
  // Other connections are counted apart.
  EXPECT_TRUE(limiter.Acquire("other", kIss, "c", limits).ok());
  held.erase(held.begin());
  EXPECT_TRUE(limiter.Acquire("demo", kIss, "c", limits).ok());
}

TEST(SessionLimiter, CallersAreIssuerAndSubject) {
  SessionLimiter limiter;
  v1::ConnectionLimits limits = Limits(10, 1);
  auto first = limiter.Acquire("demo", "https://a", "alice", limits);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(limiter.Acquire("demo", "https://a", "alice", limits).ok());
  // The same subject from another issuer is someone else.
  EXPECT_TRUE(limiter.Acquire("demo", "https://b", "alice", limits).ok());
  // No pair of issuer and subject stands for another (no separator to forge).
  auto ab = limiter.Acquire("demo", "x", "yz", limits);
  ASSERT_TRUE(ab.ok());
  EXPECT_TRUE(limiter.Acquire("demo", "xy", "z", limits).ok());
}

TEST(SessionLimiter, ZeroMeansTheDefaults) {
  EffectiveLimits d = ResolveLimits(v1::ConnectionLimits());
  EXPECT_EQ(d.max_sessions, policy::kDefaultMaxSessions);
  EXPECT_EQ(d.max_sessions_per_identity, policy::kDefaultMaxSessionsPerIdentity);
  EXPECT_EQ(d.max_sessions_per_identity, 20u);
  EXPECT_EQ(d.max_sessions, 90u);

  SessionLimiter limiter;
  std::vector<SessionTicket> held;
  for (uint32_t i = 0; i < policy::kDefaultMaxSessionsPerIdentity; ++i) {
    auto t = limiter.Acquire("demo", kIss, "alice", v1::ConnectionLimits());
    ASSERT_TRUE(t.ok()) << i << ": " << t.status();
    held.push_back(*std::move(t));
  }
  auto refused = limiter.Acquire("demo", kIss, "alice", v1::ConnectionLimits());
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("(limit 20 per caller on this agent)"));
  // With only one limit set, the other keeps its default.
  EXPECT_TRUE(limiter.Acquire("demo", kIss, "alice", Limits(0, 21)).ok());
  EXPECT_FALSE(limiter.Acquire("demo", kIss, "alice", Limits(30, 0)).ok());
}

TEST(SessionLimiter, ALowerLimitEndsNoSessionButHoldsTheNextLogin) {
  SessionLimiter limiter;
  std::vector<SessionTicket> held;
  for (int i = 0; i < 4; ++i)
    held.push_back(*limiter.Acquire("demo", kIss, "alice", Limits(10, 5)));
  EXPECT_FALSE(limiter.Acquire("demo", kIss, "alice", Limits(10, 2)).ok());
  EXPECT_EQ(limiter.SessionsOf("demo", kIss, "alice"), 4u);
  held.resize(1);
  EXPECT_TRUE(limiter.Acquire("demo", kIss, "alice", Limits(10, 2)).ok());
}

TEST(SessionLimiter, TicketsMoveAndReleaseOnce) {
  SessionLimiter limiter;
  v1::ConnectionLimits limits = Limits(2, 2);
  std::optional<SessionTicket> outer;
  {
    auto t = limiter.Acquire("demo", kIss, "alice", limits);
    ASSERT_TRUE(t.ok());
    SessionTicket moved = *std::move(t);
    EXPECT_TRUE(moved.held());
    outer.emplace(std::move(moved));
    EXPECT_FALSE(
        moved.held());  // NOLINT(bugprone-use-after-move): a moved-from ticket holds nothing
  }
  EXPECT_EQ(limiter.Sessions("demo"), 1u);
  // Move-assigning over a held ticket gives the old place back.
  SessionTicket second = *limiter.Acquire("demo", kIss, "alice", limits);
  EXPECT_EQ(limiter.Sessions("demo"), 2u);
  second = std::move(*outer);
  EXPECT_EQ(limiter.Sessions("demo"), 1u);
  second.Release();
  second.Release();
  EXPECT_FALSE(second.held());
  outer.reset();
  EXPECT_EQ(limiter.Sessions("demo"), 0u);
  SessionTicket empty;
  EXPECT_FALSE(empty.held());
}

TEST(SessionLimiter, WorkersShareOneCountAndNeverExceedIt) {
  // Sessions run on several event loops: threads acquiring and releasing at once never see more
  // than the limits, and every place comes back.
  SessionLimiter limiter;
  v1::ConnectionLimits limits = Limits(8, 3);
  constexpr int kThreads = 6;
  constexpr int kRounds = 2000;
  std::atomic<int> over{0};
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string who = t % 2 == 0 ? "alice" : "bob";  // three threads per caller
      std::vector<SessionTicket> mine;
      for (int i = 0; i < kRounds; ++i) {
        if (i % 3 == 2 && !mine.empty()) {
          mine.erase(mine.begin());
          continue;
        }
        auto ticket = limiter.Acquire("demo", kIss, who, limits);
        if (!ticket.ok()) continue;
        granted.fetch_add(1);
        if (limiter.Sessions("demo") > 8 || limiter.SessionsOf("demo", kIss, who) > 3)
          over.fetch_add(1);
        mine.push_back(*std::move(ticket));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(over.load(), 0);
  EXPECT_GT(granted.load(), 0);
  EXPECT_EQ(limiter.Sessions("demo"), 0u);
  EXPECT_EQ(limiter.SessionsOf("demo", kIss, "alice"), 0u);
}

}  // namespace
}  // namespace sluice::agent
