#include "agent/net/worker_placement.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace sluice::agent::net {
namespace {

TEST(WorkerPlacement, ConnectionsGoToTheWorkerOnTheirArrivalCpu) {
  WorkerPlacement p(2, {4, 7});  // worker 0 pinned to CPU 4, worker 1 to CPU 7
  EXPECT_EQ(p.Pick(7), 1u);
  EXPECT_EQ(p.Pick(4), 0u);
  EXPECT_EQ(p.Pick(4), 0u);
  EXPECT_EQ(p.Pick(7), 1u);
  EXPECT_EQ(p.live(0), 2u);
  EXPECT_EQ(p.live(1), 2u);
}

TEST(WorkerPlacement, BalanceWinsOverTheArrivalCpu) {
  WorkerPlacement p(2, {0, 1});
  // Every connection arrives on CPU 0 (a single-threaded client): the workers take turns once
  // worker 0 is one session ahead.
  std::vector<size_t> picks;
  for (int i = 0; i < 8; ++i) picks.push_back(p.Pick(0));
  EXPECT_EQ(picks, (std::vector<size_t>{0, 0, 1, 0, 1, 0, 1, 0}));
  EXPECT_EQ(p.live(0), 5u);
  EXPECT_EQ(p.live(1), 3u);
  // Sessions on worker 1 end: its arrivals go there again.
  p.Release(1);
  p.Release(1);
  p.Release(1);
  EXPECT_EQ(p.Pick(1), 1u);
  EXPECT_EQ(p.Pick(0), 1u);  // worker 0 is 4 ahead: balance first
}

TEST(WorkerPlacement, UnknownOrUnpinnedCpusGoRoundRobinOverTheLeastBusy) {
  WorkerPlacement pinned(3, {0, 1, 2});
  EXPECT_EQ(pinned.Pick(-1), 0u);
  EXPECT_EQ(pinned.Pick(9), 1u);  // a CPU no worker is on (the NIC's queue elsewhere)
  EXPECT_EQ(pinned.Pick(-1), 2u);
  EXPECT_EQ(pinned.Pick(-1), 0u);
  pinned.Release(2);
  EXPECT_EQ(pinned.Pick(-1), 2u);  // the least busy, even out of turn

  WorkerPlacement floating(2, {});
  std::vector<size_t> picks;
  for (int cpu : {0, 0, 1, 1}) picks.push_back(floating.Pick(cpu));
  EXPECT_EQ(picks, (std::vector<size_t>{0, 1, 0, 1}));
}

TEST(WorkerPlacement, AllowedCpusListsThisProcessCpus) {
  std::vector<int> cpus = AllowedCpus();
  ASSERT_FALSE(cpus.empty());
  EXPECT_TRUE(std::is_sorted(cpus.begin(), cpus.end()));
  EXPECT_GE(cpus.front(), 0);
}

}  // namespace
}  // namespace sluice::agent::net
