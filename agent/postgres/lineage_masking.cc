#include "agent/postgres/lineage_masking.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sluice::agent::postgres {
namespace {

// The strictest rule that masks what `source` can be (see SourceColumn), if any; `*named` gets
// the masked column's name for messages.
std::optional<masking::Selected> Stricter(const std::optional<masking::Selected>& a,
                                          const masking::Selected& b) {
  if (!a || masking::Stricter(a->strategy, b.strategy) != a->strategy) return b;
  return a;
}

std::optional<masking::Selected> Masked(const SourceColumn& source, const StatementLineage& lineage,
                                        const masking::MaskingPolicy& policy, std::string* named) {
  std::optional<masking::Selected> out;
  auto consider = [&](const std::string& table) {
    std::optional<masking::Selected> s = source.column.empty()
                                             ? policy.ForAnyColumnOf(table)
                                             : policy.ForColumn(table, source.column);
    if (!s) return;
    out = Stricter(out, *s);
    if (named->empty())
      *named = absl::StrCat(table, ".", source.column.empty() ? "*" : source.column);
  };
  if (!source.table.empty()) {
    consider(source.table);
  } else {
    for (const std::string& t : lineage.tables) consider(t);
  }
  return out;
}

// The rule for a value computed from `sources` (nullopt: none is masked).
std::optional<masking::Selected> MaskedAny(const std::vector<SourceColumn>& sources,
                                           const StatementLineage& lineage,
                                           const masking::MaskingPolicy& policy,
                                           std::string* named) {
  std::optional<masking::Selected> out;
  for (const SourceColumn& s : sources) {
    if (auto m = Masked(s, lineage, policy, named)) out = Stricter(out, *m);
  }
  return out;
}

// A computed value reveals its last characters no more faithfully than any others: `partial`
// would keep four characters of something derived from the original, so it is masked whole.
v1::MaskingStrategy ForComputed(v1::MaskingStrategy s) {
  return s == v1::MASKING_STRATEGY_PARTIAL ? v1::MASKING_STRATEGY_REDACT : s;
}

// Whether the result column `o` needs the agent's own whole-value masking (it is computed from a
// masked column; plain columns are masked by the wire's plan).
std::optional<masking::Selected> ComputedStrategy(const OutputLineage& o,
                                                  const StatementLineage& lineage,
                                                  const masking::MaskingPolicy& policy,
                                                  std::string* named) {
  if (o.plain) return std::nullopt;
  auto m = MaskedAny(o.sources, lineage, policy, named);
  if (!m) return std::nullopt;
  m->strategy = ForComputed(m->strategy);
  return m;
}

bool AddName(std::vector<std::string>* names, std::string name) {
  if (name.empty() || std::find(names->begin(), names->end(), name) != names->end()) return false;
  names->push_back(std::move(name));
  return true;
}

}  // namespace

LineageVerdict JudgeLineage(const StatementInfo& info, const masking::MaskingPolicy& policy) {
  LineageVerdict v;
  if (!policy.has_column_rules()) return v;
  std::vector<std::string> masked;
  int computed_statements = 0;
  for (const StatementFacts& f : info.statements) {
    const StatementLineage& l = f.lineage;
    if (!l.opaque.empty()) {
      v.refusal = absl::StrCat("it reads data in a way the agent cannot follow to mask it (",
                               l.opaque, ")");
      return v;
    }
    for (const Escape& e : l.escapes) {
      // A cast can fail and quote the value in its error: errors of such statements are
      // withheld (reads_masked), so a cast is no escape here.
      if (absl::StartsWith(e.how, "cast to")) continue;
      std::string named;
      if (Masked(e.source, l, policy, &named)) {
        v.refusal = absl::StrCat("a value of the masked column ", named, " would leave unmasked (",
                                 e.how, "); masked values may only be returned as result columns");
        return v;
      }
    }
    for (const SourceColumn& r : l.reads) {
      std::string named;
      if (Masked(r, l, policy, &named)) AddName(&masked, named);
    }
    int stars = 0;
    bool computed = false;
    std::string computed_name;
    for (const OutputLineage& o : l.outputs) {
      std::string named;
      bool is_computed = ComputedStrategy(o, l, policy, &named).has_value();
      if (!named.empty()) AddName(&masked, named);
      if (o.star) {
        ++stars;
        if (is_computed) {
          v.refusal = absl::StrCat("a * stands for columns computed from the masked column ", named,
                                   ", which the agent cannot place; name the columns");
          return v;
        }
      }
      if (is_computed) {
        computed = true;
        if (computed_name.empty()) computed_name = named;
      }
    }
    if (computed && stars > 1) {
      v.refusal =
          absl::StrCat("a column computed from the masked column ", computed_name,
                       " comes with several * in the select list, so the agent cannot tell which "
                       "result column it is; name the columns");
      return v;
    }
    if (computed) ++computed_statements;
  }
  if (computed_statements > 0 && info.statements.size() > 1) {
    v.refusal =
        "a column computed from a masked column is returned by one statement of several sent "
        "together; "
        "send that statement on its own";
    return v;
  }
  v.reads_masked = !masked.empty();
  v.masked = absl::StrJoin(masked, ", ");
  return v;
}

absl::StatusOr<std::vector<std::optional<masking::Selected>>> ComputedColumnStrategies(
    const StatementInfo& info, const masking::MaskingPolicy& policy, size_t field_count) {
  std::vector<std::optional<masking::Selected>> out;
  if (!policy.has_column_rules()) return out;
  for (const StatementFacts& f : info.statements) {
    const StatementLineage& l = f.lineage;
    std::vector<std::optional<masking::Selected>> per_output;
    bool any = false;
    int star_at = -1;
    for (size_t i = 0; i < l.outputs.size(); ++i) {
      std::string named;
      per_output.push_back(ComputedStrategy(l.outputs[i], l, policy, &named));
      any = any || per_output.back().has_value();
      if (l.outputs[i].star) star_at = static_cast<int>(i);
    }
    if (!any) continue;
    out.assign(field_count, std::nullopt);
    if (star_at < 0) {
      if (l.outputs.size() != field_count) {
        return absl::InternalError(
            absl::StrCat("the result has ", field_count, " columns where the statement names ",
                         l.outputs.size(), ", so its computed masked columns cannot be placed"));
      }
      for (size_t i = 0; i < field_count; ++i) out[i] = per_output[i];
      return out;
    }
    // One `*` (JudgeLineage refused more): the columns before it are in place, those after it
    // are counted from the end.
    size_t before = static_cast<size_t>(star_at);
    size_t after = l.outputs.size() - before - 1;
    if (before + after > field_count) {
      return absl::InternalError(
          "the result has fewer columns than the statement names, so its computed masked "
          "columns cannot be placed");
    }
    for (size_t i = 0; i < before; ++i) out[i] = per_output[i];
    for (size_t k = 0; k < after; ++k) out[field_count - after + k] = per_output[before + 1 + k];
    return out;
  }
  return out;
}

}  // namespace sluice::agent::postgres
