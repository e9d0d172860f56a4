#include "agent/audit/event_sink.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/audit/inflight.h"
#include "agent/audit/spool.h"
#include "common/audit/events.h"
#include "common/audit/recording.h"
#include "common/audit/records.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/json_writer.h"
#include "common/log.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

// Sequences start from the start time in microseconds, so that a restarted agent (whose buffer
// was in memory) never reuses a sequence the control plane already holds.
EventSink::EventSink(size_t capacity_bytes, size_t chunk_bytes)
    : capacity_bytes_(capacity_bytes),
      chunk_bytes_(chunk_bytes),
      next_sequence_(static_cast<uint64_t>(NowUnixMs()) * 1000) {
  chain_start_.own_from = next_sequence_ + 1;
}

EventSink::~EventSink() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (spooler_.joinable()) spooler_.join();
  if (spool_ != nullptr) spool_->Sync().IgnoreError();
}

void EventSink::StartSpooling(Spool* spool) {
  spool_ = spool;
  std::vector<EventChunk> recovered = spool->TakeRecovered();
  {
    absl::MutexLock lock(&mu_);
    journal_ = spool->journal();
    const int64_t now_ms = NowUnixMs();
    for (auto it = recovered.rbegin(); it != recovered.rend(); ++it) {
      // Waiting since this start, as far as the delivery lag tells (their events' own times are
      // in the records, not read here).
      if (it->first_emit_ms == 0) it->first_emit_ms = now_ms;
      bytes_ += it->records.size();
      queued_events_ += it->count;
      queued_.push_front(std::move(*it));
    }
    next_sequence_ = std::max(next_sequence_, spool->last_sequence());
    chain_head_ = spool->chain_head();  // the chain goes on across restarts
    head_sequence_ = spool->last_sequence();
    spool_head_ = chain_head_;
    chain_start_ = ChainStart{head_sequence_, chain_head_, next_sequence_ + 1};
    if (!spool->open_status().ok()) DiskFailedLocked(spool->open_status().message());
  }
  spooler_ = std::thread([this] { SpoolLoop(); });
}

bool EventSink::HasUnspooled() const { return stopping_ || !AllSpooled(); }

bool EventSink::OpenChunkFull() const {
  return stopping_ || (!queued_.empty() && queued_.back().records.size() >= chunk_bytes_);
}

bool EventSink::HasSendable() const {
  return !queued_.empty() && (spool_ == nullptr || queued_.front().spooled);
}

