#include "agent/audit/spool.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "agent/audit/event_sink.h"
#include "agent/audit/mapped_file.h"
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
  explicit SpooledSink(const std::string& dir)
      : SpooledSink([&dir] {
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
        for (int i = 0; i < 1000; ++i)
          ASSERT_TRUE(spooled.sink.Emit("statement", absl::StrCat("s", t), "{}"));
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
  EXPECT_NE(
      error.find(absl::StrCat("cannot chain the audit records of sequences ", before + 1, "..")),
      std::string::npos)
      << error;
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
  EXPECT_TRUE(
      Eventually([&] { return syncs.load() >= 2; }));  // what was written meanwhile is synced next
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

// A disk that takes part of a write and then is full: the chunk leaves nothing behind, so what is
// appended once the disk takes writes again is read back after a restart, every record in order.
TEST(Spool, AFailedWriteLeavesNoTornRecordBehind) {
  std::atomic<bool> full{false};
  Spool::Options o;
  o.dir = FreshDir();
  o.write_file = [&](int fd, const void* data, size_t size) -> ssize_t {
    if (!full) return ::write(fd, data, size);
    static thread_local bool half_written = false;
    half_written = !half_written;
    if (half_written) return ::write(fd, data, size / 2);  // the first half fits, then no room
    errno = ENOSPC;
    return -1;
  };
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    ASSERT_TRUE((*spool)->Append(Chunk(1, 3)).ok());
    full = true;
    absl::Status st = (*spool)->Append(Chunk(4, 3));
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("write to the audit spool"), std::string::npos) << st;
    EXPECT_NE(st.message().find(std::strerror(ENOSPC)), std::string::npos) << st;
    EXPECT_EQ((*spool)->last_sequence(), 3u);
    EXPECT_FALSE((*spool)->Probe().ok());
    full = false;
    EXPECT_TRUE((*spool)->Probe().ok());
    ASSERT_TRUE((*spool)->Append(Chunk(4, 3)).ok());
    ASSERT_TRUE((*spool)->Append(Chunk(7, 2)).ok());
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ(Sequences(Recovered(**spool)), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
}

// The memory-mapped files are allocated whole when they are opened: a full disk later cannot
// leave a page of them without room (a SIGBUS when it is first touched).
TEST(Spool, TheJournalAndTheInflightTableAreAllocatedWhole) {
  Spool::Options o;
  o.dir = FreshDir();
  o.journal_half_bytes = 1 << 20;
  o.inflight_slots = 64;
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  for (const char* name : {"journal", "inflight"}) {
    struct stat st;
    ASSERT_EQ(::stat((o.dir + "/" + name).c_str(), &st), 0) << name;
    EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, static_cast<uint64_t>(st.st_size))
        << name << " is sparse";
  }
  EXPECT_EQ(std::filesystem::file_size(o.dir + "/journal"), 2u << 20);
  EXPECT_EQ(std::filesystem::file_size(o.dir + "/inflight"), 64u * 1024);
}

// A volume that can never hold the spool is named at Open, with what it needs.
TEST(Spool, AVolumeTooSmallIsRefusedAtOpen) {
  Spool::Options o;
  o.dir = FreshDir();
  o.journal_half_bytes = size_t{1} << 52;  // no test machine's disk holds 8 PiB
  auto spool = Spool::Open(o);
  ASSERT_FALSE(spool.ok());
  EXPECT_EQ(spool.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(spool.status().message().find("the volume holding " + o.dir + " is "),
            std::string::npos)
      << spool.status();
  EXPECT_NE(spool.status().message().find("the audit spool needs at least"), std::string::npos)
      << spool.status();
  EXPECT_FALSE(std::filesystem::exists(o.dir + "/journal"));  // nothing was allocated
}

// The event types in `chunks`, in order.
std::vector<std::string> Types(const std::vector<EventChunk>& chunks) {
  std::vector<std::string> out;
  for (const auto& c : chunks) {
    auto events = audit::DecodeEvents(c.records, 100000);
    EXPECT_TRUE(events.ok());
    if (!events.ok()) continue;
    for (const auto& e : *events) out.push_back(e.type());
  }
  return out;
}

// A full disk (or a quota, a read-only or failing file system: the same error path) refuses new
// sessions and keeps refusing them — also while nothing is written — until the spool takes writes
// again, tried every retry interval; events go on meanwhile (they are sent from memory), and the
// ones the spool could not take are written when it can, in order: a restart then finds them all.
// The trail says when the agent's own copy failed and when it recovered.
TEST(EventSinkSpool, AFullDiskRefusesNewSessionsUntilItTakesWritesAgainAndNothingIsLost) {
  std::atomic<bool> full{false};
  Spool::Options o;
  o.dir = FreshDir();
  o.retry_interval = absl::Milliseconds(50);
  o.write_file = [&](int fd, const void* data, size_t size) -> ssize_t {
    if (full) {
      errno = ENOSPC;
      return -1;
    }
    return ::write(fd, data, size);
  };
  const std::string dir = o.dir;
  std::vector<EventChunk> sent;
  uint64_t last = 0;
  {
    SpooledSink spooled(o);
    ASSERT_NE(spooled.spool, nullptr);
    EventSink& sink = spooled.sink;
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
    ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(10)));
    EXPECT_FALSE(sink.Full());

    full = true;
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
    ASSERT_TRUE(Eventually([&] { return sink.Full(); }));
    EXPECT_NE(sink.RefusalReason().find(std::strerror(ENOSPC)), std::string::npos)
        << sink.RefusalReason();
    EXPECT_EQ(sink.stats().refusing, sink.RefusalReason());
    EXPECT_GT(sink.stats().spool_error_since_ms, 0);
    // Rounds with nothing new to write do not end the refusal (the disk has not shown it has room).
    absl::SleepFor(absl::Milliseconds(400));
    EXPECT_TRUE(sink.Full());
    // Running sessions go on: their events are queued and sent.
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(sink.Emit("statement", "s2", "{}"));
    ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(10)));
    while (auto c = sink.TakeChunk())
      sent.push_back(*c);  // not acknowledged: the control plane is away
    EXPECT_GE(sink.stats().unwritten_events, 20u);

    full = false;
    ASSERT_TRUE(Eventually([&] { return !sink.Full(); }));
    EXPECT_EQ(sink.RefusalReason(), "");
    EXPECT_EQ(sink.stats().unwritten_events, 0u);
    ASSERT_TRUE(sink.Emit("statement", "s3", "{}"));
    ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(10)));
    while (auto c = sink.TakeChunk()) sent.push_back(*c);
    last = sent.back().last_sequence;
  }
  const std::vector<std::string> types = Types(sent);
  auto failed = std::find(types.begin(), types.end(), "audit_spool_failed");
  auto recovered = std::find(types.begin(), types.end(), "audit_spool_recovered");
  EXPECT_NE(failed, types.end());
  EXPECT_NE(recovered, types.end());
  EXPECT_LT(failed, recovered);

  // Everything sent (the control plane never acknowledged it) is on disk, in order.
  SpooledSink again(dir);
  ASSERT_NE(again.spool, nullptr);
  std::string head;
  uint64_t got_last = 0;
  EXPECT_EQ(TakeChained(again.sink, &head, &got_last), types.size());
  EXPECT_EQ(got_last, last);
}

