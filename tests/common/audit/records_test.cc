#include "common/audit/records.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include "common/audit/recording.h"
#include "common/zstd_codec.h"

namespace sluice::audit {
namespace {

v1::AuditEvent Event(uint64_t sequence, const std::string& json) {
  v1::AuditEvent e;
  e.set_sequence(sequence);
  e.set_type("statement");
  e.set_session_id("s1");
  e.set_json(json);
  return e;
}

std::string Batch(const std::vector<v1::AuditEvent>& events) {
  std::string out;
  for (const auto& e : events) AppendRecord(&out, e.SerializeAsString());
  return out;
}

// Records written by earlier agents (zlib's crc32) and by this build must check the same way: the
// CRC is the standard CRC-32 whichever library computes it.
TEST(AuditRecords, ChecksumIsStandardCrc32) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the CRC-32 check value
  EXPECT_EQ(Crc32(""), 0u);
  std::string data;
  for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>(i * 131 + i / 7));
  for (size_t n : {1, 7, 63, 64, 65, 700, 4999}) {
    const auto* bytes = reinterpret_cast<const Bytef*>(data.data());
    EXPECT_EQ(Crc32(absl::string_view(data).substr(0, n)), crc32(0L, bytes, static_cast<uInt>(n)))
        << n;
  }
}

// Recording entries read back exactly, at every varint width (1 to 10 bytes).
TEST(AuditRecording, EntriesRoundTripAtEveryVarintWidth) {
  std::string data;
  std::vector<uint64_t> values = {0, 1, 127, 128, 16383, 16384, uint64_t{1} << 35, ~uint64_t{0}};
  std::string payload(300, 'p');
  for (uint64_t v : values) {
    AppendRecordedMessage(&data, kRecordedFromClient, v, 'Q',
                          absl::string_view(payload).substr(0, v % 300));
    AppendRecordedOmission(&data, v, v / 3, v / 5);
  }
  RecordingReader reader(data);
  RecordedEntry e;
  for (uint64_t v : values) {
    ASSERT_TRUE(reader.Next(&e)) << reader.status();
    EXPECT_EQ(e.kind, kRecordedFromClient);
    EXPECT_EQ(e.offset_us, v);
    EXPECT_EQ(e.type, 'Q');
    EXPECT_EQ(e.payload.size(), v % 300);
    ASSERT_TRUE(reader.Next(&e)) << reader.status();
    EXPECT_EQ(e.kind, kRecordedOmitted);
    EXPECT_EQ(e.offset_us, v);
    EXPECT_EQ(e.messages, v / 3);
    EXPECT_EQ(e.bytes, v / 5);
  }
  EXPECT_FALSE(reader.Next(&e));
  EXPECT_TRUE(reader.status().ok()) << reader.status();
}

// A slice long enough is compressed; it reads back as the same entries. Short slices, slices that
// do not compress, and damaged or oversized frames are told apart and named.
TEST(AuditRecording, CompressedSlicesReadBackAsTheirEntries) {
  std::string entries;
  for (int i = 0; i < 100; ++i)
    AppendRecordedMessage(&entries, kRecordedToClient, i, 'D', "a row of the result");
  std::string scratch;
  absl::string_view slice = CompressSlice(entries, &scratch);
  ASSERT_EQ(slice.data(), scratch.data());
  EXPECT_LT(slice.size(), entries.size());
  std::string buffer;
  auto back = SliceEntries(slice, &buffer);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, entries);

  const std::string short_slice = entries.substr(0, kCompressSliceFrom - 1);
  EXPECT_EQ(CompressSlice(short_slice, &scratch).data(), short_slice.data());
  back = SliceEntries(short_slice, &buffer);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->data(), short_slice.data());

  std::string noise;  // does not compress: travels as it is
  uint32_t x = 12345;
  for (int i = 0; i < 4000; ++i) {
    x = x * 1103515245u + 12345u;
    noise.push_back(static_cast<char>(x >> 24));
  }
  EXPECT_EQ(CompressSlice(noise, &scratch).data(), noise.data());

  std::string damaged(CompressSlice(entries, &scratch));
  damaged.resize(damaged.size() - 3);
  back = SliceEntries(damaged, &buffer);
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(back.status().message().find("a compressed recording slice"), std::string::npos)
      << back.status();

  // More than an event can carry is refused, not inflated.
  std::string big(kMaxRecordBytes + 1, 'b');
  std::string frame;
  ASSERT_TRUE(ZstdCompressor(1, false).AppendFrame(big, &frame).ok());
  back = SliceEntries(frame, &buffer);
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(back.status().message().find("past the cap"), std::string::npos) << back.status();
}

