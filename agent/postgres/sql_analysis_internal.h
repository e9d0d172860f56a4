// Internal to the statement analysis: nothing but agent/postgres/sql_analysis*.cc includes this
// header; everyone else uses agent/postgres/sql_analysis.h. What the classification and the facts
// (sql_analysis.cc) use of the evaluation of constant expressions (sql_analysis_constants.cc).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::postgres::sql_analysis_internal {

using nlohmann::json;

// The statement text being analyzed (set by AnalyzeStatement for the walk): libpg_query
// 15-4.0's JSON leaves out the value of a negative integer constant as it does a zero
// (`"ival": {}`), so the value is read from the text at the constant's location.
extern thread_local absl::string_view t_text;

// True when a node of one of `kinds` occurs anywhere under `node`.
inline bool Contains(const json& node, const absl::flat_hash_set<absl::string_view>& kinds) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (kinds.contains(it.key())) return true;
      if (Contains(it.value(), kinds)) return true;
    }
  } else if (node.is_array()) {
    for (const auto& v : node) {
      if (Contains(v, kinds)) return true;
    }
  }
  return false;
}

// A WHERE (or MERGE condition) that holds for every row: absent, or a constant expression that
// is true (`true`, `1 = 1`, `2 > 1`, `NOT false`, `1 = 1 OR x = 2`).
bool AlwaysTrue(const json& body, const char* key, bool* sensitive);

// The text of a constant argument (string, number or boolean), when it is one.
std::optional<std::string> ConstantText(const json& node, bool* sensitive);

}  // namespace sluice::agent::postgres::sql_analysis_internal