// A failing disk (an I/O error) with nothing left to write — everything the spool could not take
// was acknowledged by the control plane — is probed: the refusal ends only when the volume takes
// a write and a sync again.
TEST(EventSinkSpool, AFailingDiskWithNothingLeftToWriteIsProbedUntilItWorks) {
  std::atomic<bool> failing{false};
  Spool::Options o;
  o.dir = FreshDir();
  o.retry_interval = absl::Milliseconds(50);
  o.write_file = [&](int fd, const void* data, size_t size) -> ssize_t {
    if (failing) {
      errno = EIO;
      return -1;
    }
    return ::write(fd, data, size);
  };
  SpooledSink spooled(std::move(o));
  ASSERT_NE(spooled.spool, nullptr);
  EventSink& sink = spooled.sink;
  failing = true;
  ASSERT_TRUE(sink.Emit("statement", "s1", "{}"));
  ASSERT_TRUE(Eventually([&] { return sink.Full(); }));
  EXPECT_NE(sink.RefusalReason().find(std::strerror(EIO)), std::string::npos)
      << sink.RefusalReason();
  // Sent and acknowledged, event of the failure included: nothing is left to write.
  ASSERT_TRUE(Eventually([&] {
    while (auto c = sink.TakeChunk()) sink.Ack(c->last_sequence);
    EventSink::Stats st = sink.stats();
    return st.unwritten_events == 0 && st.queued_events == 0 && st.in_flight_events == 0;
  }));
  absl::SleepFor(absl::Milliseconds(300));  // probed, and failing
  EXPECT_TRUE(sink.Full());
  failing = false;
  EXPECT_TRUE(Eventually([&] { return !sink.Full(); }));
}

