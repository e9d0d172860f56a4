// Which worker (event loop) of the pool (agent/net/worker_pool.h) a new connection goes to.
//
// With one worker per CPU the agent may run on, each worker is pinned to its CPU and a connection
// goes to the worker on the CPU its packets arrive on (SO_INCOMING_CPU): the client's CPU on
// loopback, the receiving queue's CPU behind a NIC. A session's worker, its client and the
// server process it wakes then tend to stay on one CPU, instead of every statement waking a task
// on the other core (on the 2-core bench machine that cross-core traffic and the idle time it
// causes were most of the agent's gap to haproxy). Balance comes first: the arrival CPU's worker
// is taken only while it holds at most one live session more than the least busy worker; other
// connections, and all of them when the CPU is unknown or the workers are not pinned, go round
// robin over the least busy.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <vector>

namespace sluice::agent::net {

// The CPUs this process may run on (sched_getaffinity), ascending; empty if it cannot be read.
std::vector<int> AllowedCpus();

class WorkerPlacement {
 public:
  // `worker_cpus[i]` is the CPU worker i is pinned to; empty = workers are not pinned.
  WorkerPlacement(size_t workers, std::vector<int> worker_cpus);

  // The worker for a connection that arrived on `incoming_cpu` (-1: unknown). Counts it as live
  // there until Release. Called from one thread (the acceptor's).
  size_t Pick(int incoming_cpu);
  // The session on `worker` ended (any thread).
  void Release(size_t worker);
  size_t live(size_t worker) const { return live_[worker].load(std::memory_order_relaxed); }

 private:
  const size_t workers_;
  const std::vector<int> worker_cpus_;
  std::unique_ptr<std::atomic<size_t>[]> live_;
  size_t next_ = 0;  // round robin among equally busy workers
};

}  // namespace sluice::agent::net