// Seals the chunks not yet on disk (the open one after a short linger, so that a busy data path
// writes few, larger pieces), appends them to the spool outside the lock (sealed chunks are not
// touched by Emit, and TakeChunk takes only spooled ones), then lets them be sent. While the disk
// fails, chunks are sealed and sent but not written; every retry interval the chunks left
// unwritten are written first, in order (or the spool is probed when none is left).
void EventSink::SpoolLoop() {
  while (true) {
    std::vector<EventChunk*> todo;
    absl::Status mapped_st;  // the journal's and the in-flight table's pages
    bool failing = false;
    bool due = true;  // the disk is written to this round
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &EventSink::HasUnspooled),
                           absl::Milliseconds(100));
      if (stopping_) return;
      mu_.AwaitWithTimeout(absl::Condition(this, &EventSink::OpenChunkFull), kLinger);
      failing = !disk_error_.empty();
      due = !failing || absl::Now() >= next_retry_;
      mapped_st = MappedFilesLocked(/*repair=*/failing && due);
      for (EventChunk& c : queued_) {
        if (c.spooled) continue;
        c.sealed = true;
        // A quiet agent seals chunks of an event or two: their 1 MiB reservation is given back
        // (kept, they would hold it until acknowledged, for as long as the control plane is away).
        if (c.records.capacity() > 2 * c.records.size() + (64 << 10)) c.records.shrink_to_fit();
        todo.push_back(&c);
      }
      // The sealed chunks' records are in the journal's active half; new ones go to the other,
      // whose records reached a segment in the previous round. Not while the disk fails: then
      // both halves keep records that are in memory only, until a round has written them.
      if (!todo.empty() && journal_ != nullptr && !failing) journal_->Switch();
    }
    absl::Status st;
    size_t written = 0;    // todo[0..written) are in a segment
    size_t unwritten = 0;  // chunks the spool could not take before, written this round
    const absl::Time started = absl::Now();
    // The hash chain, filled in here rather than in Emit: in one loop over a chunk the hashing
    // costs a third of what it does inline on a worker (docs/postgres.md, Speed). A chunk that
    // cannot be chained (its records damaged in memory) is held with every chunk after it: never
    // spooled or sent, tried again next round from the same head (fail closed: the spool reports
    // the error, so new sessions are refused, and a full buffer ends the running ones).
    size_t chained = 0;  // todo[0..chained) carry the chain
    absl::Status chain_st;
    for (EventChunk* c : todo) {
      std::string head = spool_head_;
      chain_st = chain_(&c->records, &head);
      if (!chain_st.ok()) {
        chain_st = absl::DataLossError(absl::StrCat("cannot chain the audit records of sequences ",
                                                    c->first_sequence, "..", c->last_sequence,
                                                    " (held, not sent): ", chain_st.message()));
        break;
      }
      spool_head_ = std::move(head);
      c->last_hash = spool_head_;
      ++chained;
    }
    if (due) {
      // Oldest first, and nothing after a failed write: a segment's sequences only go up.
      if (failing) st = WriteUnwritten(&unwritten);
      for (size_t i = 0; i < chained && st.ok(); ++i) {
        st = spool_->Append(*todo[i]);
        if (st.ok()) ++written;
      }
      // Written is enough to send (the spool's own thread syncs): a slow sync must not hold events.
      if (st.ok()) st = spool_->sync_status();
      // Nothing was left to write: the volume must show that it takes writes again.
      if (st.ok() && failing && unwritten == 0 && chained == 0) st = spool_->Probe();
    }
    if (st.ok()) st = mapped_st;
    const absl::Duration took = absl::Now() - started;
    size_t waiting = 0;  // bytes of events in memory after this round
    {
      absl::MutexLock lock(&mu_);
      if (due && !st.ok()) {
        DiskFailedLocked(st.message());
      } else if (due && !disk_error_.empty()) {
        LogInfo("audit spool: writing again after ",
                absl::FormatDuration(absl::Milliseconds(NowUnixMs() - disk_error_since_ms_)),
                chain_st.ok() ? "; new sessions are accepted" : "");
        disk_error_.clear();
        disk_error_since_ms_ = 0;
        spool_error_.clear();
      }
      if (disk_error_.empty()) {
        if (!chain_st.ok() && spool_error_.empty()) {
          LogError("audit spool: ", chain_st.message(), "; new sessions are refused");
        } else if (chain_st.ok() && !spool_error_.empty()) {
          LogInfo("audit spool: writing again");
        }
        spool_error_ = std::string(chain_st.message());
      }
      // Chained chunks are sent even when not written: the control plane is the other copy. A
      // failed spool refuses new sessions, and the chunks stay in memory until they are written
      // or acknowledged.
      for (size_t i = 0; i < chained; ++i) todo[i]->spooled = true;
      if (chained > 0 && !todo[chained - 1]->last_hash.empty()) {
        chain_head_ = todo[chained - 1]->last_hash;
        head_sequence_ = todo[chained - 1]->last_sequence;
      }
      for (size_t i = 0; i < written; ++i) todo[i]->on_disk = true;
      if (spool_error_.empty()) EvictLocked();
      waiting = bytes_;
    }
    // New events wait in memory while the spool writes: a disk this slow brings the fail-closed
    // limit nearer, and the log says so (outside the lock every Emit takes).
    if (took > absl::Seconds(1)) {
      LogWarning("audit spool: writing ", todo.size(), " chunk(s) took ",
                 absl::FormatDuration(took), "; ", waiting, " bytes of events wait in memory (at ",
                 capacity_bytes_, " sessions end rather than go on unaudited)");
    }
    ReportDiskState();
    MaybeCheckpoint();
  }
}

