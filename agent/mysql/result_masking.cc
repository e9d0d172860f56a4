#include "agent/mysql/result_masking.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice::agent::mysql {

namespace {

using masking::MaskingPolicy;
using masking::Selected;
using Outcome = masking::MaskingPolicy::Outcome;
using wire::mysql::ColumnDefinition;
using wire::mysql::Reader;

// Column types on the wire (include/mysql_com.h: enum_field_types).
constexpr uint8_t kDecimal = 0;
constexpr uint8_t kTiny = 1;
constexpr uint8_t kShort = 2;
constexpr uint8_t kLong = 3;
constexpr uint8_t kFloat = 4;
constexpr uint8_t kDouble = 5;
constexpr uint8_t kNull = 6;
constexpr uint8_t kTimestamp = 7;
constexpr uint8_t kLongLong = 8;
constexpr uint8_t kInt24 = 9;
constexpr uint8_t kDate = 10;
constexpr uint8_t kTime = 11;
constexpr uint8_t kDateTime = 12;
constexpr uint8_t kYear = 13;
constexpr uint8_t kVarchar = 15;
constexpr uint8_t kBit = 16;
constexpr uint8_t kJson = 245;
constexpr uint8_t kNewDecimal = 246;
constexpr uint8_t kEnum = 247;
constexpr uint8_t kSet = 248;
constexpr uint8_t kTinyBlob = 249;
constexpr uint8_t kMediumBlob = 250;
constexpr uint8_t kLongBlob = 251;
constexpr uint8_t kBlob = 252;
constexpr uint8_t kVarString = 253;
constexpr uint8_t kString = 254;
constexpr uint8_t kGeometry = 255;

constexpr uint16_t kBinaryCharset = 63;
constexpr uint16_t kUnsignedFlag = 32;
constexpr uint8_t kNullMarker = 0xFB;

// How a binary-protocol value is laid out.
enum class Layout { kUnknown, kLenenc, kFixed, kLengthByte, kNothing };

struct BinaryType {
  Layout layout = Layout::kUnknown;
  size_t size = 0;  // for kFixed
};

BinaryType BinaryLayout(uint8_t type) {
  switch (type) {
    case kDecimal:
    case kNewDecimal:
    case kVarchar:
    case kBit:
    case kJson:
    case kEnum:
    case kSet:
    case kTinyBlob:
    case kMediumBlob:
    case kLongBlob:
    case kBlob:
    case kVarString:
    case kString:
    case kGeometry:
      return {Layout::kLenenc, 0};
    case kTiny:
      return {Layout::kFixed, 1};
    case kShort:
    case kYear:
      return {Layout::kFixed, 2};
    case kLong:
    case kInt24:
    case kFloat:
      return {Layout::kFixed, 4};
    case kLongLong:
    case kDouble:
      return {Layout::kFixed, 8};
    case kDate:
    case kDateTime:
    case kTimestamp:
    case kTime:
      return {Layout::kLengthByte, 0};
    case kNull:
      return {Layout::kNothing, 0};
    default:
      return {Layout::kUnknown, 0};
  }
}

uint64_t LittleEndian(absl::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = bytes.size(); i > 0; --i) v = v << 8 | static_cast<uint8_t>(bytes[i - 1]);
  return v;
}

// A fixed-size numeric binary value as decimal text, for the detectors; empty for other types.
std::string RenderNumber(absl::string_view bytes, const ColumnPlan& c) {
  const uint64_t raw = LittleEndian(bytes);
  switch (c.type) {
    case kTiny:
      return c.is_unsigned ? absl::StrCat(static_cast<uint8_t>(raw))
                           : absl::StrCat(static_cast<int8_t>(raw));
    case kShort:
    case kYear:
      return c.is_unsigned ? absl::StrCat(static_cast<uint16_t>(raw))
                           : absl::StrCat(static_cast<int16_t>(raw));
    case kLong:
    case kInt24:
      return c.is_unsigned ? absl::StrCat(static_cast<uint32_t>(raw))
                           : absl::StrCat(static_cast<int32_t>(raw));
    case kLongLong:
      return c.is_unsigned ? absl::StrCat(raw) : absl::StrCat(static_cast<int64_t>(raw));
    case kFloat:
    case kDouble: {
      // Enough digits that an integral value (a card number in a DOUBLE) prints whole.
      char buf[64];
      int n;
      if (c.type == kFloat) {
        float f;
        const uint32_t bits = static_cast<uint32_t>(raw);
        std::memcpy(&f, &bits, sizeof(f));
        n = std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(f));
      } else {
        double d;
        std::memcpy(&d, &raw, sizeof(d));
        n = std::snprintf(buf, sizeof(buf), "%.17g", d);
      }
      if (n <= 0 || static_cast<size_t>(n) >= sizeof(buf)) return "";
      return std::string(buf, static_cast<size_t>(n));
    }
    default:
      return "";
  }
}

