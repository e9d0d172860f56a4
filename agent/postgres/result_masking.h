// Masking of PostgreSQL results on the wire: a plan per result (from its RowDescription and the
// names of the tables behind its columns), applied to each DataRow, and to each row of
// COPY ... TO STDOUT in text and CSV formats. Pure functions; the session feeds them.
//
// Per column:
//   - a column a MaskingRule selects by name (its table column, or for an expression its label
//     against `*.column`) is masked whole. A text-like type (text, varchar, char, name) keeps a
//     string: the strategy's marker, partial text or token; any other type (numbers, dates,
//     json, bytea, ...) becomes NULL, in either format, so no client fails to parse it;
//   - otherwise, when detectors are on, they run on every value in text format and on binary
//     values of text-like types and json/jsonb; each finding is masked in place. A finding in a
//     number or date in text format makes the value NULL.
// Binary values of other types (arrays, records, bytea) are not searched by detectors.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agent/masking/policy.h"
#include "agent/postgres/catalog.h"
#include "common/wire/postgres/messages.h"

namespace sluice::agent::postgres {

struct ColumnPlan {
  enum Kind : uint8_t { kPass, kWhole, kDetect };
  Kind kind = kPass;
  v1::MaskingStrategy strategy = v1::MASKING_STRATEGY_REDACT;  // for kWhole
  bool binary = false;
  int32_t type_oid = 0;
};

struct ResultPlan {
  std::vector<ColumnPlan> columns;
  bool active = false;                      // some column is not kPass
  std::vector<std::string> rules;           // the rules that apply (for audit)
  std::vector<std::string> masked_columns;  // labels of the columns masked by name
};

// The plan for a result described by `fields` (formats as they will be sent), given the tables
// behind them (by OID; a missing table is treated as unnamed). `computed`, when not empty, has one
// entry per field: a rule for a column computed from masked columns (lineage_masking.h), masked
// whole whatever its origin says.
ResultPlan PlanResult(
    const std::vector<wire::postgres::RowDescription::Field>& fields,
    const absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>>& tables,
    const masking::MaskingPolicy& policy,
    const std::vector<std::optional<masking::Selected>>& computed = {});

// The plan for COPY ... TO STDOUT of a table's `columns` (all text-like on the wire).
ResultPlan PlanCopy(const std::string& table, const std::vector<std::string>& columns,
                    size_t column_count, const masking::MaskingPolicy& policy);

// Masks one DataRow (its payload). Returns false when nothing changed; true with `*out` holding
// the whole new message. A row that does not fit the plan is an error (the session ends).
absl::StatusOr<bool> MaskDataRow(absl::string_view payload, const ResultPlan& plan,
                                 const masking::MaskingPolicy& policy, std::string* out);

// How COPY TO STDOUT writes rows (from the statement's options).
struct CopyFormat {
  bool csv = false;
  char delimiter = '\t';
  std::string null_string = "\\N";
  char quote = '"';
  char escape = '"';
  bool header = false;
};

// Masks one row of COPY text or CSV output (a CopyData payload). Returns false when nothing
// changed; true with `*out` holding the whole new CopyData message.
absl::StatusOr<bool> MaskCopyRow(absl::string_view row, const ResultPlan& plan,
                                 const CopyFormat& format, const masking::MaskingPolicy& policy,
                                 std::string* out);

// Runs the detectors on the human-readable fields of an ErrorResponse or NoticeResponse
// (message, detail, hint, context, internal query): `Key (email)=(ada@example.com) already
// exists` is a result too. Returns false when nothing changed; true with `*out` holding the
// whole new message of `type`.
absl::StatusOr<bool> MaskErrorOrNotice(char type, absl::string_view payload,
                                       const masking::MaskingPolicy& policy, std::string* out);

// An ErrorResponse or NoticeResponse of a statement that reads masked columns (`masked` names
// them), with the texts that can quote a value (message, detail, hint, context, internal query)
// withheld: the severity, SQLSTATE and position stay. The whole new message of `type`.
absl::StatusOr<std::string> WithholdErrorOrNotice(char type, absl::string_view payload,
                                                  absl::string_view masked);

// Runs the detectors on the strings of a message that carries values outside any result: a
// NotificationResponse's channel and payload ('A'; NOTIFY can be sent by any session of the
// database) or a ParameterStatus's value ('S'; set_config can report a value back). Returns
// false when nothing changed; true with `*out` holding the whole new message.
absl::StatusOr<bool> MaskSideChannel(char type, absl::string_view payload,
                                     const masking::MaskingPolicy& policy, std::string* out);

// Type OIDs whose values are plain text in both formats.
bool TextLikeType(int32_t type_oid);

}  // namespace sluice::agent::postgres
