#include "agent/gcs/bigquery_masking.h"

#include <algorithm>

#include "absl/strings/ascii.h"

namespace sluice::agent::gcs {
namespace {

void Stricter(std::optional<masking::Selected>* into, const std::optional<masking::Selected>& s) {
  if (!s) return;
  if (!*into || masking::Stricter((*into)->strategy, s->strategy) != (*into)->strategy) *into = s;
}

// The tables a name stands for as a whole row: an alias or a table's own name.
std::vector<std::string> RowsNamed(const GoogleSqlStatement& s, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& [alias, table] : s.aliases) {
    if (alias == name) out.push_back(table);
  }
  return out;
}

// The strictest rule for any column of any table `s` reads.
std::optional<masking::Selected> AnyOf(const masking::MaskingPolicy& policy,
                                       const std::vector<session::Relation>& relations) {
  std::optional<masking::Selected> out;
  for (const auto& rel : relations) Stricter(&out, policy.ForAnyColumnOf(rel.table));
  return out;
}

std::optional<masking::Selected> ColumnOfAny(const masking::MaskingPolicy& policy,
                                             const std::vector<session::Relation>& relations,
                                             const std::string& column) {
  std::optional<masking::Selected> out;
  for (const auto& rel : relations) Stricter(&out, policy.ForColumn(rel.table, column));
  return out;
}

}  // namespace

ColumnPlan PlanQueryMasking(const masking::MaskingPolicy& policy, const GoogleSqlAnalysis& query,
                            const std::vector<std::string>& output_names) {
  ColumnPlan plan(output_names.size());
  if (!policy.has_column_rules()) return plan;
  std::vector<session::Relation> all;
  for (const auto& s : query.statements)
    all.insert(all.end(), s.relations.begin(), s.relations.end());
  const bool readable = query.statements.size() == 1 && query.statements[0].simple_select;
  if (!readable) {
    const auto any = AnyOf(policy, all);
    for (size_t i = 0; i < plan.size(); ++i) {
      plan[i] = any;
      Stricter(&plan[i], policy.ForLabel(absl::AsciiStrToLower(output_names[i])));
    }
    return plan;
  }
  const GoogleSqlStatement& s = query.statements[0];
  bool star = false, renamed = false, replaced = false;
  for (const SelectItem& item : s.select) {
    star = star || item.kind == SelectItem::kStar;
    replaced = replaced || item.star_replace;
    renamed = renamed || item.kind == SelectItem::kExpression ||
              (item.kind == SelectItem::kColumn && item.name != item.column);
  }
  if ((star && renamed) || replaced || (!star && plan.size() != s.select.size())) {
    // A star's columns and renamed ones side by side, a star whose columns may hold anything,
    // or not one output per item: positions cannot be told apart.
    const auto any = AnyOf(policy, all);
    for (auto& p : plan) p = any;
    return plan;
  }
  for (size_t i = 0; i < plan.size(); ++i) {
    const std::string name = absl::AsciiStrToLower(output_names[i]);
    Stricter(&plan[i], policy.ForLabel(name));
    if (star) {
      Stricter(&plan[i], ColumnOfAny(policy, all, name));
      continue;
    }
    const SelectItem& item = s.select[i];
    for (const std::string& id : item.identifiers) {
      Stricter(&plan[i], ColumnOfAny(policy, all, id));
      for (const std::string& table : RowsNamed(s, id))
        Stricter(&plan[i], policy.ForAnyColumnOf(table));
    }
  }
  return plan;
}

namespace {

// Detectors over every string in `v` (a cell: a string, a record {"f": [...]}, an array of
// {"v": ...}); counts replacements in `*changed`.
void Detect(const masking::MaskingPolicy& policy, nlohmann::json* v, int64_t* changed) {
  if (v->is_string()) {
    std::string out;
    switch (policy.MaskText(v->get_ref<const std::string&>(), &out)) {
      case masking::MaskingPolicy::Outcome::kReplaced:
        *v = std::move(out);
        ++*changed;
        break;
      case masking::MaskingPolicy::Outcome::kNull:
        *v = nullptr;
        ++*changed;
        break;
      case masking::MaskingPolicy::Outcome::kUnchanged:
        break;
    }
    return;
  }
  if (v->is_object()) {
    for (auto& [key, inner] : v->items()) Detect(policy, &inner, changed);
  } else if (v->is_array()) {
    for (auto& inner : *v) Detect(policy, &inner, changed);
  }
}

}  // namespace

absl::StatusOr<MaskedRows> MaskQueryAnswer(const masking::MaskingPolicy& policy,
                                           const GoogleSqlAnalysis& query, nlohmann::json* answer) {
  MaskedRows out;
  if (!answer->is_object() || !answer->contains("rows")) return out;
  auto& rows = (*answer)["rows"];
  if (!rows.is_array()) return absl::FailedPreconditionError("the answer's rows are not a list");
  std::vector<std::string> names;
  auto schema = answer->find("schema");
  if (schema == answer->end() || !schema->is_object() || !schema->contains("fields") ||
      !(*schema)["fields"].is_array()) {
    return absl::FailedPreconditionError("the answer has rows but no schema to mask them by");
  }
  for (const auto& f : (*schema)["fields"]) {
    names.push_back(f.is_object() && f.contains("name") && f["name"].is_string()
                        ? f["name"].get<std::string>()
                        : std::string());
  }
  const ColumnPlan plan = PlanQueryMasking(policy, query, names);
  auto add_rule = [&out](const std::string& rule) {
    if (std::find(out.rules.begin(), out.rules.end(), rule) == out.rules.end())
      out.rules.push_back(rule);
  };
  for (auto& row : rows) {
    if (!row.is_object() || !row.contains("f") || !row["f"].is_array() ||
        row["f"].size() != names.size()) {
      return absl::FailedPreconditionError("a row does not match the answer's schema");
    }
    int64_t changed = 0;
    auto& cells = row["f"];
    for (size_t i = 0; i < names.size(); ++i) {
      auto& cell = cells[i];
      if (!cell.is_object() || !cell.contains("v"))
        return absl::FailedPreconditionError("a row's value is not a cell");
      auto& v = cell["v"];
      if (plan[i] && !v.is_null()) {
        if (v.is_string()) {
          auto masked = policy.MaskWhole(v.get_ref<const std::string&>(), plan[i]->strategy);
          v = masked ? nlohmann::json(*masked) : nlohmann::json(nullptr);
        } else {
          v = nullptr;
        }
        ++changed;
        if (plan[i]->rule != nullptr) add_rule(*plan[i]->rule);
        continue;
      }
      if (policy.has_detectors()) {
        int64_t before = changed;
        Detect(policy, &v, &changed);
        if (changed > before) {
          for (const auto& r : policy.detector_rules()) add_rule(r);
        }
      }
    }
    if (changed > 0) ++out.rows;
  }
  return out;
}

}  // namespace sluice::agent::gcs
