// The MaskingRules in force for one session: which table columns are masked whole, which
// detectors run on every text value, and with which strategy. Built per session from the
// snapshot, the session's connection and the caller (a rule whose `exempt` selects the caller
// does not apply to them). No protocol knowledge: the PostgreSQL relay maps result columns to
// tables and asks here.
//
// Several rules may select the same column or run the same detector: the strictest strategy
// wins (null > redact > hash > partial: the one that reveals least).
// Column patterns are `table.column`, each part a glob (`*.email`, `customers.ssn`,
// `cust*.card_*`), matched case-insensitively against the table's name (without schema) and the
// column's name in the table, whatever the result calls it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/masking/values.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::masking {

// What a rule decided for a value: the strategy, and the rule's name (for audit).
struct Selected {
  v1::MaskingStrategy strategy = v1::MASKING_STRATEGY_REDACT;
  const std::string* rule = nullptr;
};

// Which of two strategies reveals less.
v1::MaskingStrategy Stricter(v1::MaskingStrategy a, v1::MaskingStrategy b);

class MaskingPolicy {
 public:
  MaskingPolicy() = default;
  // The MaskingRules of `snapshot` that select `connection` and do not exempt the caller.
  MaskingPolicy(const v1::PolicySnapshot& snapshot, const v1::Connection& connection,
                const std::string& issuer_name, const std::string& subject,
                const std::vector<std::string>& groups);

  bool empty() const { return columns_.empty() && detectors_ == nullptr; }
  bool has_column_rules() const { return !columns_.empty(); }
  bool has_detectors() const { return detectors_ != nullptr; }

  // The rule that masks column `column` of table `table` (no schema) whole, if any.
  std::optional<Selected> ForColumn(absl::string_view table, absl::string_view column) const;
  // For a result column that comes from no table (an expression): `*.column` patterns are
  // matched against its label, so `SELECT lower(email) AS email` is still caught by name.
  std::optional<Selected> ForLabel(absl::string_view label) const;
  // For a whole-row reference to table `table` (no schema), e.g. `row_to_json(c)`: the strictest
  // rule whose table pattern matches it, whatever its column pattern (the row holds every column).
  std::optional<Selected> ForAnyColumnOf(absl::string_view table) const;

  enum class Outcome { kUnchanged, kReplaced, kNull };
  // Runs the detectors on `text`. kReplaced: `*out` is the text with each finding masked by its
  // detector's strategy; kNull: a finding's strategy is `null`. With `json`, `text` is a JSON
  // document: a finding outside a string (a number) is replaced by a JSON string, so the
  // document stays valid.
  Outcome MaskText(absl::string_view text, std::string* out, bool json = false) const;
  // `value` masked whole by `strategy` (nullopt: NULL).
  std::optional<std::string> MaskWhole(absl::string_view value,
                                       v1::MaskingStrategy strategy) const {
    return MaskValue(value, strategy, key_);
  }
  // The rules that run detectors, for audit ("which rule masked this result").
  const std::vector<std::string>& detector_rules() const { return detector_rules_; }

 private:
  struct ColumnPattern {
    std::string table;   // lower-case glob
    std::string column;  // lower-case glob
    v1::MaskingStrategy strategy;
    std::string rule;
  };
  std::vector<ColumnPattern> columns_;
  std::shared_ptr<const Detectors> detectors_;
  v1::MaskingStrategy by_detector_[6] = {};  // indexed by Detector
  std::vector<std::string> detector_rules_;
  HashKey key_;
};

}  // namespace sluice::agent::masking
