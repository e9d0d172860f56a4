#include "agent/net/worker_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_join.h"
#include "common/log.h"

namespace sluice::agent::net {
namespace {

// Limits `thread` to `cpus`; 0 or an errno value.
int SetThreadCpus(std::thread& thread, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  return pthread_setaffinity_np(thread.native_handle(), sizeof(set), &set);
}

}  // namespace

WorkerPool::WorkerPool(Options options) {
  const int workers = std::max(1, options.workers);
  for (int i = 0; i < workers; ++i) {
    loops_.push_back(std::make_unique<asio::io_context>(1));
    guards_.push_back(asio::make_work_guard(*loops_.back()));
  }
  for (auto& loop : loops_) {
    asio::io_context* l = loop.get();
    threads_.emplace_back([l] { l->run(); });
  }
  // One worker per CPU the agent may run on: each is pinned to its CPU (see worker_placement.h).
  std::vector<int> cpus = options.cpu_affinity ? AllowedCpus() : std::vector<int>{};
  std::vector<int> worker_cpus;
  if (cpus.size() > 1 && cpus.size() == static_cast<size_t>(workers)) worker_cpus = cpus;
  for (size_t i = 0; i < worker_cpus.size(); ++i) {
    if (int err = SetThreadCpus(threads_[i], {worker_cpus[i]}); err != 0) {
      LogWarning("worker ", i, " not pinned to CPU ", worker_cpus[i], ": ", std::strerror(err),
                 "; workers float and connections are spread round robin");
      for (size_t j = 0; j < i; ++j) SetThreadCpus(threads_[j], cpus);  // none stays half-pinned
      worker_cpus.clear();
    }
  }
  if (!worker_cpus.empty()) {
    LogInfo("data-path workers pinned to CPUs ", absl::StrJoin(worker_cpus, ","),
            "; each connection goes to the worker on the CPU it arrives on, while the workers stay "
            "balanced");
  } else if (options.cpu_affinity && cpus.size() > 1) {
    LogInfo("data-path workers not pinned: ", workers, " workers for ", cpus.size(),
            " CPUs (pinning needs one worker per CPU the agent may run on)");
  }
  placement_ = std::make_unique<WorkerPlacement>(loops_.size(), std::move(worker_cpus));
}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Stop() {
  guards_.clear();
  for (auto& loop : loops_) loop->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  loops_.clear();  // the sessions' frames go with their loops, while what they use still exists
}

}  // namespace sluice::agent::net