// A text that is probably a JSON document: a finding outside its strings is replaced by a quoted
// string, which keeps it a document.
bool LooksLikeJson(absl::string_view v) {
  size_t i = 0;
  while (i < v.size() && (v[i] == ' ' || v[i] == '\n' || v[i] == '\t' || v[i] == '\r')) ++i;
  return i < v.size() && (v[i] == '{' || v[i] == '[');
}

Outcome MaskWholeValue(absl::string_view value, const ColumnPlan& c, const MaskingPolicy& policy,
                       std::string* scratch) {
  if (!c.text_like) return Outcome::kNull;
  auto masked = policy.MaskWhole(value, c.strategy);
  if (!masked) return Outcome::kNull;
  *scratch = *std::move(masked);
  return Outcome::kReplaced;
}

// A string value (every text-protocol value, a lenenc binary value) under detectors.
Outcome DetectInString(absl::string_view value, const ColumnPlan& c, const MaskingPolicy& policy,
                       std::string* scratch) {
  const bool json = c.type == kJson || (c.text_like && LooksLikeJson(value));
  Outcome o = policy.MaskText(value, scratch, json);
  // A number, date, decimal or binary string cannot take text spliced into it.
  if (o == Outcome::kReplaced && !c.text_like) return Outcome::kNull;
  return o;
}

Outcome MaskTextValue(absl::string_view value, const ColumnPlan& c, const MaskingPolicy& policy,
                      std::string* scratch) {
  switch (c.kind) {
    case ColumnPlan::kPass:
      return Outcome::kUnchanged;
    case ColumnPlan::kWhole:
      return MaskWholeValue(value, c, policy, scratch);
    case ColumnPlan::kDetect:
      return DetectInString(value, c, policy, scratch);
  }
  return Outcome::kUnchanged;
}

// `value`: a lenenc value's content, or a fixed or length-byte value's raw bytes.
Outcome MaskBinaryValue(absl::string_view value, Layout layout, const ColumnPlan& c,
                        const MaskingPolicy& policy, std::string* scratch) {
  switch (c.kind) {
    case ColumnPlan::kPass:
      return Outcome::kUnchanged;
    case ColumnPlan::kWhole:
      // Only lenenc types are text-like, so any other becomes NULL here.
      return MaskWholeValue(value, c, policy, scratch);
    case ColumnPlan::kDetect: {
      if (layout == Layout::kLenenc) return DetectInString(value, c, policy, scratch);
      if (layout != Layout::kFixed) return Outcome::kUnchanged;  // dates and times
      std::string rendered = RenderNumber(value, c);
      if (rendered.empty()) return Outcome::kUnchanged;
      return policy.MaskText(rendered, scratch, false) == Outcome::kUnchanged ? Outcome::kUnchanged
                                                                              : Outcome::kNull;
    }
  }
  return Outcome::kUnchanged;
}

void AddUnique(std::vector<std::string>* v, const std::string& s) {
  if (std::find(v->begin(), v->end(), s) == v->end()) v->push_back(s);
}

void KeepStricter(std::optional<Selected>* best, const std::optional<Selected>& s) {
  if (!s) return;
  if (!*best || masking::Stricter((*best)->strategy, s->strategy) != (*best)->strategy) *best = s;
}

bool NamedIn(const std::vector<std::string>& names, absl::string_view name) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return absl::EqualsIgnoreCase(n, name); });
}

