#include "agent/postgres/fifo.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace sluice::agent::postgres {
namespace {

TEST(Fifo, FirstInFirstOutWithNodesReused) {
  Fifo<std::string> q;
  EXPECT_TRUE(q.empty());
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 40; ++i) q.push_back("entry " + std::to_string(i));
    EXPECT_EQ(q.size(), 40u);
    EXPECT_EQ(q.back(), "entry 39");
    for (int i = 0; i < 40; ++i) {
      ASSERT_EQ(q.front(), "entry " + std::to_string(i));
      q.pop_front();
    }
    EXPECT_TRUE(q.empty());
  }
}

TEST(Fifo, PoppedEntriesReleaseWhatTheyHeldAndReferencesStayValid) {
  Fifo<std::shared_ptr<int>> q;
  auto held = std::make_shared<int>(7);
  q.push_back(held);
  int* first = q.front().get();
  std::shared_ptr<int>& ref = q.front();
  for (int i = 0; i < 100; ++i)
    q.push_back(std::make_shared<int>(i));  // more pushes than spare nodes
  EXPECT_EQ(ref.get(), first);              // still the same entry
  EXPECT_EQ(held.use_count(), 2);
  q.pop_front();
  EXPECT_EQ(held.use_count(), 1);  // reset when popped, not when its node is reused
  EXPECT_EQ(*q.front(), 0);
}

}  // namespace
}  // namespace sluice::agent::postgres
