#include "agent/audit/event_sink.h"

#include "common/clock.h"

namespace sluice::agent {

// Sequences start from the start time in microseconds, so that a restarted agent (whose queue
// was in memory) never reuses a sequence the control plane already holds.
EventSink::EventSink(size_t capacity)
    : capacity_(capacity), next_sequence_(static_cast<uint64_t>(NowUnixMs()) * 1000) {}

bool EventSink::EmitJson(const std::string& type, const std::string& session_id, std::string json,
                         bool failed) {
  v1::AuditEvent e;
  e.set_failed(failed);
  e.set_time_unix_ms(NowUnixMs());
  e.set_type(type);
  e.set_session_id(session_id);
  e.set_json(std::move(json));
  absl::MutexLock lock(&mu_);
  if (queued_.size() + in_flight_.size() >= capacity_) return false;
  e.set_sequence(++next_sequence_);
  queued_.push_back(std::move(e));
  ++emitted_;
  return true;
}

bool EventSink::Full() const {
  absl::MutexLock lock(&mu_);
  return queued_.size() + in_flight_.size() >= capacity_;
}

std::vector<v1::AuditEvent> EventSink::TakeBatch(size_t max) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::AuditEvent> out;
  while (!queued_.empty() && out.size() < max) {
    out.push_back(queued_.front());
    in_flight_.push_back(std::move(queued_.front()));
    queued_.pop_front();
  }
  return out;
}

void EventSink::Ack(uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  while (!in_flight_.empty() && in_flight_.front().sequence() <= sequence) in_flight_.pop_front();
}

void EventSink::Requeue() {
  absl::MutexLock lock(&mu_);
  while (!in_flight_.empty()) {
    queued_.push_front(std::move(in_flight_.back()));
    in_flight_.pop_back();
  }
}

bool EventSink::WaitForEvents(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(
      absl::Condition(+[](std::deque<v1::AuditEvent>* q) { return !q->empty(); }, &queued_),
      timeout);
  return !queued_.empty();
}

void EventSink::WaitForBatch(size_t count, absl::Duration linger) {
  struct Want {
    const std::deque<v1::AuditEvent>* queue;
    size_t count;
  } want{&queued_, count};
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(+[](Want* w) { return w->queue->size() >= w->count; }, &want),
                       linger);
}

size_t EventSink::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_.size();
}

size_t EventSink::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_.size();
}

uint64_t EventSink::emitted() const {
  absl::MutexLock lock(&mu_);
  return emitted_;
}

}  // namespace sluice::agent
