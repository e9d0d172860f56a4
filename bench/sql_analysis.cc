// bench/sql_analysis: what the agent's statement analysis costs per statement on this machine,
// with the real code: the parse and classification (AnalyzeStatement: libpg_query, the JSON
// tree, facts, column lineage), the lineage alone on a parsed tree, and a repeated shape through
// the per-worker cache (the lexer and one hash lookup). Usage: sql_analysis_bench [--runs N]
#include "agent/postgres/sql_analysis.h"

#include <pg_query.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/strings/numbers.h"
#include "agent/postgres/lineage.h"

namespace {

using sluice::agent::postgres::AnalyzeStatement;
using sluice::agent::postgres::ComputeLineage;
using sluice::agent::postgres::StatementCache;
using Clock = std::chrono::steady_clock;

// Microseconds per call of `f`, the best of five rounds of `runs`.
template <typename F>
double Best(int runs, F f) {
  double best = 1e18;
  for (int round = 0; round < 5; ++round) {
    auto t0 = Clock::now();
    for (int i = 0; i < runs; ++i) f(i);
    best =
        std::min(best, std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / runs);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 2000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && !absl::SimpleAtoi(argv[i + 1], &runs)) return 2;
  }
  const char* statements[] = {
      "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
      "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2",
      "SELECT c.email, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = "
      "3",
      "WITH t AS (SELECT ssn || '' AS x FROM customers) SELECT lower(x), count(*) FROM t GROUP BY "
      "1",
  };
  size_t sink = 0;
  std::printf("%-100s %10s %10s %10s\n", "statement", "analyze", "lineage", "cached");
  for (const char* sql : statements) {
    PgQueryParseResult r = pg_query_parse(sql);
    if (r.error != nullptr) return 1;
    nlohmann::json tree = nlohmann::json::parse(r.parse_tree);
    pg_query_free_parse_result(r);
    const nlohmann::json& stmt = tree["stmts"][0]["stmt"];
    double analyze = Best(runs, [&](int) { sink += AnalyzeStatement(sql).statements.size(); });
    double lineage = Best(runs, [&](int) { sink += ComputeLineage(stmt).reads.size(); });
    StatementCache cache;
    double cached = Best(runs * 10, [&](int) { sink += cache.Get(sql).statements.size(); });
    std::printf("%-100s %8.2fus %8.2fus %8.2fus\n", sql, analyze, lineage, cached);
  }
  std::printf("(lineage is part of analyze; cached = a repeated shape; %zu)\n", sink % 2);
  return 0;
}
