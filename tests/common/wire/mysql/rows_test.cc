#include "common/wire/mysql/rows.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/wire/mysql/packets.h"

namespace sluice::wire::mysql {
namespace {

std::string Little(uint64_t v, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  return out;
}

TEST(MysqlRows, TextRowsSplitIntoValuesAndNulls) {
  std::string row;
  PutLenencString(&row, "42");
  PutInt1(&row, 0xFB);
  PutLenencString(&row, std::string(300, 'x'));  // a 2-byte length
  std::vector<RowValue> v;
  ASSERT_TRUE(SplitTextRow(row, 3, &v).ok());
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0].data, "42");
  EXPECT_TRUE(v[1].null);
  EXPECT_EQ(v[2].data.size(), 300u);
  EXPECT_EQ(v[2].end, row.size());
  EXPECT_EQ(row.substr(v[1].begin, v[1].end - v[1].begin), "\xFB");
  for (size_t n = 0; n < row.size(); ++n) {
    EXPECT_FALSE(SplitTextRow(row.substr(0, n), 3, &v).ok()) << n;
  }
  EXPECT_FALSE(SplitTextRow(row + "x", 3, &v).ok());
  EXPECT_FALSE(SplitTextRow(row, 4, &v).ok());
}

TEST(MysqlRows, BinaryRowsSplitByTypeAndRenderAsText) {
  const std::vector<uint8_t> types = {kTypeLong, kTypeVarString, kTypeDouble,  kTypeDateTime,
                                      kTypeTime, kTypeTiny,      kTypeLongLong};
  std::string row(1, '\0');
  // NULL bitmap (offset 2): column 5 (kTypeTiny, index 5) is NULL: bit 7 of byte 0.
  row += std::string(1, static_cast<char>(1 << 7));
  row += std::string(1, '\0');
  row += Little(static_cast<uint32_t>(-7), 4);
  PutLenencString(&row, "hello");
  double d = 4111111111111111.0;
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  row += Little(bits, 8);
  row += std::string("\x07", 1) + Little(2026, 2) + "\x0c\x07\x0e\x03\x09";
  row += std::string("\x08", 1) + std::string("\x01", 1) + Little(1, 4) + "\x02\x03\x04";
  row += Little(1234567890123ull, 8);
  std::vector<RowValue> v;
  ASSERT_TRUE(SplitBinaryRow(row, types, &v).ok());
  ASSERT_EQ(v.size(), types.size());
  EXPECT_EQ(BinaryValueText(v[0].data, kTypeLong, false), "-7");
  EXPECT_EQ(BinaryValueText(v[0].data, kTypeLong, true), "4294967289");
  EXPECT_EQ(v[1].data, "hello");
  EXPECT_EQ(BinaryValueText(v[2].data, kTypeDouble, false), "4111111111111111");
  EXPECT_EQ(BinaryValueText(v[3].data, kTypeDateTime, false), "2026-12-07 14:03:09");
  EXPECT_EQ(BinaryValueText(v[4].data, kTypeTime, false), "-26:03:04");
  EXPECT_TRUE(v[5].null);
  EXPECT_EQ(BinaryValueText(v[6].data, kTypeLongLong, false), "1234567890123");
  for (size_t n = 0; n < row.size(); ++n) {
    EXPECT_FALSE(SplitBinaryRow(row.substr(0, n), types, &v).ok()) << n;
  }
  EXPECT_FALSE(SplitBinaryRow(row + "x", types, &v).ok());
  std::vector<uint8_t> unknown = types;
  unknown[0] = 100;
  EXPECT_FALSE(SplitBinaryRow(row, unknown, &v).ok());
}

TEST(MysqlRows, ExecuteParametersDecodeWithTypesBoundNowOrBefore) {
  // COM_STMT_EXECUTE of statement 7, no cursor, one iteration; 4 parameters: an unsigned
  // LONGLONG, NULL, a string, a DATE.
  std::string head = "\x17" + Little(7, 4) + std::string(1, '\0') + Little(1, 4);
  std::string bound = head;
  bound += std::string(1, static_cast<char>(1 << 1));  // NULL bitmap: parameter 2
  bound += std::string(1, '\x01');                     // new types bound
  bound += std::string(1, static_cast<char>(kTypeLongLong)) + "\x80";
  bound += std::string(1, static_cast<char>(kTypeNull)) + std::string(1, '\0');
  bound += std::string(1, static_cast<char>(kTypeVarString)) + std::string(1, '\0');
  bound += std::string(1, static_cast<char>(kTypeDate)) + std::string(1, '\0');
  const std::string values =
      Little(~uint64_t{0}, 8) + std::string("\x04it's") + "\x04" + Little(2026, 2) + "\x0c\x07";
  bound += values;
  std::string types;
  std::vector<ExecuteParameter> p;
  const absl::Status decoded = DecodeExecuteParameters(bound, 4, &types, {}, &p);
  ASSERT_TRUE(decoded.ok()) << decoded;
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(BinaryValueText(p[0].data, p[0].type, p[0].is_unsigned), "18446744073709551615");
  EXPECT_TRUE(p[1].null);
  EXPECT_EQ(p[2].data, "it's");
  EXPECT_EQ(BinaryValueText(p[3].data, p[3].type, false), "2026-12-07");
  EXPECT_EQ(types.size(), 8u);
  for (size_t n = 0; n < bound.size(); ++n) {
    std::string none;
    EXPECT_FALSE(DecodeExecuteParameters(bound.substr(0, n), 4, &none, {}, &p).ok()) << n;
  }
  // The next execution binds no types: the earlier ones apply. Parameter 3 came as long data.
  std::string again = head + std::string(1, static_cast<char>(1 << 1)) + std::string(1, '\0') +
                      Little(5, 8) + "\x04" + Little(1999, 2) + "\x01\x02";
  ASSERT_TRUE(DecodeExecuteParameters(again, 4, &types, {false, false, true}, &p).ok());
  EXPECT_EQ(BinaryValueText(p[0].data, p[0].type, true), "5");
  EXPECT_TRUE(p[2].long_data);
  EXPECT_EQ(BinaryValueText(p[3].data, p[3].type, false), "1999-01-02");
  // Without types from before, the values cannot be read.
  std::string none;
  EXPECT_FALSE(DecodeExecuteParameters(again, 4, &none, {}, &p).ok());
  // A statement without parameters has nothing after the header.
  EXPECT_TRUE(DecodeExecuteParameters(head, 0, &none, {}, &p).ok());
  EXPECT_TRUE(p.empty());
}

}  // namespace
}  // namespace sluice::wire::mysql
