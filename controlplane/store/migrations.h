// Numbered schema migrations of the SQLite store. Migration N is applied once, in its own
// transaction, and recorded in schema_migrations; never edit a released migration, add one.
#pragma once

#include <sqlite3.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice::controlplane {

// The newest schema version this build knows.
int LatestSchemaVersion();

// The schema version of `db` (0 for an empty database).
absl::StatusOr<int> SchemaVersion(sqlite3* db);

// Applies every migration above the current version up to `target` (LatestSchemaVersion() by
// default). Refuses a database whose version is newer than this build knows.
absl::Status Migrate(sqlite3* db, int target = -1);

// Runs one SQL script (no result rows), for migrations and tests.
absl::Status ExecSql(sqlite3* db, const char* sql);

}  // namespace sluice::controlplane
