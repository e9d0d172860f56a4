// Numbered schema migrations of the SQLite store. Migration N is applied once, in its own
// transaction, and recorded in schema_migrations; never edit a released migration, add one.
#pragma once

#include <sqlite3.h>

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice::controlplane {

// The newest schema version this build knows.
int LatestSchemaVersion();

// The schema version of `db` (0 for an empty database).
absl::StatusOr<int> SchemaVersion(sqlite3* db);

// The migration that anchors audit trails (trail heads, totals, purge tombstones).
inline constexpr int kTrailAnchorMigration = 12;

// Applies every migration above the current version up to `target` (LatestSchemaVersion() by
// default). Refuses a database whose version is newer than this build knows. `after` (may be
// empty) runs after each migration's own steps, in its transaction: for data steps that need more
// than the database (the trail key signs the trails found when migration 12 runs).
using MigrationHook = std::function<absl::Status(sqlite3* db, int version)>;
absl::Status Migrate(sqlite3* db, int target = -1, const MigrationHook& after = nullptr);

// Runs one SQL script (no result rows), for migrations and tests.
absl::Status ExecSql(sqlite3* db, const char* sql);

}  // namespace sluice::controlplane