// A chunk being sent is not held in memory a second time once it is in a segment; a broken
// stream sends the same records again, read back from the segment.
TEST(EventSinkSpool, AChunkInFlightIsReadBackFromTheSegmentForAResend) {
  std::unique_ptr<Spool> spool = OpenFresh();
  ASSERT_NE(spool, nullptr);
  EventSink sink(1 << 20, 4096);
  sink.StartSpooling(spool.get());
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(sink.Emit("statement", "s1", "{\"n\":" + std::to_string(i) + "}"));
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
    while (!sink.Emit("statement", "s1", body))
      ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(5)));
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

// Copies the records of `chunk` into `journal`, as Emit does.
void Journal(Journal* journal, const EventChunk& chunk) {
  audit::RecordReader r(chunk.records);
  for (size_t at = 0; !r.done(); at = r.offset()) {
    ASSERT_TRUE(r.Next().ok());
    ASSERT_TRUE(journal->Append(absl::string_view(chunk.records).substr(at, r.offset() - at)));
  }
}

// A new agent killed before its first segment write (or whose disk was full from the start) has
// nothing on disk but its journal: its first events come back from there.
TEST(Spool, TheFirstEventsOfANewSpoolSurviveAKillFromTheJournal) {
  Spool::Options o;
  o.dir = FreshDir();
  o.journal_half_bytes = 4096;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    Journal((*spool)->journal(), Chunk(1000, 3));
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ((*spool)->last_sequence(), 1002u);
  EXPECT_EQ(Sequences(Recovered(**spool)), (std::vector<uint64_t>{1000, 1001, 1002}));
}

// An agent restarted (its sequences jump: they start from the time) and killed again before its
// first segment write: its events come back from the journal, after the segments'.
TEST(Spool, EventsOfARestartedAgentOnlyInTheJournalSurviveAKill) {
  Spool::Options o;
  o.dir = FreshDir();
  o.journal_half_bytes = 4096;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    ASSERT_TRUE((*spool)->Append(Chunk(10, 3)).ok());
  }
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    Journal((*spool)->journal(), Chunk(5000, 2));
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ(Sequences(Recovered(**spool)), (std::vector<uint64_t>{10, 11, 12, 5000, 5001}));
}

// A half that overflowed takes no record after it (a gap inside a half could not be told from a
// restart), and recovery stops at the gap between the halves: nothing after it is chained wrong.
TEST(Spool, TheJournalStopsAtTheGapAnOverflowLeft) {
  Spool::Options o;
  o.dir = FreshDir();
  o.journal_half_bytes = 4096;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    ::sluice::agent::Journal* j = (*spool)->journal();
    EventChunk first = Chunk(1, 3);
    Journal(j, first);
    EXPECT_FALSE(j->Append(std::string(5000, 'x')));  // 4 is left out
    EventChunk small = Chunk(5, 1);
    EXPECT_FALSE(j->Append(small.records));  // it would fit, but the half is closed
    j->Switch();
    Journal(j, Chunk(6, 2));
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ(Sequences(Recovered(**spool)), (std::vector<uint64_t>{1, 2, 3}));
}

