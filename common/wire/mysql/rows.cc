#include "common/wire/mysql/rows.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/wire/mysql/packets.h"

namespace sluice::wire::mysql {
namespace {

absl::Status RowError(absl::string_view what, size_t column) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed result row: ", what, " (column ", column + 1, ")"));
}

absl::Status ParamError(absl::string_view what, size_t param) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed COM_STMT_EXECUTE: ", what, " (parameter ", param + 1, ")"));
}

uint64_t LittleEndian(absl::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = bytes.size(); i > 0; --i) v = v << 8 | static_cast<uint8_t>(bytes[i - 1]);
  return v;
}

// DATE, DATETIME, TIMESTAMP: 0, 4, 7 or 11 bytes.
std::string DateText(absl::string_view d, uint8_t type) {
  if (d.size() != 0 && d.size() != 4 && d.size() != 7 && d.size() != 11) return "?";
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  uint32_t micro = 0;
  if (d.size() >= 4) {
    year = static_cast<int>(LittleEndian(d.substr(0, 2)));
    month = static_cast<uint8_t>(d[2]);
    day = static_cast<uint8_t>(d[3]);
  }
  if (d.size() >= 7) {
    hour = static_cast<uint8_t>(d[4]);
    minute = static_cast<uint8_t>(d[5]);
    second = static_cast<uint8_t>(d[6]);
  }
  if (d.size() == 11) micro = static_cast<uint32_t>(LittleEndian(d.substr(7, 4)));
  std::string out = absl::StrFormat("%04d-%02d-%02d", year, month, day);
  if (type != kTypeDate)
    absl::StrAppend(&out, absl::StrFormat(" %02d:%02d:%02d", hour, minute, second));
  if (micro != 0) absl::StrAppend(&out, absl::StrFormat(".%06u", micro));
  return out;
}

// TIME: 0, 8 or 12 bytes (sign, days, hours, minutes, seconds, microseconds).
std::string TimeText(absl::string_view d) {
  if (d.size() != 0 && d.size() != 8 && d.size() != 12) return "?";
  if (d.empty()) return "00:00:00";
  const bool negative = d[0] != 0;
  const uint64_t hours = LittleEndian(d.substr(1, 4)) * 24 + static_cast<uint8_t>(d[5]);
  std::string out = absl::StrFormat("%s%02u:%02d:%02d", negative ? "-" : "", hours,
                                    static_cast<uint8_t>(d[6]), static_cast<uint8_t>(d[7]));
  if (d.size() == 12) {
    absl::StrAppend(&out,
                    absl::StrFormat(".%06u", static_cast<uint32_t>(LittleEndian(d.substr(8)))));
  }
  return out;
}

// One binary-protocol value of layout `t` off the front of `*r`; false when it does not fit.
bool ReadBinaryValue(Reader* r, BinaryType t, absl::string_view* out) {
  switch (t.layout) {
    case BinaryLayout::kLenenc: {
      std::optional<uint64_t> length = r->LenencInt();
      if (!r->ok() || !length || *length > r->remaining()) return false;
      *out = r->Bytes(static_cast<size_t>(*length));
      break;
    }
    case BinaryLayout::kFixed:
      *out = r->Bytes(t.size);
      break;
    case BinaryLayout::kLengthByte:
      *out = r->Bytes(r->Int1());
      break;
    case BinaryLayout::kNothing:
    case BinaryLayout::kUnknown:
      break;
  }
  return r->ok();
}

}  // namespace

BinaryType BinaryTypeOf(uint8_t type) {
  switch (type) {
    case kTypeDecimal:
    case kTypeNewDecimal:
    case kTypeVarchar:
    case kTypeBit:
    case kTypeJson:
    case kTypeEnum:
    case kTypeSet:
    case kTypeTinyBlob:
    case kTypeMediumBlob:
    case kTypeLongBlob:
    case kTypeBlob:
    case kTypeVarString:
    case kTypeString:
    case kTypeGeometry:
      return {BinaryLayout::kLenenc, 0};
    case kTypeTiny:
      return {BinaryLayout::kFixed, 1};
    case kTypeShort:
    case kTypeYear:
      return {BinaryLayout::kFixed, 2};
    case kTypeLong:
    case kTypeInt24:
    case kTypeFloat:
      return {BinaryLayout::kFixed, 4};
    case kTypeLongLong:
    case kTypeDouble:
      return {BinaryLayout::kFixed, 8};
    case kTypeDate:
    case kTypeDateTime:
    case kTypeTimestamp:
    case kTypeTime:
      return {BinaryLayout::kLengthByte, 0};
    case kTypeNull:
      return {BinaryLayout::kNothing, 0};
    default:
      return {BinaryLayout::kUnknown, 0};
  }
}

absl::Status SplitTextRow(absl::string_view payload, size_t columns, std::vector<RowValue>* out) {
  out->clear();
  Reader r(payload);
  for (size_t i = 0; i < columns; ++i) {
    RowValue v;
    v.begin = payload.size() - r.remaining();
    if (r.PeekNull()) {
      r.Int1();
      v.null = true;
    } else {
      std::optional<uint64_t> length = r.LenencInt();
      if (!r.ok() || !length || *length > r.remaining()) {
        return RowError("a value's length is past the row's end", i);
      }
      v.data = r.Bytes(static_cast<size_t>(*length));
    }
    if (!r.ok()) return RowError("the row ends early", i);
    v.end = payload.size() - r.remaining();
    out->push_back(v);
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("malformed result row: ", r.remaining(),
                                                   " bytes after its ", columns, " values"));
  }
  return absl::OkStatus();
}