// The journal and the in-flight table are memory-mapped: a page the kernel could not read or
// keep was caught (agent/audit/mapped_file.h). Faulted, they no longer cover what the agent holds
// against a kill: an error like a failed segment write (new sessions are refused) until a retry
// maps them anew. The journal is repaired here, where the chunks are sealed: every record it
// held is in a chunk that this round writes.
absl::Status EventSink::MappedFilesLocked(bool repair) {
  InflightTable* inflight = spool_ != nullptr ? spool_->inflight() : nullptr;
  absl::Status st;
  bool faulted = false;
  auto check = [repair](auto* file) -> absl::Status {
    if (!repair) return absl::DataLossError(file->FaultMessage());
    absl::Status repaired = file->Repair();
    if (repaired.ok()) return repaired;
    return absl::DataLossError(
        absl::StrCat(file->FaultMessage(), "; cannot map it anew: ", repaired.message()));
  };
  if (journal_ != nullptr && journal_->faulted()) {
    faulted = true;
    st = check(journal_);
  }
  if (st.ok() && inflight != nullptr && inflight->faulted()) {
    faulted = true;
    st = check(inflight);
  }
  if (faulted && repair && st.ok())
    LogInfo("audit spool: the journal and the in-flight table are mapped anew");
  return st;
}

void EventSink::DiskFailedLocked(absl::string_view error) {
  failed_since_report_ = true;
  if (disk_error_.empty()) {
    disk_error_since_ms_ = NowUnixMs();
    failed_since_ms_ = disk_error_since_ms_;
    LogError("audit spool: ", error,
             "; new sessions are refused (running sessions go on while their events fit in ",
             "memory); trying again every ",
             absl::FormatDuration(spool_->options().retry_interval));
  }
  disk_error_ = std::string(error);
  failed_error_ = disk_error_;
  spool_error_ = disk_error_;
  next_retry_ = absl::Now() + spool_->options().retry_interval;
}

// One chunk at a time, copied under the lock (it may be sent, acknowledged and dropped while it
// is written): Emit waits for the copy of one chunk, not of the whole backlog.
absl::Status EventSink::WriteUnwritten(size_t* written) {
  uint64_t after = 0;  // the first sequence of the chunk written last
  while (true) {
    EventChunk copy;
    {
      absl::MutexLock lock(&mu_);
      EventChunk* c = OldestUnwrittenLocked(after);
      if (c == nullptr) return absl::OkStatus();
      copy = *c;
    }
    absl::Status st = spool_->Append(copy);
    if (!st.ok()) return st;
    ++*written;
    after = copy.first_sequence;
    absl::MutexLock lock(&mu_);
    for (std::deque<EventChunk>* q : {&in_flight_, &queued_}) {
      for (EventChunk& c : *q) {
        if (c.first_sequence == copy.first_sequence) c.on_disk = true;
      }
    }
  }
}

EventChunk* EventSink::OldestUnwrittenLocked(uint64_t after) {
  for (std::deque<EventChunk>* q : {&in_flight_, &queued_}) {  // in flight: the older ones
    for (EventChunk& c : *q) {
      if (c.first_sequence > after && c.spooled && !c.on_disk && !c.evicted && !c.records.empty())
        return &c;
    }
  }
  return nullptr;
}

// The trail itself says when the agent's own copy of it could not be kept, and since when (also
// a failure that ended before this was called: the spool failed at start, and took writes again
// at the first retry).
void EventSink::ReportDiskState() {
  std::string error;
  std::string failed_error;
  int64_t failed_since = 0;
  bool failed = false;
  {
    absl::MutexLock lock(&mu_);
    error = disk_error_;
    failed_error = failed_error_;
    failed_since = failed_since_ms_;
    failed = std::exchange(failed_since_report_, false);
  }
  if (reported_disk_error_.empty() && (failed || !error.empty())) {
    audit::SpoolFailedEvent event{failed_error, /*refusing_new_sessions=*/true};
    if (!Emit(event.kType, "", audit::ToJson(event), event.failed())) {
      LogError("audit: the event buffer is full; the spool's failure is in the log only");
    }
    reported_disk_error_ = failed_error;
    reported_since_ms_ = failed_since;
  }
  if (!reported_disk_error_.empty() && error.empty()) {
    audit::SpoolRecoveredEvent event{reported_disk_error_, NowUnixMs() - reported_since_ms_};
    if (!Emit(event.kType, "", audit::ToJson(event))) {
      LogError("audit: the event buffer is full; the spool's recovery is in the log only");
    }
    reported_disk_error_.clear();
  }
}