// An agent restarted on a full disk after a kill: what only its journal held cannot be written
// at Open, so the spool opens anyway (the sink refuses new sessions), keeps those records in
// memory and in the journal (a second kill loses nothing either), and the sink writes them when
// the disk takes writes again.
TEST(EventSinkSpool, AStartOnAFullDiskKeepsTheJournalsRecordsUntilTheyCanBeWritten) {
  std::atomic<bool> full{false};
  Spool::Options o;
  o.dir = FreshDir();
  o.retry_interval = absl::Milliseconds(50);
  o.write_file = [&](int fd, const void* data, size_t size) -> ssize_t {
    if (full) {
      errno = ENOSPC;
      return -1;
    }
    return ::write(fd, data, size);
  };
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    ASSERT_TRUE((*spool)->Append(Chunk(10, 3)).ok());
    Journal((*spool)->journal(), Chunk(13, 4));  // killed before these reached a segment
  }
  full = true;
  std::vector<uint64_t> journaled = {13, 14, 15, 16};
  for (uint64_t restart : {1000, 2000}) {  // killed again, still full: the journal still has them
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    EXPECT_NE((*spool)->open_status().message().find(std::strerror(ENOSPC)), std::string::npos)
        << (*spool)->open_status();
    std::vector<EventChunk> recovered = (*spool)->TakeRecovered();
    ASSERT_EQ(recovered.size(), 2u);
    EXPECT_TRUE(recovered[0].on_disk);
    EXPECT_FALSE(recovered[1].on_disk);
    EXPECT_EQ(Sequences({recovered[1]}), journaled);
    // This run's own events (its sequences start higher) reach only the journal too.
    Journal((*spool)->journal(), Chunk(restart, 2));
    journaled.push_back(restart);
    journaled.push_back(restart + 1);
  }
  {
    SpooledSink spooled(o);
    ASSERT_NE(spooled.spool, nullptr);
    EXPECT_TRUE(spooled.sink.Full());
    EXPECT_NE(spooled.sink.RefusalReason().find(std::strerror(ENOSPC)), std::string::npos);
    EXPECT_EQ(spooled.sink.stats().unwritten_events, 8u);
    full = false;
    ASSERT_TRUE(Eventually(
        [&] { return !spooled.sink.Full() && spooled.sink.stats().unwritten_events == 0; }));
  }
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_TRUE((*spool)->open_status().ok());
  std::vector<uint64_t> seqs = Sequences(Recovered(**spool));
  // 10..16 and each restart's own, then what the sink emitted (its failure and recovery).
  ASSERT_GE(seqs.size(), 13u);
  EXPECT_EQ(std::vector<uint64_t>(seqs.begin(), seqs.begin() + 11),
            (std::vector<uint64_t>{10, 11, 12, 13, 14, 15, 16, 1000, 1001, 2000, 2001}));
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
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