TEST(AuditRecords, RoundTrip) {
  std::string data = Batch({Event(1, R"({"statement":"select 1"})"), Event(2, ""), Event(5, "{}")});
  auto events = DecodeEvents(data, 10);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[0].json(), R"({"statement":"select 1"})");
  EXPECT_EQ((*events)[2].sequence(), 5u);
  EXPECT_TRUE(DecodeEvents("", 10)->empty());
}

// A vector decoded into again holds exactly the new batch: nothing of the previous one (a field
// the new event does not set, an event past the new count) is left over.
TEST(AuditRecords, DecodingIntoAUsedVectorLeavesNothingBehind) {
  v1::AuditEvent recorded = Event(1, R"({"statement":"select 1"})");
  recorded.set_recording("Q select 1");
  recorded.set_recording_bytes(10);
  recorded.set_failed(true);
  std::vector<v1::AuditEvent> events;
  std::vector<size_t> offsets;
  ASSERT_TRUE(
      DecodeEventsInto(Batch({recorded, Event(2, "{}"), Event(3, "{}")}), 10, &events, &offsets)
          .ok());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].recording(), "Q select 1");

  ASSERT_TRUE(
      DecodeEventsInto(Batch({Event(7, R"({"x":1})"), Event(8, "")}), 10, &events, &offsets).ok());
  ASSERT_EQ(events.size(), 2u);
  ASSERT_EQ(offsets.size(), 2u);
  EXPECT_EQ(events[0].sequence(), 7u);
  EXPECT_EQ(events[0].json(), R"({"x":1})");
  EXPECT_TRUE(events[0].recording().empty());
  EXPECT_EQ(events[0].recording_bytes(), 0u);
  EXPECT_FALSE(events[0].failed());
  EXPECT_EQ(events[1].sequence(), 8u);
  EXPECT_TRUE(events[1].json().empty());

  // Refused batches are refused the same way as by DecodeEvents.
  EXPECT_FALSE(DecodeEventsInto(Batch({Event(9, ""), Event(9, "")}), 10, &events).ok());
  EXPECT_FALSE(DecodeEventsInto(Batch({Event(1, ""), Event(2, "")}), 1, &events).ok());
}

TEST(AuditRecords, EveryTruncatedPrefixIsRefused) {
  std::string data = Batch({Event(1, "{\"a\":1}"), Event(2, "{\"b\":2}")});
  size_t first_end = kRecordHeaderBytes + Event(1, "{\"a\":1}").ByteSizeLong();
  for (size_t n = 1; n < data.size(); ++n) {
    auto events = DecodeEvents(absl::string_view(data).substr(0, n), 10);
    if (n == first_end) {
      EXPECT_TRUE(events.ok()) << n;  // a clean record boundary
      continue;
    }
    ASSERT_FALSE(events.ok()) << n;
    EXPECT_EQ(events.status().code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_NE(events.status().message().find("truncated"), std::string::npos) << events.status();
  }
}

TEST(AuditRecords, EveryFlippedPayloadByteIsCaught) {
  std::string data = Batch({Event(1, R"({"statement":"select 1"})")});
  for (size_t i = kRecordHeaderBytes; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] ^= 0x01;
    auto events = DecodeEvents(bad, 10);
    ASSERT_FALSE(events.ok()) << i;
    EXPECT_NE(events.status().message().find("checksum mismatch"), std::string::npos)
        << events.status();
  }
}