void EventSink::MaybeCheckpoint() {
  if (!sign_) return;
  absl::Time now = absl::Now();
  if (now - last_checkpoint_ < absl::Seconds(1)) return;
  uint64_t sequence;
  std::string head;
  {
    absl::MutexLock lock(&mu_);
    sequence = head_sequence_;
    head = chain_head_;
  }
  // Nothing new since the last checkpoint (its own event is the only one after it), or nothing
  // emitted by this process yet (what came before was covered by the last run's checkpoints).
  if (head.empty() || sequence <= checkpointed_sequence_ + 1 || sequence == 0) return;
  auto signature = sign_(audit::CheckpointMessage(sequence, head));
  if (!signature.ok()) {
    LogError("audit checkpoint not signed: ", signature.status().message());
    return;
  }
  audit::CheckpointEvent checkpoint{sequence, head, *std::move(signature)};
  if (Emit(checkpoint.kType, "", audit::ToJson(checkpoint))) {
    last_checkpoint_ = now;
    checkpointed_sequence_ = sequence;
  }
}

bool EventSink::Emit(absl::string_view type, absl::string_view session_id, absl::string_view json,
                     bool failed, absl::string_view recording, const Inflight& inflight) {
  // One event object per thread, reused: its strings keep their capacity, so encoding an event
  // allocates nothing once the thread has warmed up.
  thread_local v1::AuditEvent event;
  event.Clear();
  event.set_failed(failed);
  event.set_time_unix_ms(NowUnixMs());
  // assign(), not set_*(): the setters build a new string each time, assign reuses the capacity.
  event.mutable_type()->assign(type.data(), type.size());
  event.mutable_session_id()->assign(session_id.data(), session_id.size());
  event.mutable_json()->assign(json.data(), json.size());
  if (!recording.empty()) {
    // Compressed here, outside the lock: the slice is copied, hashed, journaled, sent and
    // stored at a fraction of its size, and the control plane stores it as it is.
    thread_local std::string compressed;
    const absl::string_view slice = audit::CompressSlice(recording, &compressed);
    event.set_recording_bytes(static_cast<uint32_t>(slice.size()));
    event.mutable_recording()->assign(slice.data(), slice.size());
    if (compressed.capacity() > (256 << 10)) std::string().swap(compressed);
  }

  absl::MutexLock lock(&mu_);
  if (bytes_ >= capacity_bytes_) return false;
  event.set_sequence(next_sequence_ + 1);
  // With a spool, a placeholder of the hash's size that the spool thread fills in — unless there
  // is no predecessor to name (no head from the spool, nothing emitted yet): an agent's very
  // first record has no prev_hash at all.
  static const std::string kPlaceholder(32, '\0');
  const bool deferred = spool_ != nullptr;
  if (!deferred) {
    event.set_prev_hash(chain_head_);
  } else if (emitted_ > 0 || !chain_head_.empty()) {
    event.set_prev_hash(kPlaceholder);
  }
  size_t size = event.ByteSizeLong();
  if (size > audit::kMaxRecordBytes && !recording.empty()) {
    // The event must not be lost for its recording: the slice is left out, and says so.
    std::string omitted;
    audit::AppendRecordedOmission(&omitted, 0, 1, recording.size());
    event.set_recording_bytes(static_cast<uint32_t>(omitted.size()));
    event.set_recording(omitted);
    size = event.ByteSizeLong();
  }
  if (size > audit::kMaxRecordBytes) return false;
  ++next_sequence_;
  if (queued_.empty() || queued_.back().sealed || queued_.back().records.size() >= chunk_bytes_) {
    EventChunk& fresh = queued_.emplace_back();
    fresh.records.reserve(chunk_bytes_ + 4096);
    fresh.first_sequence = next_sequence_;
    fresh.first_emit_ms = event.time_unix_ms();
  }
  EventChunk& chunk = queued_.back();
  size_t before = chunk.records.size();
  size_t offset = 0;
  char* payload = audit::AppendRecordSpace(&chunk.records, size, &offset);
  event.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(payload));
  if (!deferred) {
    chain_head_ = audit::ChainHash(absl::string_view(payload, size));
    head_sequence_ = next_sequence_;
    chunk.last_hash = chain_head_;
  }
  audit::SealRecord(&chunk.records, offset);
  if (journal_ != nullptr) journal_->Append(absl::string_view(chunk.records).substr(offset));
  if (inflight.table != nullptr)
    inflight.table->Account(inflight.slot, next_sequence_, inflight.settles, inflight.release);
  chunk.last_sequence = next_sequence_;
  ++chunk.count;
  bytes_ += chunk.records.size() - before;
  ++queued_events_;
  ++emitted_;
  return true;
}

