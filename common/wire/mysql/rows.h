// Result rows of the MySQL protocol, split into their values without copying: text rows
// (ProtocolText::ResultsetRow: a length-encoded string or 0xFB for NULL per column) and binary
// rows (ProtocolBinary::ResultsetRow, COM_STMT_EXECUTE's: 0x00, a NULL bitmap whose bits start at
// bit 2, then each non-NULL value laid out by its column's type). A row that does not fit its
// columns exactly (short, trailing bytes, a length past the end, an unknown type) is an error.
// https://mariadb.com/kb/en/resultset-row/
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice::wire::mysql {

// Column types (enum_field_types), as ColumnDefinition::type carries them.
enum ColumnType : uint8_t {
  kTypeDecimal = 0,
  kTypeTiny = 1,
  kTypeShort = 2,
  kTypeLong = 3,
  kTypeFloat = 4,
  kTypeDouble = 5,
  kTypeNull = 6,
  kTypeTimestamp = 7,
  kTypeLongLong = 8,
  kTypeInt24 = 9,
  kTypeDate = 10,
  kTypeTime = 11,
  kTypeDateTime = 12,
  kTypeYear = 13,
  kTypeVarchar = 15,
  kTypeBit = 16,
  kTypeJson = 245,
  kTypeNewDecimal = 246,
  kTypeEnum = 247,
  kTypeSet = 248,
  kTypeTinyBlob = 249,
  kTypeMediumBlob = 250,
  kTypeLongBlob = 251,
  kTypeBlob = 252,
  kTypeVarString = 253,
  kTypeString = 254,
  kTypeGeometry = 255,
};
// The character set number of binary strings (a BLOB of it holds bytes, not text).
inline constexpr uint16_t kBinaryCharset = 63;
// ColumnDefinition::flags: an integer column without sign.
inline constexpr uint16_t kUnsignedFlag = 32;

// One value of a row: where its whole encoding is in the payload (length prefix included), and
// its bytes. A NULL value has no bytes (in a text row, `begin`..`end` covers its 0xFB).
struct RowValue {
  bool null = false;
  size_t begin = 0;
  size_t end = 0;
  absl::string_view data;
};

// How a binary-protocol value of a column type is laid out.
enum class BinaryLayout {
  kUnknown,     // a type this codec does not know: rows of it cannot be read
  kLenenc,      // a length-encoded string (strings, blobs, decimals, JSON, ENUM, SET, BIT, ...)
  kFixed,       // `size` bytes, little-endian (integers, FLOAT, DOUBLE)
  kLengthByte,  // one length byte, then that many bytes (DATE, DATETIME, TIMESTAMP, TIME)
  kNothing,     // no bytes (the NULL type)
};
struct BinaryType {
  BinaryLayout layout = BinaryLayout::kUnknown;
  size_t size = 0;  // for kFixed
};
BinaryType BinaryTypeOf(uint8_t type);

// Splits a text row of `columns` values into `*out` (cleared first).
absl::Status SplitTextRow(absl::string_view payload, size_t columns, std::vector<RowValue>* out);
// Splits a binary row of columns of `types` into `*out` (cleared first).
absl::Status SplitBinaryRow(absl::string_view payload, const std::vector<uint8_t>& types,
                            std::vector<RowValue>* out);

// A non-NULL binary value as the text protocol would show it: integers in decimal (`is_unsigned`:
// the column's UNSIGNED flag), FLOAT and DOUBLE with enough digits to round-trip, dates and times
// as 'YYYY-MM-DD hh:mm:ss[.ffffff]'; the bytes themselves for string-like layouts.
std::string BinaryValueText(absl::string_view data, uint8_t type, bool is_unsigned);

// One bound value of a COM_STMT_EXECUTE.
struct ExecuteParameter {
  bool null = false;
  bool long_data = false;  // sent before by COM_STMT_SEND_LONG_DATA: not in this packet
  uint8_t type = 0;
  bool is_unsigned = false;
  absl::string_view data;  // the value's bytes (no length prefix)
};
// The bound values of a COM_STMT_EXECUTE `payload` (command byte included) of a statement with
// `count` parameters. `*types` holds the types bound by an earlier execution (2 bytes each: the
// type, then 0x80 for UNSIGNED), replaced when this one binds new ones; `long_data` flags the
// parameters sent by COM_STMT_SEND_LONG_DATA (shorter than `count`: none after it).
absl::Status DecodeExecuteParameters(absl::string_view payload, size_t count, std::string* types,
                                     const std::vector<bool>& long_data,
                                     std::vector<ExecuteParameter>* out);

}  // namespace sluice::wire::mysql
