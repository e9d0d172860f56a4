#include "agent/test_faults.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace sluice::agent::test_faults {
namespace {
std::atomic<bool> armed{false};
std::atomic<int64_t> answers_left{0};
}  // namespace

void KillAfterAnswers(uint64_t n) {
  answers_left.store(static_cast<int64_t>(n));
  armed.store(n > 0);
}

void AnswersWritten(size_t n) {
  if (!armed.load(std::memory_order_relaxed)) return;
  if (answers_left.fetch_sub(static_cast<int64_t>(n)) <= static_cast<int64_t>(n))
    ::kill(::getpid(), SIGKILL);
}

}  // namespace sluice::agent::test_faults
