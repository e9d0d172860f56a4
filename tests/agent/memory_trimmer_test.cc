#include "agent/memory_trimmer.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <memory>
#include <vector>

namespace sluice::agent {
namespace {

// Small blocks the optimizer cannot elide (each pointer escapes).
[[maybe_unused]] void Allocate(std::vector<std::unique_ptr<char[]>>* blocks, int count) {
  for (int i = 0; i < count; ++i) {
    blocks->emplace_back(new char[1000]);
    char* p = blocks->back().get();
    asm volatile("" : : "g"(p) : "memory");
  }
}

TEST(MemoryTrimmer, ReturnsFreeHeapOnceWhenMostOfItIsFree) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator is not glibc's";
#else
  MemoryTrimmer trimmer(MemoryTrimmer::Options{absl::Seconds(60), 8 << 20}, /*start=*/false);
  trimmer.TrimIfIdle();  // whatever the process held before
  // 48 MiB in small blocks (kept in the arena when freed, unlike large ones that are mapped
  // apart), freed but for one block at the end that keeps the heap's top from shrinking by itself.
  std::vector<std::unique_ptr<char[]>> blocks;
  Allocate(&blocks, 48 * 1024);
  std::vector<std::unique_ptr<char[]>> pin;
  Allocate(&pin, 1);
  blocks.clear();
  struct mallinfo2 m = mallinfo2();
  EXPECT_TRUE(trimmer.TrimIfIdle()) << "free " << m.fordblks << " in use " << m.uordblks;
  EXPECT_FALSE(trimmer.TrimIfIdle());  // nothing changed since
#endif
}

TEST(MemoryTrimmer, LeavesAHeapInUseAlone) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator is not glibc's";
#else
  MemoryTrimmer trimmer(MemoryTrimmer::Options{absl::Seconds(60), 8 << 20}, /*start=*/false);
  trimmer.TrimIfIdle();
  std::vector<std::unique_ptr<char[]>> blocks;
  Allocate(&blocks, 48 * 1024);
  EXPECT_FALSE(trimmer.TrimIfIdle());  // all of it in use
#endif
}

}  // namespace
}  // namespace sluice::agent
