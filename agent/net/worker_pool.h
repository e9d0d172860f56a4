// The agent's data-path threads: one event loop (asio::io_context) per worker thread, owned by
// agent/main.cc and shared by every listener (PostgreSQL today; MySQL and HTTP take the same
// pool), so that several protocols do not bring pools of their own to fight for the same cores.
// A connection is confined to one loop for its whole life, so a session needs no locks; which
// loop it gets is the pool's placement (agent/net/worker_placement.h).
#pragma once

#include <asio.hpp>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/net/worker_placement.h"

namespace sluice::agent::net {

class WorkerPool {
 public:
  struct Options {
    int workers = 2;
    // Pin the workers to the CPUs the agent may run on when there is one worker per CPU, and give
    // each connection to the worker on the CPU it arrives on (worker_placement.h).
    bool cpu_affinity = true;
  };
  // Starts the worker threads (pinned as above when possible; the log says which).
  explicit WorkerPool(Options options);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  size_t size() const { return loops_.size(); }
  asio::io_context& loop(size_t worker) { return *loops_[worker]; }
  // Where a connection that arrived on `incoming_cpu` (-1: unknown) runs; counted there until
  // Release (worker_placement.h). Pick is called from the acceptors' loop (worker 0's) only.
  size_t Pick(int incoming_cpu) { return placement_->Pick(incoming_cpu); }
  void Release(size_t worker) { placement_->Release(worker); }
  const WorkerPlacement& placement() const { return *placement_; }
  // Stops the loops, joins the threads and destroys the loops with the sessions they still hold
  // (once; the destructor does it too). Listeners are stopped first; nothing is run on the pool
  // after.
  void Stop();

 private:
  std::unique_ptr<WorkerPlacement> placement_;
  std::vector<std::unique_ptr<asio::io_context>> loops_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
};

}  // namespace sluice::agent::net
