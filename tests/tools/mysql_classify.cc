// mysql_classify: the agent's MySQL / MariaDB statement classifier (agent/mysql/sql_analysis.h)
// as a filter, for tests that compare it with a real server. Reads JSON lines
//   {"sql": "...", "sql_mode": "...", "mariadb_version": 101106}
// (sql_mode and mariadb_version optional: "" and 0) from stdin and writes one JSON line per input:
//   {"class": "read", "kind": "SELECT", "unsafe": "", "lifts_read_only": false,
//    "guarded": [...], "functions": [...], "statements": 1, "parse_error": ""}
// A line that is not such an object gets {"error": "..."}. Exit status 0 unless stdin fails.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/mysql/sql_analysis.h"

namespace {

using nlohmann::json;
using sluice::agent::mysql::AnalyzeStatement;
using sluice::agent::mysql::ClassName;
using sluice::agent::mysql::LexMode;
using sluice::agent::mysql::LexModeFromSqlMode;
using sluice::agent::mysql::StatementInfo;

json Classify(const json& in) {
  if (!in.is_object() || !in.contains("sql") || !in["sql"].is_string()) {
    return json{{"error", "each line must be an object with a string \"sql\""}};
  }
  std::string sql_mode;
  if (in.contains("sql_mode") && in["sql_mode"].is_string()) sql_mode = in["sql_mode"];
  uint32_t version = 0;
  if (in.contains("mariadb_version") && in["mariadb_version"].is_number_unsigned()) {
    version = in["mariadb_version"].get<uint32_t>();
  }
  LexMode mode = LexModeFromSqlMode(sql_mode, version);
  StatementInfo info = AnalyzeStatement(in["sql"].get<std::string>(), mode);
  json guarded = json::array();
  json functions = json::array();
  std::string kind(info.deciding_kind());
  for (const auto& s : info.statements) {
    for (const auto& g : s.guarded) {
      if (std::find(guarded.begin(), guarded.end(), g) == guarded.end()) guarded.push_back(g);
    }
    for (const auto& f : s.functions) {
      if (std::find(functions.begin(), functions.end(), f) == functions.end()) {
        functions.push_back(f);
      }
    }
  }
  return json{{"class", ClassName(info.overall)},
              {"kind", kind},
              {"unsafe", info.unsafe},
              {"lifts_read_only", info.unsafe_lifts_read_only},
              {"guarded", guarded},
              {"functions", functions},
              {"statements", info.statements.size()},
              {"parse_error", info.parse_error}};
}

}  // namespace

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    json in = json::parse(line, nullptr, /*allow_exceptions=*/false);
    json out = in.is_discarded() ? json{{"error", "not JSON"}} : Classify(in);
    // Texts need not be UTF-8: invalid bytes are replaced rather than refused.
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  std::cout.flush();
  return std::cin.bad() ? 1 : 0;
}