bool NamedTable(const std::vector<session::Relation>& relations, absl::string_view table) {
  return std::any_of(relations.begin(), relations.end(), [&](const session::Relation& r) {
    return absl::EqualsIgnoreCase(r.table, table);
  });
}

absl::Status RowError(absl::string_view protocol, absl::string_view what, size_t column) {
  return absl::InvalidArgumentError(
      absl::StrCat("MySQL ", protocol, " result row: ", what, " at column ", column + 1));
}

}  // namespace

bool TextLikeType(uint8_t type, uint16_t charset) {
  switch (type) {
    case kVarchar:
    case kVarString:
    case kString:
    case kEnum:
    case kSet:
    case kJson:
      return true;
    case kTinyBlob:
    case kMediumBlob:
    case kLongBlob:
    case kBlob:
      return charset != kBinaryCharset;
    default:
      return false;
  }
}

ResultPlan PlanResult(const std::vector<ColumnDefinition>& columns,
                      const std::vector<session::Relation>& relations, const MaskingPolicy& policy,
                      const std::vector<std::string>& defined_names) {
  ResultPlan plan;
  plan.columns.reserve(columns.size());
  // The strictest rule over any column of any named table: the same for every column planned
  // conservatively, so computed once.
  std::optional<std::optional<Selected>> any_named;
  for (const ColumnDefinition& d : columns) {
    ColumnPlan c;
    c.type = d.type;
    c.text_like = TextLikeType(d.type, d.charset);
    c.is_unsigned = (d.flags & kUnsignedFlag) != 0;
    std::optional<Selected> selected;
    if (policy.has_column_rules()) {
      const bool has_origin = !d.org_table.empty() && !d.org_name.empty();
      if (has_origin && NamedTable(relations, d.org_table) &&
          !NamedIn(defined_names, d.org_table)) {
        selected = policy.ForColumn(d.org_table, d.org_name);
      } else {
        if (!any_named) {
          std::optional<Selected> best;
          for (const session::Relation& r : relations) {
            if (!r.table.empty()) KeepStricter(&best, policy.ForAnyColumnOf(r.table));
          }
          any_named = best;
        }
        selected = *any_named;
        KeepStricter(&selected, policy.ForLabel(d.name));
        if (has_origin) KeepStricter(&selected, policy.ForColumn(d.org_table, d.org_name));
      }
    }
    if (selected) {
      c.kind = ColumnPlan::kWhole;
      c.strategy = selected->strategy;
      AddUnique(&plan.rules, *selected->rule);
      plan.masked_columns.push_back(d.name);
    } else if (policy.has_detectors()) {
      c.kind = ColumnPlan::kDetect;
    }
    plan.active = plan.active || c.kind != ColumnPlan::kPass;
    plan.columns.push_back(c);
  }
  if (plan.active && policy.has_detectors()) {
    for (const auto& r : policy.detector_rules()) AddUnique(&plan.rules, r);
  }
  return plan;
}

absl::StatusOr<bool> MaskTextRow(absl::string_view payload, const ResultPlan& plan,
                                 const MaskingPolicy& policy, std::string* out) {
  Reader r(payload);
  bool changed = false;
  size_t copied = 0;  // bytes of `payload` already in `*out` (once changed)
  std::string scratch;
  for (size_t i = 0; i < plan.columns.size(); ++i) {
    const size_t begin = payload.size() - r.remaining();
    if (r.remaining() == 0) return RowError("text", "row ends", i);
    if (r.PeekNull()) {
      r.Int1();
      continue;
    }
    std::optional<uint64_t> length = r.LenencInt();
    if (!r.ok() || !length || *length > r.remaining()) {
      return RowError("text", "malformed value length", i);
    }
    absl::string_view value = r.Bytes(static_cast<size_t>(*length));
    const size_t end = payload.size() - r.remaining();
    Outcome o = MaskTextValue(value, plan.columns[i], policy, &scratch);
    if (o == Outcome::kUnchanged) continue;
    if (!changed) {
      out->clear();
      out->reserve(payload.size() + 64);
      changed = true;
    }
    out->append(payload.data() + copied, begin - copied);
    if (o == Outcome::kNull) {
      wire::mysql::PutInt1(out, kNullMarker);
    } else {
      wire::mysql::PutLenencString(out, scratch);
    }
    copied = end;
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("MySQL text result row with ", r.remaining(),
                                                   " bytes after its ", plan.columns.size(),
                                                   " values"));
  }
  if (!changed) return false;
  out->append(payload.data() + copied, payload.size() - copied);
  return true;
}

