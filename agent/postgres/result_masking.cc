#include "agent/postgres/result_masking.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres {

using wire::postgres::ErrorOrNotice;
using wire::postgres::Frame;
using wire::postgres::RowDescription;
using wire::postgres::WireReader;
using wire::postgres::WireWriter;

namespace {

using masking::MaskingPolicy;
using Outcome = masking::MaskingPolicy::Outcome;

constexpr int32_t kJsonOid = 114;
constexpr int32_t kJsonbOid = 3802;

// Types whose text form a detector finding must not be spliced into (the client parses them).
bool NumberOrTimeType(int32_t oid) {
  switch (oid) {
    case 16:    // bool
    case 20:    // int8
    case 21:    // int2
    case 23:    // int4
    case 26:    // oid
    case 700:   // float4
    case 701:   // float8
    case 790:   // money
    case 1082:  // date
    case 1083:  // time
    case 1114:  // timestamp
    case 1184:  // timestamptz
    case 1186:  // interval
    case 1266:  // timetz
    case 1700:  // numeric
      return true;
    default:
      return false;
  }
}

// A text that is probably a JSON document (a json value cast to text, say): a finding outside
// its strings is replaced by a quoted string, which keeps it a document.
bool LooksLikeJson(absl::string_view v) {
  size_t i = 0;
  while (i < v.size() && (v[i] == ' ' || v[i] == '\n' || v[i] == '\t' || v[i] == '\r')) ++i;
  return i < v.size() && (v[i] == '{' || v[i] == '[');
}

void PutInt32(std::string* out, size_t at, int32_t v) {
  (*out)[at] = static_cast<char>((v >> 24) & 0xff);
  (*out)[at + 1] = static_cast<char>((v >> 16) & 0xff);
  (*out)[at + 2] = static_cast<char>((v >> 8) & 0xff);
  (*out)[at + 3] = static_cast<char>(v & 0xff);
}

void AppendInt32(std::string* out, int32_t v) {
  char b[4] = {static_cast<char>((v >> 24) & 0xff), static_cast<char>((v >> 16) & 0xff),
               static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
  out->append(b, 4);
}

// One value under its column's plan. kReplaced leaves the new value in `*scratch`.
Outcome MaskField(absl::string_view value, const ColumnPlan& c, const MaskingPolicy& policy,
                  std::string* scratch) {
  switch (c.kind) {
    case ColumnPlan::kPass:
      return Outcome::kUnchanged;
    case ColumnPlan::kWhole: {
      if (!TextLikeType(c.type_oid)) return Outcome::kNull;
      auto masked = policy.MaskWhole(value, c.strategy);
      if (!masked) return Outcome::kNull;
      *scratch = *std::move(masked);
      return Outcome::kReplaced;
    }
    case ColumnPlan::kDetect: {
      if (c.binary) {
        if (c.type_oid == kJsonbOid) {
          // Binary jsonb is a version byte (1) and the JSON text.
          if (value.empty() || value[0] != 1) return Outcome::kUnchanged;
          std::string inner;
          Outcome o = policy.MaskText(value.substr(1), &inner, true);
          if (o == Outcome::kReplaced) *scratch = absl::StrCat(value.substr(0, 1), inner);
          return o;
        }
        if (!TextLikeType(c.type_oid) && c.type_oid != kJsonOid) return Outcome::kUnchanged;
        return policy.MaskText(value, scratch, c.type_oid == kJsonOid);
      }
      bool json = c.type_oid == kJsonOid || c.type_oid == kJsonbOid || LooksLikeJson(value);
      Outcome o = policy.MaskText(value, scratch, json);
      if (o == Outcome::kReplaced && NumberOrTimeType(c.type_oid)) return Outcome::kNull;
      return o;
    }
  }
  return Outcome::kUnchanged;
}

void AddUnique(std::vector<std::string>* v, const std::string& s) {
  if (std::find(v->begin(), v->end(), s) == v->end()) v->push_back(s);
}

// Decodes a COPY text-format field (backslash escapes).
std::string UnescapeText(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c != '\\' || i + 1 == s.size()) {
      out.push_back(c);
      continue;
    }
    char n = s[++i];
    switch (n) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x': {
        int v = 0, digits = 0;
        while (digits < 2 && i + 1 < s.size() && absl::ascii_isxdigit(s[i + 1])) {
          char h = s[++i];
          v = v * 16 + (absl::ascii_isdigit(h) ? h - '0' : (absl::ascii_tolower(h) - 'a' + 10));
          ++digits;
        }
        if (digits == 0)
          out.push_back('x');
        else
          out.push_back(static_cast<char>(v));
        break;
      }
      default:
        if (n >= '0' && n <= '7') {
          int v = n - '0', digits = 1;
          while (digits < 3 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7') {
            v = v * 8 + (s[++i] - '0');
            ++digits;
          }
          out.push_back(static_cast<char>(v));
        } else {
          out.push_back(n);
        }
    }
  }
  return out;
}

