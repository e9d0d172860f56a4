#include "agent/memory_trimmer.h"

#include <malloc.h>

#include "common/log.h"

namespace sluice::agent {

MemoryTrimmer::MemoryTrimmer(Options options, bool start) : options_(options) {
  if (!start) return;
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(options_.interval)) TrimIfIdle();
  });
}

MemoryTrimmer::~MemoryTrimmer() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

bool MemoryTrimmer::TrimIfIdle() {
  struct mallinfo2 before = mallinfo2();
  if (before.fordblks < options_.min_free_bytes || before.fordblks <= before.uordblks) return false;
  size_t change = before.fordblks > trimmed_free_ ? before.fordblks - trimmed_free_
                                                  : trimmed_free_ - before.fordblks;
  if (trimmed_free_ != 0 && change < options_.min_free_bytes / 2) return false;
  malloc_trim(0);
  trimmed_free_ = before.fordblks;
  struct mallinfo2 after = mallinfo2();
  LogDebug("memory: returned free heap to the system (", before.fordblks >> 20, " MiB free, ",
           before.uordblks >> 20, " MiB in use; ", after.fordblks >> 20, " MiB free after)");
  return true;
}

}  // namespace sluice::agent
