#include "agent/audit/spool.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "agent/audit/event_sink.h"
#include "common/audit/records.h"

namespace sluice::agent {
namespace {

std::string FreshDir() {
  std::string dir = ::testing::TempDir() + "/spool_test_" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::filesystem::remove_all(dir);
  return dir;
}

EventChunk Chunk(uint64_t first, int n) {
  EventChunk c;
  c.first_sequence = first;
  for (int i = 0; i < n; ++i) {
    v1::AuditEvent e;
    e.set_sequence(first + i);
    e.set_type("statement");
    e.set_json("{\"n\":" + std::to_string(first + i) + "}");
    audit::AppendRecord(&c.records, e.SerializeAsString());
  }
  c.last_sequence = first + n - 1;
  c.count = n;
  return c;
}

// A spool with default options in a new directory (null when it cannot be opened).
std::unique_ptr<Spool> OpenFresh() {
  Spool::Options o;
  o.dir = FreshDir();
  auto spool = Spool::Open(o);
  EXPECT_TRUE(spool.ok()) << spool.status();
  return spool.ok() ? std::move(*spool) : nullptr;
}

std::vector<uint64_t> Sequences(const std::vector<EventChunk>& chunks) {
  std::vector<uint64_t> out;
  for (const auto& c : chunks) {
    auto events = audit::DecodeEvents(c.records, 100000);
    EXPECT_TRUE(events.ok());
    for (const auto& e : *events) out.push_back(e.sequence());
    EXPECT_EQ(c.count, events->size());
  }
  return out;
}

// What Open found, its records read back as the event sink does when it sends them.
std::vector<EventChunk> Recovered(Spool& spool) {
  std::vector<EventChunk> chunks = spool.TakeRecovered();
  for (EventChunk& c : chunks) {
    EXPECT_TRUE(c.evicted);
    auto records = spool.ReadRecords(c.first_sequence, c.last_sequence);
    EXPECT_TRUE(records.ok()) << records.status();
    c.records = *records;
  }
  return chunks;
}

TEST(Spool, WhatWasAppendedComesBackAfterARestartUntilAcknowledged) {
  std::string dir = FreshDir();
  Spool::Options o;
  o.dir = dir;
  o.segment_bytes = 200;  // a segment per chunk or two
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    for (uint64_t first : {10, 13, 16, 19}) ASSERT_TRUE((*spool)->Append(Chunk(first, 3)).ok());
    EXPECT_GE((*spool)->segments(), 2u);
    (*spool)->Ack(15);  // the segments wholly at or below 15 go
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ((*spool)->last_sequence(), 21u);
  std::vector<uint64_t> seqs = Sequences(Recovered(**spool));
  ASSERT_FALSE(seqs.empty());
  EXPECT_LE(seqs.front(), 16u);  // nothing above the acknowledged sequence is lost
  EXPECT_EQ(seqs.back(), 21u);
  (*spool)->Ack(21);
  EXPECT_EQ((*spool)->bytes(), 0u);
  EXPECT_EQ((*spool)->segments(), 0u);
}

TEST(Spool, ATornTailIsCutOff) {
  std::string dir = FreshDir();
  Spool::Options o;
  o.dir = dir;
  std::string path;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok());
    ASSERT_TRUE((*spool)->Append(Chunk(100, 4)).ok());
  }
  for (const auto& e : std::filesystem::directory_iterator(dir)) path = e.path();
  {
    std::ofstream f(path, std::ios::app | std::ios::binary);
    f << std::string("\x20\x00\x00\x00garbage", 11);  // half a record: the agent died mid-write
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ(Sequences(Recovered(**spool)), (std::vector<uint64_t>{100, 101, 102, 103}));
  ASSERT_TRUE((*spool)->Append(Chunk(104, 1)).ok());  // appends after the cut
  auto again = Spool::Open(o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Sequences(Recovered(**again)).back(), 104u);
}

TEST(EventSinkSpool, EventsAreSpooledBeforeTheyCanBeSentAndSurviveARestart) {
  std::string dir = FreshDir();
  Spool::Options o;
  o.dir = dir;
  uint64_t last = 0;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok());
    EventSink sink(1 << 20, 4096);
    sink.StartSpooling(spool->get());
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
    ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));  // only once on disk
    EXPECT_GT(sink.stats().spool_bytes, 0u);
    auto chunk = sink.TakeChunk();
    ASSERT_TRUE(chunk.has_value());
    EXPECT_TRUE(chunk->spooled);
    last = chunk->last_sequence;
    sink.Ack(last);  // acknowledged: gone from disk once its segment is complete
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  EventSink sink(1 << 20, 4096);
  sink.StartSpooling(spool->get());
  ASSERT_TRUE(sink.Emit("statement", "s2", "{}"));
  ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));
  std::vector<uint64_t> seqs;
  while (auto c = sink.TakeChunk()) {
    for (uint64_t s : Sequences({*c})) seqs.push_back(s);
    if (seqs.size() >= 50 && !sink.WaitForEvents(absl::Milliseconds(200))) break;
  }
  ASSERT_FALSE(seqs.empty());
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end());  // no duplicates
  EXPECT_GT(seqs.back(), last);  // the new event follows what was spooled before
}