// The newest spooled chunks leave memory first: the oldest are the next to be sent.
void EventSink::EvictLocked() {
  for (auto it = queued_.rbegin(); it != queued_.rend() && bytes_ > capacity_bytes_ / 2; ++it) {
    if (!it->spooled || !it->on_disk || it->evicted || it->records.empty()) continue;
    TakeRecordsLocked(*it);  // dropped: the segment has them
  }
}

std::string EventSink::TakeRecordsLocked(EventChunk& chunk) {
  bytes_ -= chunk.records.size();
  std::string records = std::move(chunk.records);
  chunk.records = std::string();
  chunk.evicted = true;
  return records;
}

void EventSink::RecoverInflight(InflightTable* table, absl::string_view journal_records) {
  if (table == nullptr) return;
  std::vector<InflightTable::Leftover> leftovers = table->Recover();
  // The journal's events by session, read once: what a slot may not have accounted for.
  struct Seen {
    uint64_t sequence = 0;
    bool ends = false;  // a session_end
    bool answers =
        false;  // answers a forwarded request: a statement event without a policy decision
  };
  absl::flat_hash_map<std::string, std::vector<Seen>> journaled;
  if (!leftovers.empty()) {
    audit::RecordReader reader(journal_records);
    while (!reader.done()) {
      auto payload = reader.Next();
      v1::AuditEvent e;
      if (!payload.ok() || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size())))
        break;
      journaled[e.session_id()].push_back(Seen{e.sequence(),
                                               e.type() == audit::SessionEndEvent::kType,
                                               e.type() == audit::StatementEvent::kType &&
                                                   !audit::StatementEvent::HasDecision(e.json())});
    }
  }
  for (const InflightTable::Leftover& l : leftovers) {
    uint32_t pending = l.pending;
    size_t answered = 0;  // of the texts kept
    bool ended = false;
    static const std::vector<Seen> kNothing;
    auto seen = journaled.find(l.session_id);
    for (const Seen& s : seen != journaled.end() ? seen->second : kNothing) {
      if (s.sequence <= l.sequence) continue;
      ended = ended || s.ends;
      if (s.answers && pending > 0) {
        --pending;
        ++answered;
      }
    }
    for (uint32_t k = 0; k < pending; ++k) {
      const size_t t = answered + k;
      audit::StatementEvent unknown;
      unknown.text.statement = t < l.texts.size() ? l.texts[t] : "";
      unknown.outcome = audit::StatementEvent::kOutcomeUnknown;
      unknown.error =
          "the agent stopped before the server answered: the statement may or may not have run";
      unknown.text_not_kept = t >= l.texts.size();
      Emit(unknown.kType, l.session_id, audit::ToJson(unknown), unknown.failed());
    }
    if (!ended) {
      audit::SessionEndEvent end{"the agent stopped (killed or crashed) during the session",
                                 std::nullopt};
      Emit(end.kType, l.session_id, audit::ToJson(end));
    }
    if (pending > 0 || !ended) {
      LogWarning("audit: session ", l.session_id, " was open when the agent stopped: ", pending,
                 " statement(s) recorded with an unknown outcome");
    }
  }
  table->Reset();
}