void AppendEscapedText(std::string* out, absl::string_view s, char delimiter) {
  for (char c : s) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\v':
        out->append("\\v");
        break;
      default:
        if (c == delimiter) out->push_back('\\');
        out->push_back(c);
    }
  }
}

void AppendQuotedCsv(std::string* out, absl::string_view s, const CopyFormat& f) {
  out->push_back(f.quote);
  for (char c : s) {
    if (c == f.quote || c == f.escape) out->push_back(f.escape);
    out->push_back(c);
  }
  out->push_back(f.quote);
}

// A field of a COPY row: its raw bytes [begin, end), decoded value, and whether it is NULL.
struct CopyField {
  size_t begin = 0;
  size_t end = 0;
  bool null = false;
  std::string value;
};

absl::StatusOr<std::vector<CopyField>> SplitCopyRow(absl::string_view row, const CopyFormat& f) {
  std::vector<CopyField> fields;
  size_t i = 0;
  while (true) {
    CopyField field;
    field.begin = i;
    if (f.csv && i < row.size() && row[i] == f.quote) {
      ++i;
      bool closed = false;
      while (i < row.size()) {
        char c = row[i];
        // The escape character before a quote or itself stands for that character ("" when the
        // escape is the quote, as by default).
        if (c == f.escape && i + 1 < row.size() &&
            (row[i + 1] == f.quote || row[i + 1] == f.escape)) {
          field.value.push_back(row[i + 1]);
          i += 2;
          continue;
        }
        if (c == f.quote) {
          ++i;
          closed = true;
          break;
        }
        field.value.push_back(c);
        ++i;
      }
      if (!closed)
        return absl::InvalidArgumentError("COPY CSV row with an unterminated quoted field");
      if (i < row.size() && row[i] != f.delimiter) {
        return absl::InvalidArgumentError("COPY CSV row with text after a quoted field");
      }
      field.end = i;
    } else {
      size_t j = i;
      while (j < row.size() && row[j] != f.delimiter) {
        if (!f.csv && row[j] == '\\' && j + 1 < row.size()) ++j;  // an escaped delimiter
        ++j;
      }
      field.end = j;
      absl::string_view raw = row.substr(i, j - i);
      field.null = raw == f.null_string;
      if (!field.null) field.value = f.csv ? std::string(raw) : UnescapeText(raw);
      i = j;
    }
    fields.push_back(std::move(field));
    if (i >= row.size()) break;
    ++i;  // the delimiter
  }
  return fields;
}

}  // namespace

bool TextLikeType(int32_t oid) {
  switch (oid) {
    case 18:    // "char"
    case 19:    // name
    case 25:    // text
    case 705:   // unknown
    case 1042:  // bpchar
    case 1043:  // varchar
      return true;
    default:
      return false;
  }
}