// Polls `done` for up to `timeout`.
template <typename F>
bool Eventually(F done, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// An event sink (small chunks) spooling to a spool opened with `o`; `spool` is null when it
// cannot be opened.
struct SpooledSink {
  explicit SpooledSink(const std::string& dir) : SpooledSink([&dir] {
    Spool::Options o;
    o.dir = dir;
    return o;
  }()) {}
  // `chain` (optional) replaces what fills in the chain of each sealed chunk.
  explicit SpooledSink(Spool::Options o, EventSink::Chainer chain = nullptr) {
    auto opened = Spool::Open(std::move(o));
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (!opened.ok()) return;
    spool = std::move(*opened);
    if (chain) sink.SetChainerForTest(std::move(chain));
    sink.StartSpooling(spool.get());
  }
  std::unique_ptr<Spool> spool;
  EventSink sink{1 << 20, 4096};  // after `spool`: destroyed first
};

// The records of every chunk taken from `sink`, checked as the control plane checks them: each
// event names the hash of the one before (`*head`, empty before an agent's first event, which
// has no prev_hash). Returns how many records there were; `*last` is the last sequence.
size_t TakeChained(EventSink& sink, std::string* head, uint64_t* last) {
  size_t n = 0;
  while (auto chunk = sink.TakeChunk()) {
    audit::RecordReader reader(chunk->records);
    while (!reader.done()) {
      auto payload = reader.Next();
      EXPECT_TRUE(payload.ok()) << payload.status();
      if (!payload.ok()) return n;
      v1::AuditEvent e;
      EXPECT_TRUE(e.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
      EXPECT_EQ(e.prev_hash(), *head) << "at sequence " << e.sequence();
      *head = audit::ChainHash(*payload);
      *last = e.sequence();
      ++n;
    }
    EXPECT_EQ(chunk->last_hash.empty() ? *head : chunk->last_hash, *head);
  }
  return n;
}

// With a spool, the spool thread fills in the chain (Emit leaves a placeholder): what leaves the
// sink is one unbroken chain, whichever worker emitted, and a restarted agent goes on from it.
TEST(EventSinkSpool, TheSpoolThreadChainsEveryRecordAndARestartGoesOn) {
  const std::string dir = FreshDir();
  std::string head;
  uint64_t last = 0;
  {
    SpooledSink spooled(dir);
    ASSERT_NE(spooled.spool, nullptr);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&spooled, t] {
        for (int i = 0; i < 1000; ++i) ASSERT_TRUE(spooled.sink.Emit("statement", absl::StrCat("s", t), "{}"));
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_TRUE(spooled.sink.WaitUntilSpooled(absl::Seconds(10)));
    EXPECT_EQ(TakeChained(spooled.sink, &head, &last), 4000u);
    spooled.sink.Ack(last);
  }
  ASSERT_FALSE(head.empty());
  SpooledSink again(dir);
  ASSERT_NE(again.spool, nullptr);
  ASSERT_TRUE(again.sink.Emit("statement", "s9", "{}"));
  ASSERT_TRUE(again.sink.WaitUntilSpooled(absl::Seconds(10)));
  // The active segment outlives its acknowledgement, so the first run's records come back first
  // (the control plane drops what it has); the new event continues their chain.
  std::string from_start;
  const uint64_t first_run_last = last;
  EXPECT_EQ(TakeChained(again.sink, &from_start, &last), 4001u);
  EXPECT_GT(last, first_run_last);
}

// Records that reached only the journal (the agent stopped before its spool thread wrote them)
// carry the placeholder: reopening the spool chains them from the segments' head.
TEST(EventSinkSpool, RecordsRecoveredFromTheJournalAreChained) {
  const std::string dir = FreshDir();
  std::string head;
  uint64_t last = 0;
  {
    SpooledSink spooled(dir);
    ASSERT_NE(spooled.spool, nullptr);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(spooled.sink.Emit("statement", "s1", "{}"));
    ASSERT_TRUE(spooled.sink.WaitUntilSpooled(absl::Seconds(10)));
    EXPECT_EQ(TakeChained(spooled.sink, &head, &last), 50u);
    // Fewer bytes than a chunk, copied (as a crash would leave them) before the spool thread's
    // linger ends: these are in the journal only (if the thread wrote them first after all,
    // they are checked the same).
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(spooled.sink.Emit("statement", "s1", "{}"));
    std::filesystem::copy(dir, dir + ".crashed");
  }
  SpooledSink again(dir + ".crashed");
  ASSERT_NE(again.spool, nullptr);
  // The 50 taken before come back too (never acknowledged): checked from the start of the chain.
  std::string from_start;
  uint64_t ignored = 0;
  EXPECT_EQ(TakeChained(again.sink, &from_start, &ignored), 55u);
  std::filesystem::remove_all(dir + ".crashed");
}

// A chunk whose chain cannot be filled in (its records damaged in memory) never leaves the sink,
// nor does any chunk after it: the spool reports why (new sessions are refused). Chaining is tried
// again from the same head, so when it works again everything leaves in order, one chain.
TEST(EventSinkSpool, AChunkThatCannotBeChainedIsHeldWithEveryOneAfterIt) {
  std::atomic<bool> damaged{false};
  Spool::Options o;
  o.dir = FreshDir();
  SpooledSink spooled(std::move(o), [&damaged](std::string* records, std::string* head) {
    if (damaged) return absl::DataLossError("record CRC mismatch");
    return audit::ChainRecords(records, head);
  });
  ASSERT_NE(spooled.spool, nullptr);
  EventSink& sink = spooled.sink;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
  ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(10)));
  std::string head;
  uint64_t last = 0;
  EXPECT_EQ(TakeChained(sink, &head, &last), 20u);
  const uint64_t before = last;  // sequences start from the time (a spool that is new)

  damaged = true;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
  ASSERT_TRUE(Eventually([&] { return !sink.stats().spool_error.empty(); }));
  const std::string error = sink.stats().spool_error;
  EXPECT_NE(error.find(absl::StrCat("cannot chain the audit records of sequences ", before + 1, "..")),
            std::string::npos) << error;
  EXPECT_NE(error.find("record CRC mismatch"), std::string::npos) << error;
  EXPECT_FALSE(sink.WaitUntilSpooled(absl::Milliseconds(400)));
  EXPECT_FALSE(sink.TakeChunk().has_value());
  ASSERT_TRUE(sink.Emit("statement", "s2", "{}"));  // after the held ones: held too
  EXPECT_FALSE(sink.WaitForEvents(absl::Milliseconds(400)));

  damaged = false;
  ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(10)));
  EXPECT_EQ(TakeChained(sink, &head, &last), 21u);  // on from the head of the first 20
  EXPECT_EQ(last, before + 21);
  EXPECT_TRUE(sink.stats().spool_error.empty()) << sink.stats().spool_error;
}

