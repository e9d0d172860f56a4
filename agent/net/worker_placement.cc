#include "agent/net/worker_placement.h"

#include <sched.h>

#include <algorithm>
#include <limits>

namespace sluice::agent::net {

std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

WorkerPlacement::WorkerPlacement(size_t workers, std::vector<int> worker_cpus)
    : workers_(std::max<size_t>(1, workers)),
      worker_cpus_(std::move(worker_cpus)),
      live_(new std::atomic<size_t>[workers_]) {
  for (size_t i = 0; i < workers_; ++i) live_[i].store(0, std::memory_order_relaxed);
}

size_t WorkerPlacement::Pick(int incoming_cpu) {
  size_t least = std::numeric_limits<size_t>::max();
  for (size_t i = 0; i < workers_; ++i) least = std::min(least, live(i));
  size_t chosen = workers_;
  if (incoming_cpu >= 0) {
    auto it = std::find(worker_cpus_.begin(), worker_cpus_.end(), incoming_cpu);
    if (it != worker_cpus_.end()) {
      size_t i = static_cast<size_t>(it - worker_cpus_.begin());
      if (i < workers_ && live(i) <= least + 1) chosen = i;
    }
  }
  for (size_t k = 0; chosen == workers_ && k < workers_; ++k) {
    size_t i = (next_ + k) % workers_;
    if (live(i) <= least) {  // a Release since `least` was read only lowers a count
      chosen = i;
      next_ = i + 1;
    }
  }
  live_[chosen].fetch_add(1, std::memory_order_relaxed);
  return chosen;
}

void WorkerPlacement::Release(size_t worker) {
  if (worker < workers_) live_[worker].fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace sluice::agent::net
