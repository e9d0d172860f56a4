#include "common/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace sluice {
namespace {

const absl::Time kTime = absl::FromUnixMillis(1767323045678);  // 2026-01-02T03:04:05.678Z

TEST(Log, TextLinesAsBefore) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kTime, LogLevel::kInfo, "agent", "PostgreSQL port 1"),
            "2026-01-02T03:04:05.678Z INFO  agent: PostgreSQL port 1\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kTime, LogLevel::kError, "controlplane", "x"),
            "2026-01-02T03:04:05.678Z ERROR controlplane: x\n");
}

TEST(Log, JsonLinesAreOneObjectPerLine) {
  const std::string line = FormatLogLine(LogFormat::kJson, kTime, LogLevel::kWarning, "agent",
                                         "two\nlines, a \"quote\" and \xff");
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);  // the message's newline is escaped
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["time"], "2026-01-02T03:04:05.678Z");
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["component"], "agent");
  EXPECT_EQ(j["message"], "two\nlines, a \"quote\" and \xEF\xBF\xBD");
  EXPECT_EQ(j.size(), 4u);
}

TEST(Log, FormatNames) {
  LogFormat f = LogFormat::kText;
  EXPECT_TRUE(ParseLogFormat("json", &f));
  EXPECT_EQ(f, LogFormat::kJson);
  EXPECT_TRUE(ParseLogFormat("text", &f));
  EXPECT_EQ(f, LogFormat::kText);
  EXPECT_FALSE(ParseLogFormat("JSON", &f));
  EXPECT_FALSE(ParseLogFormat("", &f));
}

}  // namespace
}  // namespace sluice