// A disk that takes seconds to sync (busy with other writers) must not hold events back: a
// chunk written while a sync hangs can be sent, and an acknowledgement does not wait for it.
TEST(EventSinkSpool, ASlowSyncDoesNotHoldEventsBack) {
  absl::Notification release;
  std::atomic<int> syncs{0};
  std::atomic<bool> hanging{false};
  Spool::Options o;
  o.dir = FreshDir();
  o.sync_file = [&](int fd) {
    hanging = true;
    ++syncs;
    release.WaitForNotificationWithTimeout(absl::Seconds(30));
    hanging = false;
    return ::fdatasync(fd);
  };
  SpooledSink spooled(std::move(o));
  ASSERT_NE(spooled.spool, nullptr);
  EventSink& sink = spooled.sink;
  ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
  ASSERT_TRUE(Eventually([&] { return hanging.load(); }));  // the first chunk's sync hangs
  ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));
  auto first = sink.TakeChunk();
  ASSERT_TRUE(first.has_value());

  ASSERT_TRUE(sink.Emit("statement", "s1", "{\"n\":2}"));
  ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));  // written, not yet synced: sendable
  auto second = sink.TakeChunk();
  ASSERT_TRUE(second.has_value());
  EXPECT_GT(second->first_sequence, first->last_sequence);
  EXPECT_TRUE(second->on_disk);
  sink.Ack(second->last_sequence);
  EXPECT_TRUE(hanging.load()) << "the events waited for the sync";
  EXPECT_EQ(sink.stats().spool_error, "");

  release.Notify();
  EXPECT_TRUE(Eventually([&] { return syncs.load() >= 2; }));  // what was written meanwhile is synced next
}