absl::Status SplitBinaryRow(absl::string_view payload, const std::vector<uint8_t>& types,
                            std::vector<RowValue>* out) {
  out->clear();
  const size_t n = types.size();
  const size_t bitmap_size = (n + 7 + 2) / 8;
  if (payload.empty() || static_cast<uint8_t>(payload[0]) != 0x00) {
    return absl::InvalidArgumentError("malformed binary result row: no 0x00 header");
  }
  if (payload.size() - 1 < bitmap_size) {
    return absl::InvalidArgumentError("malformed binary result row: shorter than its NULL bitmap");
  }
  const absl::string_view bitmap = payload.substr(1, bitmap_size);
  Reader r(payload.substr(1 + bitmap_size));
  for (size_t i = 0; i < n; ++i) {
    const BinaryType t = BinaryTypeOf(types[i]);
    if (t.layout == BinaryLayout::kUnknown) {
      return RowError(absl::StrCat("a value of unknown type ", types[i]), i);
    }
    RowValue v;
    v.begin = v.end = payload.size() - r.remaining();
    v.null = (static_cast<uint8_t>(bitmap[(i + 2) / 8]) >> ((i + 2) % 8) & 1) != 0;
    if (!v.null) {
      if (!ReadBinaryValue(&r, t, &v.data)) return RowError("the row ends early", i);
      v.end = payload.size() - r.remaining();
    }
    out->push_back(v);
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("malformed binary result row: ", r.remaining(),
                                                   " bytes after its ", n, " values"));
  }
  return absl::OkStatus();
}

absl::Status DecodeExecuteParameters(absl::string_view payload, size_t count, std::string* types,
                                     const std::vector<bool>& long_data,
                                     std::vector<ExecuteParameter>* out) {
  out->clear();
  // command, statement id, flags, iteration count
  constexpr size_t kHeader = 1 + 4 + 1 + 4;
  if (payload.size() < kHeader) {
    return absl::InvalidArgumentError("malformed COM_STMT_EXECUTE: shorter than its header");
  }
  if (count == 0) return absl::OkStatus();
  Reader r(payload.substr(kHeader));
  const absl::string_view bitmap = r.Bytes((count + 7) / 8);
  const uint8_t new_types = r.Int1();
  if (!r.ok()) return absl::InvalidArgumentError("malformed COM_STMT_EXECUTE: no NULL bitmap");
  if (new_types == 1) {
    const absl::string_view bound = r.Bytes(2 * count);
    if (!r.ok()) return absl::InvalidArgumentError("malformed COM_STMT_EXECUTE: no types");
    types->assign(bound.data(), bound.size());
  } else if (types->size() != 2 * count) {
    return absl::InvalidArgumentError(
        "malformed COM_STMT_EXECUTE: no parameter types bound before");
  }
  for (size_t i = 0; i < count; ++i) {
    ExecuteParameter p;
    p.type = static_cast<uint8_t>((*types)[2 * i]);
    p.is_unsigned = (static_cast<uint8_t>((*types)[2 * i + 1]) & 0x80) != 0;
    p.null = (static_cast<uint8_t>(bitmap[i / 8]) >> (i % 8) & 1) != 0;
    p.long_data = !p.null && i < long_data.size() && long_data[i];
    if (!p.null && !p.long_data) {
      const BinaryType t = BinaryTypeOf(p.type);
      if (t.layout == BinaryLayout::kUnknown) {
        return ParamError(absl::StrCat("a parameter of unknown type ", p.type), i);
      }
      if (!ReadBinaryValue(&r, t, &p.data)) return ParamError("the parameters end early", i);
    }
    out->push_back(p);
  }
  return absl::OkStatus();
}

std::string BinaryValueText(absl::string_view data, uint8_t type, bool is_unsigned) {
  const uint64_t raw = LittleEndian(data.substr(0, 8));
  switch (type) {
    case kTypeTiny:
      return is_unsigned ? absl::StrCat(static_cast<uint8_t>(raw))
                         : absl::StrCat(static_cast<int8_t>(raw));
    case kTypeShort:
    case kTypeYear:
      return is_unsigned ? absl::StrCat(static_cast<uint16_t>(raw))
                         : absl::StrCat(static_cast<int16_t>(raw));
    case kTypeLong:
    case kTypeInt24:
      return is_unsigned ? absl::StrCat(static_cast<uint32_t>(raw))
                         : absl::StrCat(static_cast<int32_t>(raw));
    case kTypeLongLong:
      return is_unsigned ? absl::StrCat(raw) : absl::StrCat(static_cast<int64_t>(raw));
    case kTypeFloat: {
      float f = 0;
      const uint32_t bits = static_cast<uint32_t>(raw);
      std::memcpy(&f, &bits, sizeof(f));
      return absl::StrFormat("%.9g", static_cast<double>(f));
    }
    case kTypeDouble: {
      // Enough digits that an integral value (a card number in a DOUBLE) prints whole.
      double d = 0;
      std::memcpy(&d, &raw, sizeof(d));
      return absl::StrFormat("%.17g", d);
    }
    case kTypeDate:
    case kTypeDateTime:
    case kTypeTimestamp:
      return DateText(data, type);
    case kTypeTime:
      return TimeText(data);
    default:
      return std::string(data);
  }
}

}  // namespace sluice::wire::mysql
