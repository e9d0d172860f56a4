// Column lineage (lineage.h) judged under one session's MaskingPolicy: which statements may run,
// which result columns are masked whole because they are computed from masked columns, and
// whether the server's error and notice texts for a statement must be withheld.
//
// The wire masks a result column whose RowDescription names a masked table column (a plain
// reference). Lineage covers what the wire cannot see:
//   - a result column computed from a masked column (`ssn || ''`, `row_to_json(c)`,
//     `array_agg(ssn)`, a UNION's column) is masked whole; `partial` becomes `redact` for it,
//     since its last characters could be any of the original's;
//   - a statement is refused, with a message naming the masked column, when a masked value would
//     leave other than as a result column (NOTIFY, set_config, rows written to a table, a cursor
//     or prepared statement over computed values), when it reads data in a way the analysis cannot
//     follow (SQL from a string, whole tables by name, DO, CALL), or when the result columns
//     cannot be placed (several `*`, a computed column in a multi-statement string);
//   - a statement that reads a masked column anywhere has the texts of its errors and notices
//     withheld (an error can quote the value: `ssn::int`).
// Pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/masking/policy.h"
#include "agent/postgres/sql_analysis.h"

namespace sluice::agent::postgres {

struct LineageVerdict {
  std::string refusal;        // non-empty: why the statement may not run (names the masked column)
  bool reads_masked = false;  // some masked column is read: error and notice texts are withheld
  std::string masked;         // the masked columns it reads ("customers.ssn, customers.email")
};

// The verdict on every statement of `info` (a parse failure reads nothing the agent can tell:
// no verdict; the read grant and guardrails decide on it).
LineageVerdict JudgeLineage(const StatementInfo& info, const masking::MaskingPolicy& policy);

// For a result of `field_count` columns returned by `info` (a single statement; several with at
// most one returning computed masked columns), the rule and strategy for each column that is
// computed from masked columns and so masked whole (nullopt: the wire's own plan decides). Empty
// when no column needs one. An error when the columns cannot be placed.
absl::StatusOr<std::vector<std::optional<masking::Selected>>> ComputedColumnStrategies(
    const StatementInfo& info, const masking::MaskingPolicy& policy, size_t field_count);

}  // namespace sluice::agent::postgres
