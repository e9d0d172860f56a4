#include "agent/mysql/result_masking.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/wire/mysql/rows.h"

namespace sluice::agent::mysql {

namespace {

using masking::MaskingPolicy;
using masking::Selected;
using Outcome = masking::MaskingPolicy::Outcome;
using wire::mysql::ColumnDefinition;

constexpr uint8_t kNullMarker = 0xFB;

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
  const bool json = c.type == wire::mysql::kTypeJson || (c.text_like && LooksLikeJson(value));
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
Outcome MaskBinaryValue(absl::string_view value, wire::mysql::BinaryLayout layout,
                        const ColumnPlan& c, const MaskingPolicy& policy, std::string* scratch) {
  switch (c.kind) {
    case ColumnPlan::kPass:
      return Outcome::kUnchanged;
    case ColumnPlan::kWhole:
      // Only lenenc types are text-like, so any other becomes NULL here.
      return MaskWholeValue(value, c, policy, scratch);
    case ColumnPlan::kDetect: {
      if (layout == wire::mysql::BinaryLayout::kLenenc) {
        return DetectInString(value, c, policy, scratch);
      }
      if (layout != wire::mysql::BinaryLayout::kFixed) return Outcome::kUnchanged;  // dates
      const std::string rendered = wire::mysql::BinaryValueText(value, c.type, c.is_unsigned);
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

}  // namespace

bool TextLikeType(uint8_t type, uint16_t charset) {
  switch (type) {
    case wire::mysql::kTypeVarchar:
    case wire::mysql::kTypeVarString:
    case wire::mysql::kTypeString:
    case wire::mysql::kTypeEnum:
    case wire::mysql::kTypeSet:
    case wire::mysql::kTypeJson:
      return true;
    case wire::mysql::kTypeTinyBlob:
    case wire::mysql::kTypeMediumBlob:
    case wire::mysql::kTypeLongBlob:
    case wire::mysql::kTypeBlob:
      return charset != wire::mysql::kBinaryCharset;
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
    c.is_unsigned = (d.flags & wire::mysql::kUnsignedFlag) != 0;
    plan.types.push_back(d.type);
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
  std::vector<wire::mysql::RowValue> values;
  absl::Status split = wire::mysql::SplitTextRow(payload, plan.columns.size(), &values);
  if (!split.ok()) return split;
  bool changed = false;
  size_t copied = 0;  // bytes of `payload` already in `*out` (once changed)
  std::string scratch;
  for (size_t i = 0; i < values.size(); ++i) {
    const wire::mysql::RowValue& v = values[i];
    if (v.null) continue;
    Outcome o = MaskTextValue(v.data, plan.columns[i], policy, &scratch);
    if (o == Outcome::kUnchanged) continue;
    if (!changed) {
      out->clear();
      out->reserve(payload.size() + 64);
      changed = true;
    }
    out->append(payload.data() + copied, v.begin - copied);
    if (o == Outcome::kNull) {
      wire::mysql::PutInt1(out, kNullMarker);
    } else {
      wire::mysql::PutLenencString(out, scratch);
    }
    copied = v.end;
  }
  if (!changed) return false;
  out->append(payload.data() + copied, payload.size() - copied);
  return true;
}

absl::StatusOr<bool> MaskBinaryRow(absl::string_view payload, const ResultPlan& plan,
                                   const MaskingPolicy& policy, std::string* out) {
  std::vector<wire::mysql::RowValue> values;
  std::vector<uint8_t> own_types;  // for a plan made by hand, without `types`
  if (plan.types.size() != plan.columns.size()) {
    for (const ColumnPlan& c : plan.columns) own_types.push_back(c.type);
  }
  absl::Status split =
      wire::mysql::SplitBinaryRow(payload, own_types.empty() ? plan.types : own_types, &values);
  if (!split.ok()) return split;
  const size_t values_at = 1 + (values.size() + 7 + 2) / 8;  // after the header and bitmap
  bool changed = false;
  size_t copied = values_at;
  std::string scratch;
  for (size_t i = 0; i < values.size(); ++i) {
    const wire::mysql::RowValue& v = values[i];
    if (v.null) continue;
    const ColumnPlan& c = plan.columns[i];
    Outcome o =
        MaskBinaryValue(v.data, wire::mysql::BinaryTypeOf(c.type).layout, c, policy, &scratch);
    if (o == Outcome::kUnchanged) continue;
    if (!changed) {
      out->clear();
      out->reserve(payload.size() + 64);
      out->append(payload.data(), values_at);  // header and bitmap (bits set below)
      changed = true;
    }
    out->append(payload.data() + copied, v.begin - copied);
    if (o == Outcome::kReplaced) {
      wire::mysql::PutLenencString(out, scratch);
    } else {
      char& bits = (*out)[1 + (i + 2) / 8];
      bits = static_cast<char>(static_cast<uint8_t>(bits) | 1u << ((i + 2) % 8));
    }
    copied = v.end;
  }
  if (!changed) return false;
  out->append(payload.data() + copied, payload.size() - copied);
  return true;
}

}  // namespace sluice::agent::mysql
