// Gives memory back to the system once a load has passed. After many concurrent sessions end,
// glibc's malloc keeps the freed memory in its arenas (measured: an agent at 29 MiB idle stayed at
// 170 MiB after 400 sessions closed, and malloc_trim brought it to 39 MiB; a second load of the
// same size grew it to the same 170 MiB again: retention, not a leak). A thread looks every
// `interval` at how much the allocator holds free, and when that is over `min_free_bytes` and
// more than what is in use, returns it (malloc_trim). Under steady load the free part is small
// next to what is in use, so it does nothing there.
#pragma once

#include <cstddef>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace sluice::agent {

class MemoryTrimmer {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(5);
    size_t min_free_bytes = 16 << 20;
  };
  // `start`: run the thread (tests call TrimIfIdle themselves).
  explicit MemoryTrimmer(Options options, bool start = true);
  ~MemoryTrimmer();  // stops the thread
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

  // One look, as the thread does it: whether memory was returned. Free memory returned once is
  // not returned again (malloc keeps counting it as free) until the free amount has changed by
  // at least half of `min_free_bytes`.
  bool TrimIfIdle();

 private:
  Options options_;
  size_t trimmed_free_ = 0;  // the free amount at the last trim (only the thread touches it)
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace sluice::agent
