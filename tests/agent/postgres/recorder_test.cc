#include "agent/postgres/recorder.h"

#include <gtest/gtest.h>

#include <vector>

#include "absl/time/clock.h"
#include "common/audit/recording.h"
#include "common/wire/postgres/messages.h"

namespace sluice::agent::postgres {

using wire::postgres::CommandComplete;
using wire::postgres::DataRow;
using wire::postgres::Query;
using wire::postgres::RowDescription;

namespace {

std::vector<audit::RecordedEntry> Entries(const std::string& data) {
  std::vector<audit::RecordedEntry> out;
  audit::RecordingReader reader(data);
  audit::RecordedEntry e;
  while (reader.Next(&e)) out.push_back(e);
  EXPECT_TRUE(reader.status().ok()) << reader.status();
  return out;
}

TEST(SessionRecorder, KeepsTheFirstRowsOfEachResultAndCountsTheRest) {
  SessionRecorder r(RecordingLimits{true, 2, 1 << 20}, absl::Now());
  r.FromClient('Q', Query{"select x from t"}.Encode().substr(5), absl::Now());
  std::string wire = RowDescription{{{"x", 0, 0, 25, -1, -1, 0}}}.Encode();
  for (int i = 0; i < 5; ++i) wire += DataRow{{std::string("row") + char('0' + i)}}.Encode();
  wire += CommandComplete{"SELECT 5"}.Encode();
  r.ToClient(wire);
  // A second result starts over.
  r.ToClient(DataRow{{std::string("again")}}.Encode() + CommandComplete{"SELECT 1"}.Encode());
  std::string data(r.data());
  r.Clear();
  EXPECT_EQ(r.size(), 0u);
  auto e = Entries(data);
  ASSERT_EQ(e.size(), 8u);
  EXPECT_EQ(e[0].kind, audit::kRecordedFromClient);
  EXPECT_EQ(e[0].type, 'Q');
  EXPECT_EQ(e[1].type, 'T');
  EXPECT_EQ(e[2].type, 'D');
  EXPECT_EQ(e[3].type, 'D');
  EXPECT_EQ(e[4].kind, audit::kRecordedOmitted);  // rows 3..5, before the CommandComplete
  EXPECT_EQ(e[4].messages, 3u);
  EXPECT_EQ(e[5].type, 'C');
  EXPECT_EQ(e[6].type, 'D');
  EXPECT_EQ(e[7].type, 'C');
  EXPECT_LE(e[0].offset_us, e[7].offset_us);
}

TEST(SessionRecorder, ByteLimitAndOffAndTornWrites) {
  SessionRecorder bytes(RecordingLimits{true, 100, 10}, absl::Now());
  bytes.ToClient(DataRow{{std::string(8, 'a')}}.Encode() + DataRow{{std::string(8, 'b')}}.Encode() +
                 CommandComplete{"SELECT 2"}.Encode());
  auto e = Entries(std::string(bytes.data()));
  // Neither row fits in 10 bytes (a DataRow of one 8-byte value has a 14-byte payload).
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].kind, audit::kRecordedOmitted);
  EXPECT_EQ(e[0].messages, 2u);

  SessionRecorder off(RecordingLimits{false, 100, 100}, absl::Now());
  off.ToClient(CommandComplete{"SELECT 2"}.Encode());
  off.FromClient('Q', "x", absl::Now());
  EXPECT_EQ(off.data(), "");

  SessionRecorder torn(RecordingLimits{}, absl::Now());
  torn.ToClient(CommandComplete{"SELECT 2"}.Encode().substr(0, 6));
  e = Entries(std::string(torn.data()));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, audit::kRecordedOmitted);
  EXPECT_EQ(e[0].bytes, 6u);
}

}  // namespace
}  // namespace sluice::agent::postgres
