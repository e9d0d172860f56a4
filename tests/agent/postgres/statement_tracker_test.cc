#include "agent/postgres/statement_tracker.h"

#include <gtest/gtest.h>

namespace sluice::agent::postgres {
namespace {

class TrackerTest : public ::testing::Test {
 protected:
  StatementTracker tracker_{[this](const StatementRecord& r) { records_.push_back(r); }};
  std::vector<StatementRecord> records_;
  absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(TrackerTest, SimpleMultiStatementQueryIsOneRecord) {
  tracker_.OnQuery("SELECT 1; SELECT * FROM t", t0_);
  tracker_.OnDataRow(10);
  tracker_.OnCommandComplete("SELECT 1", t0_ + absl::Milliseconds(1));
  tracker_.OnDataRow(20);
  tracker_.OnDataRow(20);
  tracker_.OnCommandComplete("SELECT 2", t0_ + absl::Milliseconds(2));
  EXPECT_TRUE(records_.empty());
  tracker_.OnReadyForQuery(t0_ + absl::Milliseconds(3));
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(*records_[0].text, "SELECT 1; SELECT * FROM t");
  EXPECT_EQ(records_[0].rows, 3);
  EXPECT_EQ(records_[0].row_bytes, 50);
  EXPECT_EQ(records_[0].tags, "SELECT 1;SELECT 2");
  EXPECT_EQ(records_[0].duration, absl::Milliseconds(3));
}

TEST_F(TrackerTest, SimpleQueryError) {
  tracker_.OnQuery("SELECT 1/0", t0_);
  tracker_.OnError("22012", "division by zero", t0_);
  tracker_.OnReadyForQuery(t0_);
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].sqlstate, "22012");
  EXPECT_EQ(records_[0].error, "division by zero");
}

TEST_F(TrackerTest, ExtendedPipelineWithNamedStatementAndError) {
  tracker_.OnParse("s1", "INSERT INTO t VALUES ($1)");
  tracker_.OnParse("", "SELECT $1::int");
  tracker_.OnBind("", "s1");
  tracker_.OnExecute("", t0_);
  tracker_.OnBind("", "");
  tracker_.OnExecute("", t0_);
  tracker_.OnBind("", "s1");
  tracker_.OnExecute("", t0_);
  tracker_.OnCommandComplete("INSERT 0 1", t0_);
  tracker_.OnError("22P02", "invalid input syntax for type integer", t0_);
  tracker_.OnReadyForQuery(t0_);
  ASSERT_EQ(records_.size(), 3u);
  EXPECT_EQ(*records_[0].text, "INSERT INTO t VALUES ($1)");
  EXPECT_EQ(records_[0].rows, 1);
  EXPECT_EQ(*records_[1].text, "SELECT $1::int");
  EXPECT_EQ(records_[1].sqlstate, "22P02");
  EXPECT_EQ(*records_[2].text, "INSERT INTO t VALUES ($1)");
  EXPECT_EQ(records_[2].error, "not executed: an earlier statement in the pipeline failed");
  // The named statement outlives the batch; Close forgets it.
  tracker_.OnBind("p", "s1");
  tracker_.OnExecute("p", t0_);
  tracker_.OnPortalSuspended(t0_);
  ASSERT_EQ(records_.size(), 4u);
  EXPECT_TRUE(records_[3].suspended);
  tracker_.OnCloseStatement("s1");
  tracker_.OnBind("q", "s1");
  tracker_.OnExecute("q", t0_);
  tracker_.OnCommandComplete("SELECT 0", t0_);
  EXPECT_EQ(*records_[4].text, "");
}

}  // namespace
}  // namespace sluice::agent::postgres