TEST(AuditRecords, LimitsAndOrderAreEnforced) {
  std::string huge(8, '\0');
  huge[3] = 0x7f;  // length 0x7f000000
  auto over = DecodeEvents(huge, 10);
  EXPECT_NE(over.status().message().find("over the limit"), std::string::npos) << over.status();

  auto backwards = DecodeEvents(Batch({Event(5, ""), Event(5, "")}), 10);
  EXPECT_NE(backwards.status().message().find("does not follow"), std::string::npos)
      << backwards.status();

  auto many = DecodeEvents(Batch({Event(1, ""), Event(2, ""), Event(3, "")}), 2);
  EXPECT_NE(many.status().message().find("more than 2"), std::string::npos) << many.status();

  v1::AuditEvent untyped = Event(1, "");
  untyped.clear_type();
  auto missing = DecodeEvents(Batch({untyped}), 10);
  EXPECT_NE(missing.status().message().find("type or session id"), std::string::npos)
      << missing.status();

  std::string garbage;
  AppendRecord(&garbage, "\xff\xff\xff");
  auto not_event = DecodeEvents(garbage, 10);
  EXPECT_NE(not_event.status().message().find("not an AuditEvent"), std::string::npos)
      << not_event.status();
}

}  // namespace
// The chain filled in afterwards (ChainRecords) gives byte for byte the records an agent that
// hashes as it writes would have: the first event without prev_hash, every later one naming the
// hash of the one before, CRCs valid.
TEST(AuditRecords, ChainRecordsFillsInTheSameChainAsHashingInline) {
  std::vector<v1::AuditEvent> events = {Event(1, "{\"a\":1}"), Event(2, "{\"b\":2}"),
                                        Event(3, "{\"c\":3}")};
  events[2].set_recording(std::string("\x01recorded", 9));
  events[2].set_recording_bytes(9);
  std::string inline_records, head;
  for (v1::AuditEvent e : events) {
    if (!head.empty()) e.set_prev_hash(head);
    std::string payload = e.SerializeAsString();
    AppendRecord(&inline_records, payload);
    head = ChainHash(payload);
  }
  std::string later;
  for (size_t i = 0; i < events.size(); ++i) {
    v1::AuditEvent e = events[i];
    if (i > 0) e.set_prev_hash(std::string(32, '\0'));  // the placeholder
    AppendRecord(&later, e.SerializeAsString());
  }
  std::string later_head;
  ASSERT_TRUE(ChainRecords(&later, &later_head).ok());
  EXPECT_EQ(later, inline_records);
  EXPECT_EQ(later_head, head);
  RecordReader reader(later);
  int n = 0;
  while (!reader.done()) {
    ASSERT_TRUE(reader.Next().ok());
    ++n;
  }
  EXPECT_EQ(n, 3);
}

// A chain goes on across calls (one sealed chunk after another) from the head given.
TEST(AuditRecords, ChainRecordsContinuesFromTheHeadGiven) {
  std::string head = ChainHash("the record before");
  v1::AuditEvent e = Event(7, "{}");
  e.set_prev_hash(std::string(32, '\0'));
  std::string records;
  AppendRecord(&records, e.SerializeAsString());
  const std::string before = head;
  ASSERT_TRUE(ChainRecords(&records, &head).ok());
  v1::AuditEvent back;
  ASSERT_TRUE(back.ParseFromString(std::string(RecordPayload(records, 0))));
  EXPECT_EQ(back.prev_hash(), before);
  EXPECT_EQ(head, ChainHash(RecordPayload(records, 0)));
}

TEST(AuditRecords, ChainRecordsRefusesWhatItCannotChain) {
  v1::AuditEvent e = Event(1, "{}");
  e.set_prev_hash(std::string(32, '\0'));
  std::string records;
  AppendRecord(&records, e.SerializeAsString());
  std::string no_head;
  std::string copy = records;
  absl::Status st = ChainRecords(&copy, &no_head);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("no chain head"), std::string::npos) << st.message();

  std::string head = ChainHash("x");
  std::string truncated = records.substr(0, records.size() - 3);
  st = ChainRecords(&truncated, &head);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("offset 0"), std::string::npos) << st.message();

  v1::AuditEvent short_hash = Event(2, "{}");
  short_hash.set_prev_hash("abc");
  std::string bad;
  AppendRecord(&bad, short_hash.SerializeAsString());
  st = ChainRecords(&bad, &head);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not 32 bytes"), std::string::npos) << st.message();
}

}  // namespace sluice::audit