// A sync that fails refuses new sessions (fail closed) until a later sync succeeds.
TEST(EventSinkSpool, AFailingSyncRefusesNewSessionsUntilOneSucceeds) {
  std::atomic<bool> failing{true};
  Spool::Options o;
  o.dir = FreshDir();
  o.sync_interval = absl::Milliseconds(10);
  o.sync_file = [&](int fd) {
    if (failing) {
      errno = EIO;
      return -1;
    }
    return ::fdatasync(fd);
  };
  SpooledSink spooled(std::move(o));
  ASSERT_NE(spooled.spool, nullptr);
  EventSink& sink = spooled.sink;
  ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
  ASSERT_TRUE(Eventually([&] { return sink.Full(); }));
  const std::string error = sink.stats().spool_error;
  EXPECT_NE(error.find("fdatasync of the audit spool"), std::string::npos) << error;
  EXPECT_NE(error.find(std::strerror(EIO)), std::string::npos) << error;

  failing = false;
  EXPECT_TRUE(Eventually([&] { return !sink.Full(); }));
  EXPECT_EQ(sink.stats().spool_error, "");
}

// A chunk being sent is not held in memory a second time once it is in a segment; a broken
// stream sends the same records again, read back from the segment.
TEST(EventSinkSpool, AChunkInFlightIsReadBackFromTheSegmentForAResend) {
  std::unique_ptr<Spool> spool = OpenFresh();
  ASSERT_NE(spool, nullptr);
  EventSink sink(1 << 20, 4096);
  sink.StartSpooling(spool.get());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{\"n\":" + std::to_string(i) + "}"));
  ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(5)));
  ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));
  auto first = sink.TakeChunk();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(Sequences({*first}).size(), 30u);
  EventSink::Stats st = sink.stats();
  EXPECT_EQ(st.in_flight_events, 30u);
  EXPECT_EQ(st.bytes, 0u);           // what is in flight is in the segment, not in memory
  EXPECT_EQ(st.evicted_events, 0u);  // and is not a backlog
  sink.Requeue();                    // the stream broke before the acknowledgement
  auto again = sink.TakeChunk();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->first_sequence, first->first_sequence);
  EXPECT_EQ(again->last_sequence, first->last_sequence);
  EXPECT_EQ(again->records, first->records);
  sink.Ack(again->last_sequence);
  EXPECT_EQ(sink.stats().in_flight_events, 0u);
  EXPECT_FALSE(sink.TakeChunk().has_value());
}

