#include "agent/session/recorder.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "common/audit/recording.h"

namespace sluice::agent::session {
namespace {

// A toy protocol: a message is its type byte, its payload and '\n'; type 'r' is a row.
struct LineFraming {
  static bool IsData(char type) { return type == 'r'; }
  static bool Next(absl::string_view* wire, char* type, absl::string_view* payload) {
    size_t end = wire->find('\n');
    if (wire->empty() || end == absl::string_view::npos) return false;
    *type = (*wire)[0];
    *payload = wire->substr(1, end - 1);
    wire->remove_prefix(end + 1);
    return true;
  }
};
using LineRecorder = FramedRecorder<LineFraming>;

std::vector<audit::RecordedEntry> Entries(absl::string_view data) {
  std::vector<audit::RecordedEntry> out;
  audit::RecordingReader reader(data);
  audit::RecordedEntry e;
  while (reader.Next(&e)) out.push_back(e);
  EXPECT_TRUE(reader.status().ok()) << reader.status();
  return out;
}

TEST(FramedRecorder, TheProtocolsFramingDecidesMessagesAndRows) {
  LineRecorder r(RecordingLimits{true, 1, 1 << 20}, absl::Now());
  r.FromClient('q', "select", absl::Now());
  r.ToClient("hcols\nrone\nrtwo\nrthree\ndone\n");
  auto e = Entries(r.data());
  ASSERT_EQ(e.size(), 5u);
  EXPECT_EQ(e[0].kind, audit::kRecordedFromClient);
  EXPECT_EQ(e[0].type, 'q');
  EXPECT_EQ(e[0].payload, "select");
  EXPECT_EQ(e[1].type, 'h');
  EXPECT_EQ(e[2].type, 'r');
  EXPECT_EQ(e[2].payload, "one");
  EXPECT_EQ(e[3].kind, audit::kRecordedOmitted);  // "two" and "three", counted before the end
  EXPECT_EQ(e[3].messages, 2u);
  EXPECT_EQ(e[3].bytes, 8u);
  EXPECT_EQ(e[4].type, 'd');
}

TEST(FramedRecorder, UnframedBytesAreCountedAndClearStartsOver) {
  LineRecorder r(RecordingLimits{}, absl::Now());
  r.ToClient("aok\nbtorn");
  auto e = Entries(r.data());
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].type, 'a');
  EXPECT_EQ(e[1].kind, audit::kRecordedOmitted);
  EXPECT_EQ(e[1].bytes, 5u);
  r.Clear();
  EXPECT_EQ(r.size(), 0u);

  // A message over the size cap is counted, not kept.
  r.ToClient("x" + std::string(Recorder::kMaxMessageBytes + 1, '.') + "\n");
  e = Entries(r.data());
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, audit::kRecordedOmitted);

  LineRecorder off(RecordingLimits{false, 1, 1}, absl::Now());
  off.ToClient("aok\n");
  off.FromClient('q', "x", absl::Now());
  EXPECT_EQ(off.data(), "");
}

}  // namespace
}  // namespace sluice::agent::session
