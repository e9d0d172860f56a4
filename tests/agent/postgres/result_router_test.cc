#include "agent/postgres/result_router.h"

#include <gtest/gtest.h>

#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres {

using wire::postgres::WireWriter;

namespace {

std::string BindPayload(const std::string& portal, const std::string& statement,
                        std::vector<int16_t> formats) {
  WireWriter w;
  w.CString(portal);
  w.CString(statement);
  w.Int16(0);
  w.Int16(1);
  w.Int32(3);
  w.Bytes("abc");
  w.Int16(static_cast<int16_t>(formats.size()));
  for (int16_t f : formats) w.Int16(f);
  return w.Take();
}

std::string DescribePayload(char target, const std::string& name) {
  return std::string(1, target) + name + '\0';
}

TEST(ResultRouter, ExecuteUsesTheStatementDescriptionWithTheBindFormats) {
  ResultRouter r;
  r.OnParse("s1");
  r.OnDescribe(DescribePayload('S', "s1"), true);
  r.OnSync();
  EXPECT_FALSE(r.OnDescription('T', "T-of-s1"));  // the client's own Describe: relayed
  r.OnReady();
  EXPECT_EQ(r.pending(), 0u);

  r.OnBind(BindPayload("", "s1", {1}), nullptr);
  EXPECT_FALSE(r.NeedsDescribe(""));  // the statement's description is known
  r.OnExecute("");
  r.OnSync();
  absl::string_view payload;
  const ResultFormats* formats = nullptr;
  ASSERT_TRUE(r.ExecuteDescription(&payload, &formats));
  EXPECT_EQ(payload, "T-of-s1");
  ASSERT_NE(formats, nullptr);
  EXPECT_EQ(*formats, (ResultFormats{1}));
  EXPECT_TRUE(r.Front()->store);
  r.OnCompletion();
  r.OnReady();
  EXPECT_EQ(r.pending(), 0u);
}

TEST(ResultRouter, AnUndescribedPortalIsDescribedByTheAgentAndTheAnswerIsSwallowed) {
  ResultRouter r;
  r.OnParse("");
  r.OnBind(BindPayload("", "", {}), nullptr);
  ASSERT_TRUE(r.NeedsDescribe(""));
  r.OnInjectedDescribe("");
  r.OnExecute("");
  // Pipelined: the same portal bound again before the first answer arrives.
  r.OnBind(BindPayload("", "", {}), nullptr);
  ASSERT_TRUE(r.NeedsDescribe(""));
  r.OnInjectedDescribe("");
  r.OnExecute("");
  r.OnSync();
  EXPECT_TRUE(r.OnDescription('T', "T1"));
  absl::string_view payload;
  const ResultFormats* formats = nullptr;
  ASSERT_TRUE(r.ExecuteDescription(&payload, &formats));
  EXPECT_EQ(payload, "T1");
  EXPECT_EQ(formats, nullptr);  // a portal's description carries its formats
  r.OnCompletion();
  EXPECT_TRUE(r.OnDescription('T', "T2"));
  ASSERT_TRUE(r.ExecuteDescription(&payload, &formats));
  EXPECT_EQ(payload, "T2");
  r.OnCompletion();
  r.OnReady();
  EXPECT_EQ(r.pending(), 0u);
}

TEST(ResultRouter, AnErrorSkipsToSyncLikeTheServer) {
  ResultRouter r;
  r.OnParse("");
  r.OnBind(BindPayload("", "", {}), nullptr);
  r.OnInjectedDescribe("");
  r.OnExecute("");
  r.OnInjectedDescribe("");
  r.OnExecute("");
  r.OnQuery("SELECT 1", false);  // skipped by the server too
  r.OnSync();
  r.OnQuery("SELECT 2", true);
  EXPECT_TRUE(r.OnDescription('T', "T"));
  r.OnError();
  ASSERT_NE(r.Front(), nullptr);
  EXPECT_EQ(r.Front()->kind, PendingResult::kSync);
  r.OnReady();
  ASSERT_NE(r.Front(), nullptr);
  EXPECT_EQ(r.Front()->kind, PendingResult::kQuery);
  EXPECT_EQ(r.Front()->sql, "SELECT 2");
  // A Query's own RowDescription is not a Describe's answer.
  EXPECT_FALSE(r.OnDescription('T', "T"));
  r.OnError();  // an error inside a Query: ReadyForQuery ends it
  EXPECT_EQ(r.pending(), 1u);
  r.OnReady();
  EXPECT_EQ(r.pending(), 0u);
}

TEST(ResultRouter, WithoutMaskingNothingIsStored) {
  ResultRouter r;
  r.OnParse("s");
  r.OnDescribe(DescribePayload('S', "s"), false);
  r.OnSync();
  EXPECT_FALSE(r.OnDescription('T', "T"));
  r.OnReady();
  r.OnBind(BindPayload("", "s", {}), nullptr);
  EXPECT_TRUE(r.NeedsDescribe(""));  // (only asked when masking is on)
  r.OnExecute("");
  r.OnSync();
  EXPECT_FALSE(r.Front()->store);
  absl::string_view payload;
  const ResultFormats* formats = nullptr;
  EXPECT_FALSE(r.ExecuteDescription(&payload, &formats));
}

}  // namespace
}  // namespace sluice::agent::postgres
