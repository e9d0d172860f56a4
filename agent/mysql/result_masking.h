// Masking of MySQL / MariaDB result rows on the wire: a plan per result set (from its column
// definitions and the tables the statement names), applied to each row in the text protocol
// (COM_QUERY) or the binary protocol (COM_STMT_EXECUTE). Pure functions, no I/O; the session
// feeds them and relays what they return. Modelled on agent/postgres/result_masking.h.
//
// Which rule masks a column whole (PlanResult):
//   - a column with a base table (org_table) that the statement names, and an org_name: the rule
//     for org_table.org_name (ForColumn). The label does not matter: `SELECT ssn AS x` keeps
//     org_name ssn. For a view column org_table is the view's name: rules name views' columns;
//   - any other column: an expression (no org_table: `concat(ssn)`, a UNION's columns, a scalar
//     subquery), a derived table's or CTE's column (org_table is the alias), or a column whose
//     org_name is empty. The agent does not follow MySQL expressions, so it is conservative: the
//     strictest of the rule for its label (ForLabel), for org_table.org_name when both are set,
//     and for any column of each table the statement names (ForAnyColumnOf): a computed column
//     of a statement that reads a table with masked columns may carry their values
//     (`SELECT concat(ssn) FROM customers`). This deliberately over-masks computed columns that
//     carry nothing sensitive, such as count(*) or now() in a statement that reads such a table
//     (and, under a `*.column` rule, in any statement that names a table): fail closed.
//   - `defined_names` are the names the statement gives its own row sources (CTE names,
//     derived-table aliases). MySQL reports a CTE's or a materialized derived table's columns
//     with org_table = that name, and a CTE may shadow a table's name
//     (`WITH customers AS (SELECT ssn AS name FROM customers) SELECT name FROM customers` reports
//     customers.name): a column whose org_table is a defined name is planned conservatively even
//     when a table of that name is named too. Without them, such a column passes as the base
//     column it claims to be.
//   - otherwise, with detectors on, they run on the column's values (kDetect).
//
// How a value is masked:
//   - masked whole: a text-like type (VARCHAR, VAR_STRING, STRING, ENUM, SET, JSON, and the BLOB
//     types when their charset is not binary) keeps a string (the strategy's marker, partial text
//     or token); any other type (numbers, DECIMAL, dates and times, BIT, GEOMETRY, binary
//     blobs) becomes NULL, in both protocols: in the text protocol every value is a string, but a
//     client that parses a number or a date would fail on "[REDACTED]". The `null` strategy
//     gives NULL for every type;
//   - detectors, text rows: on every value (JSON type, or a value that looks like a JSON
//     document, as JSON); each finding masked in place in a text-like value; a finding in a value
//     of another type makes it NULL;
//   - detectors, binary rows: on the string-typed values (lenenc strings: text-like types,
//     DECIMAL, BIT, binary blobs, GEOMETRY) and on integers and floating-point numbers rendered
//     as decimal text (a card number in a BIGINT is caught); a finding masks a text-like value in
//     place and makes any other NULL. Dates and times are not searched.
//   - NULLs stay NULL.
//
// A row that does not fit the plan (short, trailing bytes, a NULL marker or a length where none
// may be, a binary value of a type this file does not know) is an error: the session then ends,
// it never relays such a row unmasked. Lengths are checked against the payload before use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/masking/policy.h"
#include "agent/session/statement_facts.h"
#include "common/wire/mysql/packets.h"

namespace sluice::agent::mysql {

struct ColumnPlan {
  enum Kind : uint8_t { kPass, kWhole, kDetect };
  Kind kind = kPass;
  v1::MaskingStrategy strategy = v1::MASKING_STRATEGY_REDACT;  // for kWhole
  uint8_t type = 0;                                            // the column's MySQL type
  bool text_like = false;    // a masked value keeps a string (else it becomes NULL)
  bool is_unsigned = false;  // an integer type with UNSIGNED_FLAG (binary rows render it)
};

struct ResultPlan {
  std::vector<ColumnPlan> columns;
  std::vector<uint8_t> types;      // the columns' types, as wire::mysql::SplitBinaryRow takes them
  bool active = false;             // some column is not kPass
  std::vector<std::string> rules;  // the rules that apply (for audit)
  std::vector<std::string> masked_columns;  // labels of the columns masked whole
};

// The plan for a result set described by `columns`, given `relations`, every table the statement
// names (from the agent's SQL analysis; names compared case-insensitively, schemas ignored), and
// `defined_names`, the CTE names and derived-table aliases it defines (see the file comment).
ResultPlan PlanResult(const std::vector<wire::mysql::ColumnDefinition>& columns,
                      const std::vector<session::Relation>& relations,
                      const masking::MaskingPolicy& policy,
                      const std::vector<std::string>& defined_names = {});

// Masks one text-protocol row (a ProtocolText::ResultsetRow payload: one length-encoded string
// or 0xFB per column). false: unchanged; true: `*out` holds the new payload (unframed).
absl::StatusOr<bool> MaskTextRow(absl::string_view payload, const ResultPlan& plan,
                                 const masking::MaskingPolicy& policy, std::string* out);

// Masks one binary-protocol row (a ProtocolBinary::ResultsetRow payload: 0x00, a NULL bitmap of
// (columns + 9) / 8 bytes whose bits start at bit 2, then each non-NULL value by its column's
// type). false: unchanged; true: `*out` holds the new payload (unframed).
absl::StatusOr<bool> MaskBinaryRow(absl::string_view payload, const ResultPlan& plan,
                                   const masking::MaskingPolicy& policy, std::string* out);

// MySQL column types whose masked values keep a string (see the file comment); `charset` tells
// binary blobs (63) from text ones.
bool TextLikeType(uint8_t type, uint16_t charset);

}  // namespace sluice::agent::mysql