// A backlog larger than the sink's memory (the control plane is away): spooled chunks leave
// memory and are read back from disk when they are sent; nothing is refused, nothing lost.
TEST(EventSinkSpool, ABacklogBeyondMemoryWaitsOnDisk) {
  std::unique_ptr<Spool> spool = OpenFresh();
  ASSERT_NE(spool, nullptr);
  constexpr size_t kMemory = 64 << 10;
  EventSink sink(kMemory, 4096);
  sink.StartSpooling(spool.get());
  const std::string body = "{\"statement\":\"" + std::string(200, 'x') + "\"}";
  for (int i = 0; i < 2000; ++i) {  // ~500 KiB of records
    while (!sink.Emit("statement", "s1", body)) ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(5)));
  }
  ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));
  ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(5)));
  EventSink::Stats st = sink.stats();
  EXPECT_LE(st.bytes, kMemory);
  EXPECT_GT(st.evicted_events, 1000u);
  std::vector<uint64_t> seqs;
  while (auto c = sink.TakeChunk()) {
    for (uint64_t s : Sequences({*c})) seqs.push_back(s);
    sink.Ack(c->last_sequence);
  }
  ASSERT_EQ(seqs.size(), 2000u);
  for (size_t i = 1; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], seqs[i - 1] + 1);
}

// After a restart, what the control plane already committed is not sent again: its
// acknowledgement drops the recovered chunks (and the spool deletes their segment).
TEST(EventSinkSpool, RecoveredChunksTheControlPlaneHoldsAreDroppedOnAck) {
  std::string dir = FreshDir();
  Spool::Options o;
  o.dir = dir;
  uint64_t last = 0;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok());
    EventSink sink(1 << 20, 4096);
    sink.StartSpooling(spool->get());
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
    ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(5)));
    while (auto c = sink.TakeChunk()) last = c->last_sequence;  // sent; the ack never came
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  EventSink sink(1 << 20, 4096);
  sink.StartSpooling(spool->get());
  EXPECT_EQ(sink.stats().queued_events, 100u);
  sink.Ack(last);  // the control plane had them all
  EXPECT_EQ(sink.stats().queued_events, 0u);
  EXPECT_FALSE(sink.TakeChunk().has_value());
  ASSERT_TRUE(sink.Emit("statement", "s2", "{}"));
  ASSERT_TRUE(sink.WaitForEvents(absl::Seconds(5)));
  auto next = sink.TakeChunk();
  ASSERT_TRUE(next.has_value());
  std::vector<uint64_t> seqs = Sequences({*next});
  ASSERT_EQ(seqs.size(), 1u);  // only the new event
  EXPECT_GT(seqs[0], last);
}