ResultPlan PlanResult(
    const std::vector<RowDescription::Field>& fields,
    const absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>>& tables,
    const MaskingPolicy& policy, const std::vector<std::optional<masking::Selected>>& computed) {
  ResultPlan plan;
  plan.columns.reserve(fields.size());
  for (size_t i = 0; i < fields.size(); ++i) {
    const auto& f = fields[i];
    ColumnPlan c;
    c.binary = f.format == 1;
    c.type_oid = f.type_oid;
    std::optional<masking::Selected> selected;
    if (policy.has_column_rules()) {
      auto it = f.table_oid != 0 ? tables.find(static_cast<uint32_t>(f.table_oid)) : tables.end();
      if (it != tables.end() && it->second != nullptr) {
        absl::string_view column = it->second->Column(f.column);
        selected = policy.ForColumn(it->second->table,
                                    column.empty() ? absl::string_view(f.name) : column);
      } else {
        selected = policy.ForLabel(f.name);
      }
    }
    if (i < computed.size() && computed[i] &&
        (!selected ||
         masking::Stricter(selected->strategy, computed[i]->strategy) != selected->strategy)) {
      selected = computed[i];
    }
    if (selected) {
      c.kind = ColumnPlan::kWhole;
      c.strategy = selected->strategy;
      AddUnique(&plan.rules, *selected->rule);
      plan.masked_columns.push_back(f.name);
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

ResultPlan PlanCopy(const std::string& table, const std::vector<std::string>& columns,
                    size_t column_count, const MaskingPolicy& policy) {
  std::vector<RowDescription::Field> fields(column_count);
  for (size_t i = 0; i < column_count; ++i) {
    fields[i].name = i < columns.size() ? columns[i] : "";
    fields[i].type_oid = 25;  // COPY writes every value as text
  }
  absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>> tables;
  if (!table.empty()) {
    auto names = std::make_shared<TableNames>();
    names->table = table;
    names->columns = columns;
    tables[1] = names;
    for (size_t i = 0; i < column_count; ++i) {
      fields[i].table_oid = 1;
      fields[i].column = static_cast<int16_t>(i + 1);
    }
  }
  return PlanResult(fields, tables, policy);
}

absl::StatusOr<bool> MaskDataRow(absl::string_view payload, const ResultPlan& plan,
                                 const MaskingPolicy& policy, std::string* out) {
  WireReader r(payload);
  int16_t n = r.Int16();
  if (!r.ok() || n < 0 || static_cast<size_t>(n) != plan.columns.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DataRow with ", n, " columns where RowDescription announced ", plan.columns.size()));
  }
  out->clear();
  out->reserve(payload.size() + 64);
  out->push_back('D');
  out->append(4, '\0');  // length, set at the end
  out->append(payload.data(), 2);
  size_t at = 2;
  bool changed = false;
  std::string scratch;
  for (int i = 0; i < n; ++i) {
    if (payload.size() - at < 4) return absl::InvalidArgumentError("truncated DataRow");
    int32_t len = static_cast<int32_t>(
        (static_cast<uint8_t>(payload[at]) << 24) | (static_cast<uint8_t>(payload[at + 1]) << 16) |
        (static_cast<uint8_t>(payload[at + 2]) << 8) | static_cast<uint8_t>(payload[at + 3]));
    at += 4;
    if (len == -1) {
      AppendInt32(out, -1);
      continue;
    }
    if (len < 0 || static_cast<size_t>(len) > payload.size() - at) {
      return absl::InvalidArgumentError("malformed DataRow value length");
    }
    absl::string_view value = payload.substr(at, static_cast<size_t>(len));
    at += static_cast<size_t>(len);
    switch (MaskField(value, plan.columns[i], policy, &scratch)) {
      case Outcome::kUnchanged:
        AppendInt32(out, len);
        out->append(value.data(), value.size());
        break;
      case Outcome::kReplaced:
        AppendInt32(out, static_cast<int32_t>(scratch.size()));
        out->append(scratch);
        changed = true;
        break;
      case Outcome::kNull:
        AppendInt32(out, -1);
        changed = true;
        break;
    }
  }
  if (at != payload.size())
    return absl::InvalidArgumentError("DataRow with bytes after its last value");
  if (!changed) return false;
  PutInt32(out, 1, static_cast<int32_t>(out->size() - 1));
  return true;
}

absl::StatusOr<bool> MaskErrorOrNotice(char type, absl::string_view payload,
                                       const MaskingPolicy& policy, std::string* out) {
  if (!policy.has_detectors()) return false;
  auto m = ErrorOrNotice::Decode(payload);
  if (!m.ok()) return m.status();
  bool changed = false;
  std::string masked;
  for (auto& [code, value] : m->fields) {
    if (code != 'M' && code != 'D' && code != 'H' && code != 'W' && code != 'q') continue;
    switch (policy.MaskText(value, &masked, false)) {
      case Outcome::kUnchanged:
        break;
      case Outcome::kReplaced:
        value = masked;
        changed = true;
        break;
      case Outcome::kNull:
        value = "[REDACTED]";
        changed = true;
        break;
    }
  }
  if (!changed) return false;
  *out = m->Encode(type);
  return true;
}

absl::StatusOr<bool> MaskSideChannel(char type, absl::string_view payload,
                                     const MaskingPolicy& policy, std::string* out) {
  if (!policy.has_detectors()) return false;
  WireReader r(payload);
  int32_t pid = type == 'A' ? r.Int32() : 0;
  std::vector<std::string> strings;
  strings.emplace_back(r.CStringView());
  strings.emplace_back(r.CStringView());
  if (!r.ok() || !r.AtEnd())
    return absl::InvalidArgumentError(
        absl::StrCat("malformed message '", std::string(1, type), "'"));
  bool changed = false;
  std::string masked;
  for (size_t i = type == 'A' ? 0 : 1; i < strings.size(); ++i) {
    switch (policy.MaskText(strings[i], &masked, false)) {
      case Outcome::kUnchanged:
        break;
      case Outcome::kReplaced:
        strings[i] = masked;
        changed = true;
        break;
      case Outcome::kNull:
        strings[i] = "[REDACTED]";
        changed = true;
        break;
    }
  }
  if (!changed) return false;
  WireWriter w;
  if (type == 'A') w.Int32(pid);
  w.CString(strings[0]);
  w.CString(strings[1]);
  *out = Frame(type, w.data());
  return true;
}

absl::StatusOr<std::string> WithholdErrorOrNotice(char type, absl::string_view payload,
                                                  absl::string_view masked) {
  auto m = ErrorOrNotice::Decode(payload);
  if (!m.ok()) return m.status();
  ErrorOrNotice out;
  for (auto& [code, value] : m->fields) {
    if (code == 'D' || code == 'H' || code == 'W' || code == 'q' || code == 'p') continue;
    if (code == 'M') {
      value = absl::StrCat("Sluice: the server's ", type == 'E' ? "error" : "notice",
                           " text is withheld: the statement reads masked columns (", masked,
                           "), and the text could quote their values");
    }
    out.fields.emplace_back(code, std::move(value));
  }
  return out.Encode(type);
}

absl::StatusOr<bool> MaskCopyRow(absl::string_view row, const ResultPlan& plan,
                                 const CopyFormat& format, const MaskingPolicy& policy,
                                 std::string* out) {
  absl::string_view body = row;
  bool newline = !body.empty() && body.back() == '\n';
  if (newline) body.remove_suffix(1);
  auto fields = SplitCopyRow(body, format);
  if (!fields.ok()) return fields.status();
  if (fields->size() != plan.columns.size()) {
    return absl::InvalidArgumentError(absl::StrCat("COPY row with ", fields->size(),
                                                   " columns where ", plan.columns.size(),
                                                   " were expected"));
  }
  std::string rebuilt;
  size_t copied = 0;  // bytes of `body` already in `rebuilt`
  bool changed = false;
  std::string scratch;
  for (size_t i = 0; i < fields->size(); ++i) {
    const CopyField& f = (*fields)[i];
    if (f.null) continue;
    Outcome o = MaskField(f.value, plan.columns[i], policy, &scratch);
    if (o == Outcome::kUnchanged) continue;
    rebuilt.append(body.data() + copied, f.begin - copied);
    if (o == Outcome::kNull) {
      rebuilt.append(format.null_string);
    } else if (format.csv) {
      AppendQuotedCsv(&rebuilt, scratch, format);
    } else {
      AppendEscapedText(&rebuilt, scratch, format.delimiter);
    }
    copied = f.end;
    changed = true;
  }
  if (!changed) return false;
  rebuilt.append(body.data() + copied, body.size() - copied);
  if (newline) rebuilt.push_back('\n');
  *out = Frame('d', rebuilt);
  return true;
}

}  // namespace sluice::agent::postgres
