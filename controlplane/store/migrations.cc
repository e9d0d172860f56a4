#include "controlplane/store/migrations.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sluice::controlplane {
namespace {

// Index i holds migration i+1.
const std::vector<const char*>& Migrations() {
  static const auto* m = new std::vector<const char*>{
      // 1: policy resources, the global version, the audit trail of operator actions.
      R"sql(
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta(key, value) VALUES ('policy_version', '0');
        CREATE TABLE resources (
          kind TEXT NOT NULL,
          name TEXT NOT NULL,
          version INTEGER NOT NULL,
          spec BLOB NOT NULL,
          sealed_secret BLOB,
          updated_ms INTEGER NOT NULL,
          updated_by TEXT NOT NULL,
          PRIMARY KEY (kind, name));
        CREATE TABLE audit_events (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          time_ms INTEGER NOT NULL,
          actor TEXT NOT NULL,
          action TEXT NOT NULL,
          target TEXT NOT NULL,
          outcome TEXT NOT NULL,
          detail TEXT NOT NULL);
      )sql",
      // 2: agents and their one-time enrollment tokens.
      R"sql(
        CREATE TABLE agents (
          id TEXT PRIMARY KEY,
          labels TEXT NOT NULL,
          secret_hash TEXT NOT NULL,
          enrolled_ms INTEGER NOT NULL,
          last_seen_ms INTEGER NOT NULL DEFAULT 0,
          agent_version TEXT NOT NULL DEFAULT '',
          capabilities TEXT NOT NULL DEFAULT '',
          applied_version INTEGER NOT NULL DEFAULT 0,
          last_nack_version INTEGER NOT NULL DEFAULT 0,
          last_nack_error TEXT NOT NULL DEFAULT '');
        CREATE TABLE enrollment_tokens (
          token_hash TEXT PRIMARY KEY,
          agent_id TEXT NOT NULL,
          labels TEXT NOT NULL,
          created_ms INTEGER NOT NULL,
          expires_ms INTEGER NOT NULL,
          used_ms INTEGER);
        CREATE INDEX audit_events_time ON audit_events(time_ms);
      )sql",
      // 3: data-path audit events from agents, and the session index built from them.
      R"sql(
        CREATE TABLE agent_events (
          agent_id TEXT NOT NULL,
          sequence INTEGER NOT NULL,
          time_ms INTEGER NOT NULL,
          type TEXT NOT NULL,
          session_id TEXT NOT NULL,
          body TEXT NOT NULL,
          PRIMARY KEY (agent_id, sequence));
        CREATE INDEX agent_events_session ON agent_events(session_id, agent_id, sequence);
        CREATE TABLE sessions (
          session_id TEXT PRIMARY KEY,
          agent_id TEXT NOT NULL,
          connection TEXT NOT NULL,
          subject TEXT NOT NULL,
          issuer TEXT NOT NULL,
          summary TEXT NOT NULL,
          started_ms INTEGER NOT NULL,
          ended_ms INTEGER NOT NULL DEFAULT 0,
          outcome TEXT NOT NULL,
          reason TEXT NOT NULL DEFAULT '',
          statements INTEGER NOT NULL DEFAULT 0,
          errors INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX sessions_started ON sessions(started_ms);
        CREATE INDEX sessions_subject ON sessions(subject, started_ms);
        CREATE INDEX sessions_connection ON sessions(connection, started_ms);
      )sql",
  };
  return *m;
}

}  // namespace

int LatestSchemaVersion() { return static_cast<int>(Migrations().size()); }

absl::Status ExecSql(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> SchemaVersion(sqlite3* db) {
  RETURN_IF_ERROR(ExecSql(db,
                          "CREATE TABLE IF NOT EXISTS schema_migrations ("
                          " version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)"));
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &stmt,
                         nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db)));
  }
  int version = 0;
  if (sqlite3_step(stmt) == SQLITE_ROW) version = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  return version;
}

absl::Status Migrate(sqlite3* db, int target) {
  if (target < 0) target = LatestSchemaVersion();
  ASSIGN_OR_RETURN(int current, SchemaVersion(db));
  if (current > LatestSchemaVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database schema is version ", current, " but this build knows only up to ",
        LatestSchemaVersion(), "; run a newer sluice-controlplane"));
  }
  for (int v = current + 1; v <= target; ++v) {
    RETURN_IF_ERROR(ExecSql(db, "BEGIN IMMEDIATE"));
    absl::Status st = ExecSql(db, Migrations()[v - 1]);
    if (st.ok()) {
      std::string record = absl::StrCat(
          "INSERT INTO schema_migrations(version, applied_ms) VALUES (", v,
          ", CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))");
      st = ExecSql(db, record.c_str());
    }
    if (!st.ok()) {
      ExecSql(db, "ROLLBACK").IgnoreError();
      return absl::InternalError(absl::StrCat("migration ", v, " failed: ", st.message()));
    }
    RETURN_IF_ERROR(ExecSql(db, "COMMIT"));
  }
  return absl::OkStatus();
}

}  // namespace sluice::controlplane
