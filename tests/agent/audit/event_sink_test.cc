#include "agent/audit/event_sink.h"

#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/audit/recording.h"
#include "common/audit/records.h"
#include "common/clock.h"

namespace sluice::agent {
namespace {

std::vector<v1::AuditEvent> Decode(const EventChunk& chunk) {
  auto events = audit::DecodeEvents(chunk.records, 1 << 20);
  EXPECT_TRUE(events.ok()) << events.status();
  return events.ok() ? *events : std::vector<v1::AuditEvent>{};
}

TEST(EventSink, EventsTravelInOrderedChunks) {
  EventSink sink(1 << 20, 200);  // small chunks: a few events each
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(sink.Emit("statement", "s1", absl::StrCat(R"({"n":)", i, "}"), i == 3));
  }
  EXPECT_EQ(sink.stats().queued_events, 10u);
  std::vector<v1::AuditEvent> all;
  while (auto chunk = sink.TakeChunk()) {
    auto events = Decode(*chunk);
    ASSERT_EQ(events.size(), chunk->count);
    EXPECT_EQ(events.front().sequence(), chunk->first_sequence);
    EXPECT_EQ(events.back().sequence(), chunk->last_sequence);
    all.insert(all.end(), events.begin(), events.end());
  }
  ASSERT_EQ(all.size(), 10u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].json(), absl::StrCat(R"({"n":)", i, "}"));
    EXPECT_EQ(all[i].type(), "statement");
    EXPECT_EQ(all[i].session_id(), "s1");
    EXPECT_EQ(all[i].failed(), i == 3);
    if (i > 0) {
      EXPECT_EQ(all[i].sequence(), all[i - 1].sequence() + 1);
    }
  }
  EXPECT_EQ(sink.stats().in_flight_events, 10u);
  EXPECT_EQ(sink.stats().queued_events, 0u);
}

// A recording slice travels compressed once it is long enough; a short one, and one too large
// for an event (replaced by an omission entry that counts it), as before.
TEST(EventSink, RecordingSlicesTravelCompressedAndReadBackAsRecorded) {
  EventSink sink(8 << 20, 1 << 20);
  std::string rows;
  for (int i = 0; i < 100; ++i)
    audit::AppendRecordedMessage(&rows, 'S', 1000 + i, 'D', absl::StrCat("row ", i, " of 100"));
  const std::string short_slice = rows.substr(0, 40);
  std::string huge;
  while (huge.size() <= audit::kMaxRecordBytes)
    audit::AppendRecordedMessage(&huge, 'S', 1, 'D', std::string(1000, 'h'));
  ASSERT_TRUE(sink.Emit("statement", "s1", "{}", false, rows));
  ASSERT_TRUE(sink.Emit("statement", "s1", "{}", false, short_slice));
  ASSERT_TRUE(sink.Emit("statement", "s1", "{}", false, huge));
  std::vector<v1::AuditEvent> all;
  while (auto chunk = sink.TakeChunk()) {
    auto events = Decode(*chunk);
    all.insert(all.end(), events.begin(), events.end());
  }
  ASSERT_EQ(all.size(), 3u);
  EXPECT_LT(all[0].recording().size(), rows.size() / 2);
  EXPECT_EQ(all[0].recording_bytes(), all[0].recording().size());
  std::string buffer;
  auto entries = audit::SliceEntries(all[0].recording(), &buffer);
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ(*entries, rows);
  EXPECT_EQ(all[1].recording(), short_slice);
  std::string omitted;
  audit::AppendRecordedOmission(&omitted, 0, 1, huge.size());
  EXPECT_EQ(all[2].recording(), omitted);
}

