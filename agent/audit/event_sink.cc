#include "agent/audit/event_sink.h"

#include "common/audit/records.h"
#include "common/clock.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

// Sequences start from the start time in microseconds, so that a restarted agent (whose buffer
// was in memory) never reuses a sequence the control plane already holds.
EventSink::EventSink(size_t capacity_bytes, size_t chunk_bytes)
    : capacity_bytes_(capacity_bytes),
      chunk_bytes_(chunk_bytes),
      next_sequence_(static_cast<uint64_t>(NowUnixMs()) * 1000) {}

bool EventSink::Emit(absl::string_view type, absl::string_view session_id, absl::string_view json,
                     bool failed) {
  // One event object per thread, reused: its strings keep their capacity, so encoding an event
  // allocates nothing once the thread has warmed up.
  thread_local v1::AuditEvent event;
  event.Clear();
  event.set_failed(failed);
  event.set_time_unix_ms(NowUnixMs());
  event.set_type(type.data(), type.size());
  event.set_session_id(session_id.data(), session_id.size());
  event.set_json(json.data(), json.size());

  absl::MutexLock lock(&mu_);
  if (bytes_ >= capacity_bytes_) return false;
  event.set_sequence(next_sequence_ + 1);
  size_t size = event.ByteSizeLong();
  if (size > audit::kMaxRecordBytes) return false;
  ++next_sequence_;
  if (queued_.empty() || queued_.back().records.size() >= chunk_bytes_) {
    EventChunk& fresh = queued_.emplace_back();
    fresh.records.reserve(chunk_bytes_ + 4096);
    fresh.first_sequence = next_sequence_;
  }
  EventChunk& chunk = queued_.back();
  size_t before = chunk.records.size();
  size_t offset = 0;
  char* payload = audit::AppendRecordSpace(&chunk.records, size, &offset);
  event.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(payload));
  audit::SealRecord(&chunk.records, offset);
  chunk.last_sequence = next_sequence_;
  ++chunk.count;
  bytes_ += chunk.records.size() - before;
  ++queued_events_;
  ++emitted_;
  return true;
}

bool EventSink::Full() const {
  absl::MutexLock lock(&mu_);
  return bytes_ >= capacity_bytes_;
}

bool EventSink::HasFullChunk() const {
  return queued_.size() > 1 || (queued_.size() == 1 && queued_.front().records.size() >= chunk_bytes_);
}

bool EventSink::WaitForEvents(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(
      absl::Condition(+[](std::deque<EventChunk>* q) { return !q->empty(); }, &queued_), timeout);
  return !queued_.empty();
}

void EventSink::WaitForChunk(absl::Duration linger) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(this, &EventSink::HasFullChunk), linger);
}

std::optional<EventChunk> EventSink::TakeChunk() {
  absl::MutexLock lock(&mu_);
  if (queued_.empty()) return std::nullopt;
  EventChunk& sent = in_flight_.emplace_back(std::move(queued_.front()));
  queued_.pop_front();
  queued_events_ -= sent.count;
  in_flight_events_ += sent.count;
  return sent;
}

void EventSink::Ack(uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  while (!in_flight_.empty() && in_flight_.front().last_sequence <= sequence) {
    bytes_ -= in_flight_.front().records.size();
    in_flight_events_ -= in_flight_.front().count;
    in_flight_.pop_front();
  }
}

void EventSink::Requeue() {
  absl::MutexLock lock(&mu_);
  while (!in_flight_.empty()) {
    queued_events_ += in_flight_.back().count;
    in_flight_events_ -= in_flight_.back().count;
    queued_.push_front(std::move(in_flight_.back()));
    in_flight_.pop_back();
  }
}

EventSink::Stats EventSink::stats() const {
  absl::MutexLock lock(&mu_);
  return Stats{emitted_, queued_events_, in_flight_events_, bytes_};
}

}  // namespace sluice::agent
