// Masking of BigQuery result rows (jobs.query, jobs.getQueryResults) by the MaskingRules'
// `table.column` patterns and detectors, following each output column back to what it is made
// of, and failing closed where the agent cannot tell:
//
//   - an output column that is a column of a table the query reads (`ssn`, `c.ssn`, `ssn AS x`)
//     is masked by that column's rule, whatever it is called in the result;
//   - `*` (with nothing renamed beside it) is matched by the output's name against the tables;
//   - an expression is masked when any name it uses is a masked column of a table the query
//     reads (STRING_AGG(ssn), UPPER(email)), or stands for a whole row of a table with any masked
//     column (TO_JSON_STRING(c)), or when its own name matches a `*.column` pattern;
//   - a query whose select list the agent does not read (WITH, UNION, AS STRUCT, scripting) has
//     every output column masked by the strictest rule of any table it reads that has one.
//
// A masked value is replaced whole (its rule's strategy; a record or an array becomes null, as
// it has no text to keep part of); detectors then run on every remaining string value, nested
// and repeated ones included.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/gcs/googlesql.h"
#include "agent/masking/policy.h"

namespace sluice::agent::gcs {

// For each output column (in the order of the answer's schema), the rule that masks it whole.
using ColumnPlan = std::vector<std::optional<masking::Selected>>;

ColumnPlan PlanQueryMasking(const masking::MaskingPolicy& policy, const GoogleSqlAnalysis& query,
                            const std::vector<std::string>& output_names);

struct MaskedRows {
  int64_t rows = 0;                // rows with at least one value masked
  std::vector<std::string> rules;  // the rules that masked them
};

// Masks `answer` (a query answer: `schema.fields` and `rows[].f[].v`) in place by `query`'s
// plan and the detectors. An answer without rows is left as it is; one whose rows do not match
// its schema is refused (FailedPrecondition), never passed on unmasked.
absl::StatusOr<MaskedRows> MaskQueryAnswer(const masking::MaskingPolicy& policy,
                                           const GoogleSqlAnalysis& query, nlohmann::json* answer);

}  // namespace sluice::agent::gcs