absl::StatusOr<bool> MaskBinaryRow(absl::string_view payload, const ResultPlan& plan,
                                   const MaskingPolicy& policy, std::string* out) {
  const size_t n = plan.columns.size();
  const size_t bitmap_size = (n + 7 + 2) / 8;
  if (payload.empty() || static_cast<uint8_t>(payload[0]) != 0x00) {
    return absl::InvalidArgumentError("MySQL binary result row without its 0x00 header");
  }
  if (payload.size() - 1 < bitmap_size) {
    return absl::InvalidArgumentError("MySQL binary result row shorter than its NULL bitmap");
  }
  absl::string_view bitmap = payload.substr(1, bitmap_size);
  auto is_null = [&](size_t i) {
    return (static_cast<uint8_t>(bitmap[(i + 2) / 8]) >> ((i + 2) % 8) & 1) != 0;
  };

  // What happens to each value: kept (its raw bytes), replaced by a string, or made NULL.
  struct Action {
    size_t column = 0;
    size_t begin = 0;
    size_t end = 0;
    Outcome outcome = Outcome::kUnchanged;
    std::string replacement;
  };
  std::vector<Action> actions;
  const size_t values_at = 1 + bitmap_size;
  Reader r(payload.substr(values_at));
  bool changed = false;
  std::string scratch;
  for (size_t i = 0; i < n; ++i) {
    const ColumnPlan& c = plan.columns[i];
    const BinaryType layout = BinaryLayout(c.type);
    if (layout.layout == Layout::kUnknown) {
      return RowError("binary", absl::StrCat("a value of unknown type ", c.type), i);
    }
    if (is_null(i)) continue;
    const size_t begin = payload.size() - r.remaining();
    absl::string_view value;
    switch (layout.layout) {
      case Layout::kLenenc: {
        std::optional<uint64_t> length = r.LenencInt();
        if (!r.ok() || !length || *length > r.remaining()) {
          return RowError("binary", "malformed value length", i);
        }
        value = r.Bytes(static_cast<size_t>(*length));
        break;
      }
      case Layout::kFixed:
        value = r.Bytes(layout.size);
        break;
      case Layout::kLengthByte: {
        const uint8_t length = r.Int1();
        value = r.Bytes(length);
        break;
      }
      case Layout::kNothing:
      case Layout::kUnknown:
        break;
    }
    if (!r.ok()) return RowError("binary", "row ends", i);
    const size_t end = payload.size() - r.remaining();
    Outcome o = MaskBinaryValue(value, layout.layout, c, policy, &scratch);
    if (o == Outcome::kUnchanged) continue;
    if (actions.empty()) actions.reserve(n);
    Action a;
    a.column = i;
    a.begin = begin;
    a.end = end;
    a.outcome = o;
    if (o == Outcome::kReplaced) a.replacement = std::move(scratch);
    actions.push_back(std::move(a));
    changed = true;
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("MySQL binary result row with ", r.remaining(),
                                                   " bytes after its ", n, " values"));
  }
  if (!changed) return false;

  out->clear();
  out->reserve(payload.size() + 64);
  out->append(payload.data(), values_at);  // header and bitmap (bits set below)
  size_t copied = values_at;
  for (const Action& a : actions) {
    out->append(payload.data() + copied, a.begin - copied);
    if (a.outcome == Outcome::kReplaced) {
      wire::mysql::PutLenencString(out, a.replacement);
    } else {
      char& bits = (*out)[1 + (a.column + 2) / 8];
      bits = static_cast<char>(static_cast<uint8_t>(bits) | 1u << ((a.column + 2) % 8));
    }
    copied = a.end;
  }
  out->append(payload.data() + copied, payload.size() - copied);
  return true;
}

}  // namespace sluice::agent::mysql