// Records an agent emitted but had not yet written to a segment when it died are in the
// journal: the next start puts them in the spool, after what the segments hold.
TEST(Spool, RecordsOnlyInTheJournalSurviveAKill) {
  std::string dir = FreshDir();
  Spool::Options o;
  o.dir = dir;
  o.journal_half_bytes = 4096;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    ASSERT_TRUE((*spool)->Append(Chunk(10, 3)).ok());
    Journal* j = (*spool)->journal();
    // Round one: 10..12 journaled and spooled; round two: 13..14 journaled only (the process
    // dies before the spool thread writes them; the journal keeps what it was given).
    EventChunk first = Chunk(10, 3);
    audit::RecordReader r1(first.records);
    for (size_t at = 0; !r1.done(); at = r1.offset()) {
      ASSERT_TRUE(r1.Next().ok());
      ASSERT_TRUE(j->Append(absl::string_view(first.records).substr(at, r1.offset() - at)));
    }
    j->Switch();
    EventChunk second = Chunk(13, 2);
    audit::RecordReader r2(second.records);
    for (size_t at = 0; !r2.done(); at = r2.offset()) {
      ASSERT_TRUE(r2.Next().ok());
      ASSERT_TRUE(j->Append(absl::string_view(second.records).substr(at, r2.offset() - at)));
    }
    // A record larger than what is left of the half is refused, not cut.
    EXPECT_FALSE(j->Append(std::string(5000, 'x')));
    EXPECT_EQ(j->overflows(), 1u);
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ((*spool)->last_sequence(), 14u);
  EXPECT_EQ(Sequences(Recovered(**spool)), (std::vector<uint64_t>{10, 11, 12, 13, 14}));
  EXPECT_EQ((*spool)->chain_head(),
            audit::ChainHash(audit::RecordPayload(Chunk(14, 1).records, 0)));
  // Recovered once: the journal was emptied into the spool.
  spool->reset();
  auto again = Spool::Open(o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Sequences(Recovered(**again)), (std::vector<uint64_t>{10, 11, 12, 13, 14}));
}

// A session's requests in flight when the agent dies become "unknown" statement events at the
// next start, minus the one answer the journal holds that the slot had not counted yet.
TEST(Inflight, WhatWasInFlightBecomesUnknownAfterARestart) {
  std::string dir = FreshDir();
  std::filesystem::create_directories(dir);
  auto table = InflightTable::Open(dir + "/inflight", 8);
  ASSERT_TRUE(table.ok()) << table.status();
  int a = (*table)->Acquire("sess-a", 0);
  int b = (*table)->Acquire("sess-b", 0);
  int c = (*table)->Acquire("sess-c", 0);
  (*table)->Begin(a, "UPDATE t SET n = 1");
  (*table)->Account(a, 5, /*settles=*/true, false);  // answered
  (*table)->Begin(a, "UPDATE t SET n = 2");          // in flight at the kill
  (*table)->Begin(b, "SELECT 1");
  (*table)->Begin(b, "SELECT 2");                    // pipelined: two in flight
  (*table)->Account(c, 7, false, /*release=*/true);  // ended: its slot is free
  EXPECT_GE((*table)->Acquire("x", 0), 0);           // ... and taken again
  // The journal holds b's answer to "SELECT 1", emitted but not yet accounted in the slot.
  std::string journal;
  v1::AuditEvent answer;
  answer.set_sequence(9);
  answer.set_type("statement");
  answer.set_session_id("sess-b");
  answer.set_json("{\"statement\":\"SELECT 1\",\"rows\":1}");
  audit::AppendRecord(&journal, answer.SerializeAsString());

  EventSink sink;
  sink.RecoverInflight(table->get(), journal);
  std::vector<std::pair<std::string, std::string>> got;  // session, type + body
  while (auto chunk = sink.TakeChunk()) {
    auto events = audit::DecodeEvents(chunk->records, 100);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const auto& e : *events) got.emplace_back(e.session_id(), e.type() + " " + e.json());
  }
  auto has = [&](const std::string& session, const std::string& part) {
    return std::count_if(got.begin(), got.end(), [&](const auto& g) {
      return g.first == session && g.second.find(part) != std::string::npos;
    });
  };
  EXPECT_EQ(has("sess-a", "\"outcome\":\"unknown\""), 1);
  EXPECT_EQ(has("sess-a", "UPDATE t SET n = 2"), 1);
  EXPECT_EQ(has("sess-b", "\"outcome\":\"unknown\""), 1);
  EXPECT_EQ(has("sess-b", "SELECT 2"), 1);
  EXPECT_EQ(has("sess-a", "session_end"), 1);
  EXPECT_EQ(has("sess-x", "session_end"), 0);
  EXPECT_EQ(has("sess-c", "session_end"), 0);
  EXPECT_EQ(has("x", "session_end"), 1);
  EXPECT_TRUE((*table)->Recover().empty());  // once
}

}  // namespace
}  // namespace sluice::agent