bool EventSink::Full() const {
  absl::MutexLock lock(&mu_);  // spool_->Full() does not wait for the spool's lock
  return bytes_ >= capacity_bytes_ || !spool_error_.empty() ||
         (spool_ != nullptr && spool_->Full());
}

std::string EventSink::RefusalReason() const {
  {
    absl::MutexLock lock(&mu_);
    if (!spool_error_.empty()) return spool_error_;
    if (bytes_ >= capacity_bytes_) {
      return absl::StrCat("the audit event buffer is full (", bytes_,
                          " bytes in memory, not yet on disk or ", "acknowledged)");
    }
  }
  if (spool_ != nullptr && spool_->Full()) {
    return absl::StrCat("the audit spool is full (", spool_->bytes(),
                        " bytes not acknowledged by the control ", "plane; --spool-max-bytes ",
                        spool_->options().max_bytes, ")");
  }
  return "";
}

bool EventSink::HasFullChunk() const {
  return queued_.size() > 1 ||
         (queued_.size() == 1 && queued_.front().records.size() >= chunk_bytes_);
}

bool EventSink::AllSpooled() const {
  return std::none_of(queued_.begin(), queued_.end(),
                      [](const EventChunk& c) { return !c.spooled; });
}

bool EventSink::WaitUntilSpooled(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(this, &EventSink::AllSpooled), timeout);
}

bool EventSink::WaitForEvents(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(this, &EventSink::HasSendable), timeout);
  return HasSendable();
}

void EventSink::WaitForChunk(absl::Duration linger) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(this, &EventSink::HasFullChunk), linger);
}

std::optional<EventChunk> EventSink::TakeChunk() {
  EventChunk sent;
  {
    absl::MutexLock lock(&mu_);
    if (!HasSendable()) return std::nullopt;
    EventChunk& taken = in_flight_.emplace_back(std::move(queued_.front()));
    queued_.pop_front();
    queued_events_ -= taken.count;
    in_flight_events_ += taken.count;
    if (!taken.evicted) {
      if (!taken.on_disk) return taken;  // memory holds its only copy until it is acknowledged
      // In a segment: the records go out with the message, and the chunk in flight keeps only
      // its metadata (a resend after a broken stream reads them back, as for an evicted chunk).
      std::string records = TakeRecordsLocked(taken);
      sent = taken;
      sent.records = std::move(records);
      sent.evicted = false;
      return sent;
    }
    sent = taken;  // metadata: it stays on disk only while in flight
  }
  auto records = spool_->ReadRecords(sent.first_sequence, sent.last_sequence);
  if (!records.ok() || records->empty()) {
    {
      absl::MutexLock lock(&mu_);
      // Acknowledged while it was being read back (its segment went with the acknowledgement):
      // the control plane has it, and the next TakeChunk goes on with the rest.
      if (sent.last_sequence <= acked_) {
        auto it = std::find_if(in_flight_.begin(), in_flight_.end(), [&](const EventChunk& c) {
          return c.first_sequence == sent.first_sequence;
        });
        if (it != in_flight_.end()) {
          in_flight_events_ -= it->count;
          in_flight_.erase(it);
        }
        return std::nullopt;
      }
      const std::string why = records.ok() ? "the records are no longer in the spool"
                                           : std::string(records.status().message());
      LogError("audit spool: cannot read back sequences ", sent.first_sequence, "..",
               sent.last_sequence, ": ", why);
      DiskFailedLocked(absl::StrCat("cannot read back sequences ", sent.first_sequence, "..",
                                    sent.last_sequence, ": ", why));
    }
    Requeue();  // back to the front, for a later attempt
    return std::nullopt;
  }
  sent.records = std::move(*records);
  sent.evicted = false;
  return sent;
}