TEST(EventSink, AckDropsAndRequeueResendsFromTheFirstUnacknowledged) {
  EventSink sink(1 << 20, 100);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(sink.Emit("statement", "s", "{}"));
  auto first = sink.TakeChunk();
  auto second = sink.TakeChunk();
  ASSERT_TRUE(first && second);
  sink.Ack(first->last_sequence);
  EXPECT_EQ(sink.stats().in_flight_events, second->count);
  // The stream breaks: the unacknowledged chunk comes back before anything newer.
  ASSERT_TRUE(sink.Emit("statement", "s", R"({"late":true})"));
  sink.Requeue();
  auto again = sink.TakeChunk();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->first_sequence, second->first_sequence);
  EXPECT_EQ(again->records.substr(0, second->records.size()), second->records);
  uint64_t last = again->last_sequence;
  while (auto more = sink.TakeChunk()) last = more->last_sequence;
  sink.Ack(last);
  EventSink::Stats st = sink.stats();
  EXPECT_EQ(st.queued_events + st.in_flight_events, 0u);
  EXPECT_EQ(st.bytes, 0u);
  EXPECT_EQ(st.emitted, 7u);
}

TEST(EventSink, TheOldestUnacknowledgedEventGivesTheDeliveryLag) {
  EventSink sink(1 << 20, 100);
  EXPECT_EQ(sink.stats().oldest_unacked_ms, 0);  // nothing waits
  const int64_t before = NowUnixMs();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(sink.Emit("statement", "s", "{}"));
  const int64_t oldest = sink.stats().oldest_unacked_ms;
  EXPECT_GE(oldest, before);
  EXPECT_LE(oldest, NowUnixMs());
  auto first = sink.TakeChunk();
  ASSERT_TRUE(first);
  EXPECT_EQ(sink.stats().oldest_unacked_ms, oldest);  // in flight is not acknowledged
  sink.Ack(first->last_sequence);
  EXPECT_GE(sink.stats().oldest_unacked_ms, oldest);  // the next chunk's first event
  while (auto chunk = sink.TakeChunk()) sink.Ack(chunk->last_sequence);
  EXPECT_EQ(sink.stats().oldest_unacked_ms, 0);
}

TEST(EventSink, FullBufferRefusesInsteadOfDropping) {
  EventSink sink(1000, 300);
  int accepted = 0;
  while (sink.Emit("statement", "s", std::string(100, 'x'))) ++accepted;
  EXPECT_GT(accepted, 3);
  EXPECT_TRUE(sink.Full());
  // Acknowledging what was sent makes room again.
  uint64_t last = 0;
  while (auto c = sink.TakeChunk()) last = c->last_sequence;
  sink.Ack(last);
  EXPECT_FALSE(sink.Full());
  EXPECT_TRUE(sink.Emit("statement", "s", "{}"));
}

// More emitters than this machine has cores, so that they meet in the sink's lock: every event
// gets the next sequence and names its predecessor's hash, whichever thread emitted it.
TEST(EventSink, ConcurrentEmittersGetConsecutiveSequencesInOneChain) {
  EventSink sink;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&sink, t] {
      for (int i = 0; i < 2000; ++i)
        ASSERT_TRUE(sink.Emit("statement", absl::StrCat("s", t), "{}"));
    });
  }
  for (auto& th : threads) th.join();
  uint64_t previous = 0;
  std::string previous_hash;
  size_t total = 0;
  while (auto chunk = sink.TakeChunk()) {
    audit::RecordReader reader(chunk->records);
    while (!reader.done()) {
      auto payload = reader.Next();
      ASSERT_TRUE(payload.ok()) << payload.status();
      v1::AuditEvent e;
      ASSERT_TRUE(e.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
      if (previous != 0) {
        EXPECT_EQ(e.sequence(), previous + 1);
        EXPECT_EQ(e.prev_hash(), previous_hash) << "at sequence " << e.sequence();
      }
      previous = e.sequence();
      previous_hash = audit::ChainHash(*payload);
      ++total;
    }
  }
  EXPECT_EQ(total, 8000u);
}

}  // namespace
}  // namespace sluice::agent
