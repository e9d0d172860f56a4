// Audit events produced in the data path (session start and end, statements, refused logins,
// protocol errors), waiting to be streamed to the control plane. Each gets a per-agent sequence
// number; the control plane acknowledges the highest sequence it committed, and only then are
// events dropped here. A broken stream puts in-flight events back in the queue.
//
// Memory only for now (durable on-disk spooling comes with the recording work): a bounded
// queue; when it is full, new sessions are refused (fail closed) instead of losing events.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

class EventSink {
 public:
  explicit EventSink(size_t capacity = 200000);

  // Queues an event whose body is serialized JSON; false when the queue is full (the caller must
  // fail closed).
  bool EmitJson(const std::string& type, const std::string& session_id, std::string json,
                bool failed = false);
  bool Full() const;

  // Up to `max` queued events, now in flight, oldest first.
  std::vector<v1::AuditEvent> TakeBatch(size_t max);
  // The control plane committed everything up to `sequence`.
  void Ack(uint64_t sequence);
  // The stream broke: everything in flight goes back to the front of the queue.
  void Requeue();
  // Waits up to `timeout` for queued events; true when there are some.
  bool WaitForEvents(absl::Duration timeout);
  // Waits up to `linger` for `count` events to queue (call after WaitForEvents): sends fewer,
  // larger batches when the data path is busy.
  void WaitForBatch(size_t count, absl::Duration linger);

  size_t queued() const;
  size_t in_flight() const;
  uint64_t emitted() const;

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<v1::AuditEvent> queued_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::AuditEvent> in_flight_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_);
  uint64_t emitted_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::agent