void EventSink::Ack(uint64_t sequence) {
  {
    absl::MutexLock lock(&mu_);
    acked_ = std::max(acked_, sequence);
    while (!in_flight_.empty() && in_flight_.front().last_sequence <= sequence) {
      bytes_ -= in_flight_.front().records.size();
      in_flight_events_ -= in_flight_.front().count;
      in_flight_.pop_front();
    }
    // Queued chunks the control plane already holds (sent before a restart or a broken stream,
    // acknowledged now) need not go again; their segments are about to be deleted. (Only spooled
    // ones: the spool thread may be writing the others.)
    while (!queued_.empty() && queued_.front().spooled &&
           queued_.front().last_sequence <= sequence) {
      bytes_ -= queued_.front().records.size();
      queued_events_ -= queued_.front().count;
      queued_.pop_front();
    }
  }
  if (spool_ != nullptr) spool_->Ack(sequence);
}

EventSink::ChainStart EventSink::chain_start() const {
  absl::MutexLock lock(&mu_);
  return chain_start_;
}

bool EventSink::ChainResumed(uint64_t after_sequence, absl::string_view after_hash,
                             uint64_t held_through, uint64_t held_records, int64_t recorded_ms) {
  {
    absl::MutexLock lock(&mu_);
    if (after_sequence != chain_start_.sequence || after_hash != chain_start_.hash ||
        chain_start_.hash.empty() || held_through <= after_sequence) {
      return false;
    }
    if (std::find(resumes_reported_.begin(), resumes_reported_.end(), held_through) !=
        resumes_reported_.end()) {
      return true;
    }
    resumes_reported_.push_back(held_through);
    // Never a sequence the control plane holds (it would drop the event as one it has).
    next_sequence_ = std::max(next_sequence_, held_through);
  }
  LogWarning("audit: this agent's spool ended at sequence ", after_sequence,
             ", and the control plane holds its trail "
             "through sequence ",
             held_through, " (", held_records, " record(s) after it, lost from the spool: a crash ",
             "before they were durable here); the chain goes on from sequence ", after_sequence,
             ", and the control plane recorded the resume");
  audit::ChainResumedEvent resumed;
  resumed.resumed_after_sequence = after_sequence;
  resumed.resumed_after_hash = std::string(after_hash);
  resumed.held_through_sequence = held_through;
  resumed.lost_records = held_records;
  resumed.recorded_unix_ms = recorded_ms;
  resumed.reason =
      "the agent's spool lost records the control plane had stored (a crash before they were "
      "durable on the "
      "agent's disk); the control plane keeps them, and the chain goes on from the last record the "
      "spool held";
  if (!Emit(resumed.kType, "", audit::ToJson(resumed))) {
    LogError(
        "audit: the event buffer is full; the chain's resume is in the log and at the control "
        "plane only");
  }
  return true;
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
  Stats s;
  {
    absl::MutexLock lock(&mu_);
    s = Stats{emitted_, queued_events_, in_flight_events_,    bytes_, 0, 0, 0, 0,
              0,        spool_error_,   disk_error_since_ms_, ""};
    auto oldest = [&s](const EventChunk& c) {
      if (c.count > 0 && c.first_emit_ms > 0 &&
          (s.oldest_unacked_ms == 0 || c.first_emit_ms < s.oldest_unacked_ms)) {
        s.oldest_unacked_ms = c.first_emit_ms;
      }
    };
    for (const EventChunk& c : queued_) {
      oldest(c);
      if (!c.spooled) s.unspooled_events += c.count;
      if (c.evicted) s.evicted_events += c.count;
      if (c.spooled && !c.on_disk) s.unwritten_events += c.count;
    }
    for (const EventChunk& c : in_flight_) {
      oldest(c);
      if (!c.on_disk) s.unwritten_events += c.count;
    }
    if (journal_ != nullptr) s.journal_overflows = journal_->overflows();  // counted under mu_
  }
  // Outside the sink's lock: the spool's own lock is held while it writes and syncs, and the data
  // path must not wait behind a status report for that.
  if (spool_ != nullptr) {
    s.spool_bytes = spool_->bytes();
    s.spool_segments = spool_->segments();
    if (spool_->inflight() != nullptr) s.inflight_uncovered = spool_->inflight()->uncovered();
  }
  s.refusing = RefusalReason();
  return s;
}

}  // namespace sluice::agent
