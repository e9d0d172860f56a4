#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace sluice {
namespace {

TEST(JsonObjectWriter, WritesValidJsonForHostileStrings) {
  std::string hostile = std::string("quote\" back\\ nl\n tab\t nul") + '\0' +
                        "\x01 bad\xff\xfe utf8 é ✓ 😀" + "\xed\xa0\x80" /* surrogate */ +
                        "\xc0\xaf" /* overlong */;
  std::string json =
      JsonObjectWriter().Str("s", hostile).Int("n", -42).Double("d", 1.5).Bool("b", true).Finish();
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << json;
  EXPECT_EQ(j["n"], -42);
  EXPECT_EQ(j["d"], 1.5);
  EXPECT_EQ(j["b"], true);
  std::string s = j["s"];
  std::string prefix = std::string("quote\" back\\ nl\n tab\t nul") + '\0' + "\x01 bad";
  EXPECT_EQ(s.substr(0, prefix.size()), prefix);
  EXPECT_NE(s.find("utf8 é ✓ 😀"), std::string::npos);
  EXPECT_NE(s.find("\xef\xbf\xbd"), std::string::npos);
  EXPECT_EQ(s.find("\xff"), std::string::npos);
}

TEST(JsonObjectWriter, MillisHasThreeDecimals) {
  EXPECT_EQ(JsonObjectWriter()
                .Millis("a", 87)
                .Millis("b", 12345678)
                .Millis("c", 0)
                .Millis("d", -5)
                .Finish(),
            R"({"a":0.087,"b":12345.678,"c":0.000,"d":0.000})");
}

TEST(JsonObjectWriter, ReusesACallersBuffer) {
  std::string buffer = "left over from the last event";
  {
    JsonObjectWriter w(&buffer);
    EXPECT_EQ(w.Str("a", "x").Int("n", 1).Close(), R"({"a":"x","n":1})");
  }
  EXPECT_EQ(buffer, R"({"a":"x","n":1})");
  JsonObjectWriter w(&buffer);
  EXPECT_EQ(w.Bool("b", false).Close(), R"({"b":false})");
}

}  // namespace
}  // namespace sluice