// A machine crash lost the tail of the spool (written, not yet synced) after the control plane had
// stored it: the agent's next process says where its chain starts (the spool's last record), and
// when the control plane reports the resume, the trail says so in an `audit_chain_resumed` event
// that goes on from that record, once.
TEST(EventSinkSpool, ASpoolThatLostItsTailSaysWhereItsChainStartsAndReportsTheResume) {
  const std::string dir = FreshDir();
  std::string head;
  uint64_t last = 0;
  {
    SpooledSink spooled(dir);
    ASSERT_NE(spooled.spool, nullptr);
    EXPECT_EQ(spooled.sink.chain_start().sequence, 0u);  // a new spool: nothing to go on from
    EXPECT_EQ(spooled.sink.chain_start().hash, "");
    for (int i = 0; i < 10; ++i)
      ASSERT_TRUE(spooled.sink.Emit("statement", "s1", absl::StrCat("{\"n\":", i, "}")));
    ASSERT_TRUE(spooled.sink.WaitUntilSpooled(absl::Seconds(10)));
    EXPECT_EQ(TakeChained(spooled.sink, &head, &last), 10u);
    spooled.sink.Ack(last);  // the control plane holds all ten
  }
  // The crash: the segment keeps its first four records, the journal's pages are gone.
  std::string segment;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".seg") segment = entry.path();
  }
  ASSERT_FALSE(segment.empty());
  std::string data;
  {
    std::ifstream in(segment, std::ios::binary);
    data.assign(std::istreambuf_iterator<char>(in), {});
  }
  audit::RecordReader reader(data);
  std::string kept_head;
  uint64_t kept_last = 0;
  for (int i = 0; i < 4; ++i) {
    auto payload = reader.Next();
    ASSERT_TRUE(payload.ok());
    v1::AuditEvent e;
    ASSERT_TRUE(e.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
    kept_head = audit::ChainHash(*payload);
    kept_last = e.sequence();
  }
  ASSERT_EQ(::truncate(segment.c_str(), static_cast<off_t>(reader.offset())), 0);
  ASSERT_EQ(::unlink((dir + "/journal").c_str()), 0);

  SpooledSink again(dir);
  ASSERT_NE(again.spool, nullptr);
  EventSink& sink = again.sink;
  const EventSink::ChainStart start = sink.chain_start();
  EXPECT_EQ(start.sequence, kept_last);
  EXPECT_EQ(start.hash, kept_head);
  EXPECT_GT(start.own_from, last);  // numbered from the clock: above what the control plane holds
  // A resume that is not about this start is ignored.
  EXPECT_FALSE(sink.ChainResumed(kept_last - 1, kept_head, last, 6, 1234));
  EXPECT_FALSE(sink.ChainResumed(kept_last, std::string(32, 'x'), last, 6, 1234));
  EXPECT_EQ(sink.stats().emitted, 0u);
  // Told twice (a stream that started again): one event.
  EXPECT_TRUE(sink.ChainResumed(kept_last, kept_head, last, 6, 1234));
  EXPECT_TRUE(sink.ChainResumed(kept_last, kept_head, last, 6, 1234));
  EXPECT_EQ(sink.stats().emitted, 1u);
  ASSERT_TRUE(sink.WaitUntilSpooled(absl::Seconds(10)));
  sink.Ack(last);  // the control plane's first acknowledgement: what the spool still holds goes
  std::vector<v1::AuditEvent> events;
  while (auto chunk = sink.TakeChunk()) {
    audit::RecordReader r(chunk->records);
    while (!r.done()) {
      auto payload = r.Next();
      ASSERT_TRUE(payload.ok());
      v1::AuditEvent& e = events.emplace_back();
      ASSERT_TRUE(e.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
    }
  }
  ASSERT_EQ(events.size(), 1u);
  const v1::AuditEvent& resumed = events[0];
  EXPECT_EQ(resumed.type(), "audit_chain_resumed");
  EXPECT_EQ(resumed.session_id(), "");
  EXPECT_GT(resumed.sequence(), last);
  EXPECT_EQ(resumed.prev_hash(), kept_head);  // the chain goes on from the spool's last record
  EXPECT_NE(resumed.json().find(absl::StrCat("\"resumed_after_sequence\":", kept_last)),
            std::string::npos)
      << resumed.json();
  EXPECT_NE(resumed.json().find(absl::StrCat("\"held_through_sequence\":", last)),
            std::string::npos);
  EXPECT_NE(resumed.json().find("\"lost_records\":6"), std::string::npos);
}

// A page of a mapped file that the kernel cannot read or keep — here the file cut short under the
// mapping, which makes every page past its end a SIGBUS — is caught: the write lands on a
// private page, the file is noted as faulted, and Repair allocates it again and maps it anew
// with what the memory held.
TEST(MappedFile, AFaultingPageIsCaughtAndRepairedWithTheContentInMemory) {
  const std::string dir = FreshDir();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/mapped";
  auto file = MappedFile::Open(path, 4 * 4096);
  ASSERT_TRUE(file.ok()) << file.status();
  (*file)->data()[3 * 4096] = 'a';
  EXPECT_FALSE((*file)->faulted());
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  (*file)->data()[2 * 4096] = 'b';  // past the end of the file now: SIGBUS, caught
  EXPECT_TRUE((*file)->faulted());
  EXPECT_EQ((*file)->data()[2 * 4096], 'b');
  EXPECT_NE((*file)->FaultMessage().find("I/O error on the memory-mapped pages of " + path),
            std::string::npos);
  ASSERT_TRUE((*file)->Repair().ok());
  EXPECT_FALSE((*file)->faulted());
  EXPECT_EQ(std::filesystem::file_size(path), 4u * 4096);
  (*file)->data()[0] = 'c';
  std::ifstream in(path, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(content.size(), 4u * 4096);
  EXPECT_EQ(content[0], 'c');
  EXPECT_EQ(content[2 * 4096], 'b');   // what the private page held is in the file again
  EXPECT_EQ(content[3 * 4096], '\0');  // cut off with the file: lost, as on the disk
}

// The journal or the in-flight table faulting on the data path neither kills the agent nor goes
// unnoticed: new sessions are refused, the trail records the failure and, once the files are
// mapped anew at a retry, the recovery; every event is sent.
TEST(EventSinkSpool, AFaultingJournalOrInflightTableRefusesUntilMappedAnew) {
  for (const char* name : {"journal", "inflight"}) {
    SCOPED_TRACE(name);
    Spool::Options o;
    o.dir = FreshDir() + "_" + name;
    std::filesystem::remove_all(o.dir);
    o.retry_interval = absl::Milliseconds(50);
    SpooledSink spooled(o);
    ASSERT_NE(spooled.spool, nullptr);
    EventSink& sink = spooled.sink;
    InflightTable* table = spooled.spool->inflight();
    const int slot = table->Acquire("s1", 0);
    ASSERT_EQ(::truncate((o.dir + "/" + name).c_str(), 0), 0);
    table->Begin(slot, "SELECT 1");
    ASSERT_TRUE(sink.Emit("statement", "s1", "{}", false, {},
                          EventSink::Inflight{table, slot, true, false}));
    EXPECT_TRUE(std::string(name) == "journal" ? spooled.spool->journal()->faulted()
                                               : table->faulted());
    std::vector<EventChunk> sent;
    ASSERT_TRUE(Eventually([&] {
      while (auto c = sink.TakeChunk()) {
        sink.Ack(c->last_sequence);
        sent.push_back(std::move(*c));
      }
      const std::vector<std::string> types = Types(sent);
      return std::find(types.begin(), types.end(), "audit_spool_recovered") != types.end();
    })) << absl::StrJoin(Types(sent), ",")
        << " refusing: " << sink.RefusalReason();
    const std::vector<std::string> types = Types(sent);
    EXPECT_EQ(types.front(), "statement");
    EXPECT_NE(std::find(types.begin(), types.end(), "audit_spool_failed"), types.end());
    std::string failed;
    for (const EventChunk& c : sent) {
      auto events = audit::DecodeEvents(c.records, 100000);
      ASSERT_TRUE(events.ok());
      for (const v1::AuditEvent& e : *events) {
        if (e.type() == "audit_spool_failed") failed = e.json();
      }
    }
    EXPECT_NE(failed.find("memory-mapped pages of " + o.dir + "/" + name), std::string::npos)
        << failed;
    EXPECT_EQ(sink.RefusalReason(), "");
    EXPECT_FALSE(table->faulted());
    EXPECT_FALSE(spooled.spool->journal()->faulted());
    EXPECT_EQ(std::filesystem::file_size(o.dir + "/" + name),
              std::string(name) == "journal" ? Journal::FileBytes(o.journal_half_bytes)
                                             : InflightTable::FileBytes(o.inflight_slots));
  }
}

}  // namespace
}  // namespace sluice::agent
