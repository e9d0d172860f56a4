// Table and column names behind result columns, for masking by column name.
//
// A RowDescription names each column's source by table OID and attribute number; the agent turns
// those into names with its own catalog query, on a side connection to the same database that
// it opens with the Connection's credentials the first time a session needs a name it does not
// have. Answers are cached for all sessions of the agent (per upstream database) for a minute:
// a table renamed within that minute is still known by its old name.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/postgres/sql_analysis.h"
#include "agent/postgres/upstream.h"

namespace sluice::agent::postgres {

struct TableNames {
  std::string schema;
  std::string table;
  std::vector<std::string> columns;  // by attribute number - 1; empty where dropped
  // The name of attribute `attnum`, or empty.
  absl::string_view Column(int attnum) const {
    if (attnum < 1 || static_cast<size_t>(attnum) > columns.size()) return absl::string_view();
    return columns[attnum - 1];
  }
};

// A function, as a FunctionCall names it by OID.
struct FunctionNames {
  std::string schema;
  std::string name;
  char volatility = 'v';  // pg_proc.provolatile: 'i' immutable, 's' stable, 'v' volatile
};

// Process-wide, thread-safe, bounded.
class CatalogCache {
 public:
  static CatalogCache& Instance();
  std::shared_ptr<const TableNames> Find(const std::string& scope, uint32_t oid, absl::Time now);
  void Put(const std::string& scope, uint32_t oid, std::shared_ptr<const TableNames> names,
           absl::Time now);

 private:
  struct Entry {
    std::shared_ptr<const TableNames> names;
    absl::Time expires;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// One session's catalog lookups (the side connection lives as long as the session).
class CatalogResolver {
 public:
  CatalogResolver(UpstreamTarget target, UpstreamLogin login, wire::postgres::DecodeLimits limits);
  ~CatalogResolver();

  // The names of the tables `oids` (cached or looked up). A table that no longer exists is
  // missing from the answer; a failed lookup is an error.
  asio::awaitable<absl::StatusOr<absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>>>>
  Tables(const std::vector<uint32_t>& oids);
  // The table `relation` resolves to on the side connection's default search_path (for COPY),
  // or nullptr when there is none.
  asio::awaitable<absl::StatusOr<std::shared_ptr<const TableNames>>> TableByName(
      const Relation& relation);
  // The function with OID `oid` (never cached: a FunctionCall is rare), or nullopt when there is
  // none.
  asio::awaitable<absl::StatusOr<std::optional<FunctionNames>>> Function(uint32_t oid);

 private:
  using Row = std::vector<std::optional<std::string>>;
  // Runs `sql` on the side connection; its rows, or the server's error.
  asio::awaitable<absl::StatusOr<std::vector<Row>>> Rows(const std::string& sql);
  // Runs a catalog query returning (oid, schema, table, attnum, attname) rows.
  asio::awaitable<absl::StatusOr<absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>>>>
  Query(const std::string& sql);

  UpstreamTarget target_;
  UpstreamLogin login_;
  wire::postgres::DecodeLimits limits_;
  std::string scope_;
  UpstreamSession side_;
};

}  // namespace sluice::agent::postgres
