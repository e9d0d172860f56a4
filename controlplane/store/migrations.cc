#include "controlplane/store/migrations.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/audit/records.h"
#include "common/status_macros.h"
#include "controlplane/store/sqlite_stmt.h"
#include "sluice/v1/agent.pb.h"

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
      // 4: events stored as the agent's chunks of framed records (one row per batch, not per
      // event), with a session -> chunk index; duplicates are recognised by each agent's highest
      // committed sequence (agents send in sequence order). The rows of agent_events move into
      // chunks in MoveAgentEventsToChunks below.
      R"sql(
        CREATE TABLE event_chunks (
          id INTEGER PRIMARY KEY,
          agent_id TEXT NOT NULL,
          first_sequence INTEGER NOT NULL,
          last_sequence INTEGER NOT NULL,
          first_time_ms INTEGER NOT NULL,
          last_time_ms INTEGER NOT NULL,
          events INTEGER NOT NULL,
          records BLOB NOT NULL);
        CREATE INDEX event_chunks_agent ON event_chunks(agent_id, last_sequence);
        CREATE INDEX event_chunks_time ON event_chunks(last_time_ms);
        CREATE TABLE session_chunks (
          session_id TEXT NOT NULL,
          chunk_id INTEGER NOT NULL,
          PRIMARY KEY (session_id, chunk_id)) WITHOUT ROWID;
        ALTER TABLE agents ADD COLUMN events_committed INTEGER NOT NULL DEFAULT 0;
      )sql",
      // 5: the names an agent's certificate may carry, granted with its enrollment token.
      R"sql(
        ALTER TABLE enrollment_tokens ADD COLUMN tls_names TEXT NOT NULL DEFAULT '';
      )sql",
      // 6: approval requests of statements held at agents (the request, its votes and webhook
      // deliveries as one serialized Approval; status and times as columns for listing).
      R"sql(
        CREATE TABLE approvals (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          status TEXT NOT NULL,
          agent_id TEXT NOT NULL,
          agent_request_id TEXT NOT NULL,
          created_ms INTEGER NOT NULL,
          expires_ms INTEGER NOT NULL,
          spec BLOB NOT NULL);
        CREATE INDEX approvals_status ON approvals(status, expires_ms);
        CREATE INDEX approvals_agent ON approvals(agent_id, agent_request_id);
      )sql",
      // 7: the head of each agent's event hash chain (SHA-256 of its last stored record's
      // payload), checked against the next event's prev_hash on ingest.
      R"sql(
        ALTER TABLE agents ADD COLUMN chain_head BLOB NOT NULL DEFAULT x'';
      )sql",
      // 8: each agent's Ed25519 public key, which verifies its signed audit checkpoints.
      R"sql(
        ALTER TABLE agents ADD COLUMN audit_public_key BLOB NOT NULL DEFAULT x'';
      )sql",
      // 9: what session filters look at: the decisions of its statements (",blocked,denied,"),
      // the rules involved (guardrails, masking rules, approval policies) and its attribution.
      R"sql(
        ALTER TABLE sessions ADD COLUMN decisions TEXT NOT NULL DEFAULT '';
        ALTER TABLE sessions ADD COLUMN rules TEXT NOT NULL DEFAULT '';
        ALTER TABLE sessions ADD COLUMN attribution TEXT NOT NULL DEFAULT '{}';
      )sql",
      // 10: session recordings: blocks of recording slices in shared files under the data dir
      // (controlplane/store/recording_files.h), indexed per session and agent sequence range.
      R"sql(
        CREATE TABLE recording_blocks (
          session_id TEXT NOT NULL,
          agent_id TEXT NOT NULL,
          first_sequence INTEGER NOT NULL,
          last_sequence INTEGER NOT NULL,
          file TEXT NOT NULL,
          offset INTEGER NOT NULL,
          length INTEGER NOT NULL,
          PRIMARY KEY (session_id, first_sequence)) WITHOUT ROWID;
        CREATE INDEX recording_blocks_file ON recording_blocks(file);
      )sql",
      // 11: legal holds: sessions retention never purges.
      R"sql(
        CREATE TABLE legal_holds (
          session_id TEXT PRIMARY KEY,
          reason TEXT NOT NULL,
          held_by TEXT NOT NULL,
          held_ms INTEGER NOT NULL);
        CREATE INDEX sessions_ended ON sessions(connection, ended_ms);
      )sql",
      // 12: what proves each agent's stored trail complete (controlplane/audit/trail_anchor.h),
      // signed with the control plane's trail key and kept apart from the event rows: each
      // agent's trail head (genesis, last record, records) with the agent's latest signed
      // checkpoint, how many trails there are, and a tombstone per retention purge and agent.
      // Trails stored before this migration are anchored as found, in the same transaction
      // (SqliteStore's migration hook).
      R"sql(
        CREATE TABLE trail_heads (
          agent_id TEXT PRIMARY KEY,
          genesis_sequence INTEGER NOT NULL,
          genesis_hash BLOB NOT NULL,
          last_sequence INTEGER NOT NULL,
          last_hash BLOB NOT NULL,
          records INTEGER NOT NULL,
          origin INTEGER NOT NULL,
          anchored_through INTEGER NOT NULL,
          time_ms INTEGER NOT NULL,
          signature BLOB NOT NULL,
          checkpoint_sequence INTEGER NOT NULL DEFAULT 0,
          checkpoint_hash BLOB NOT NULL DEFAULT x'',
          checkpoint_signature BLOB NOT NULL DEFAULT x'');
        CREATE TABLE trail_totals (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          agents INTEGER NOT NULL,
          origin INTEGER NOT NULL,
          time_ms INTEGER NOT NULL,
          signature BLOB NOT NULL);
        CREATE TABLE purge_tombstones (
          agent_id TEXT NOT NULL,
          audit_id INTEGER NOT NULL,
          time_ms INTEGER NOT NULL,
          events INTEGER NOT NULL,
          first_sequence INTEGER NOT NULL,
          last_sequence INTEGER NOT NULL,
          digest BLOB NOT NULL,
          signature BLOB NOT NULL,
          PRIMARY KEY (agent_id, audit_id)) WITHOUT ROWID;
      )sql",
      // 13: chain resumes (controlplane/audit/trail_anchor.h): an agent whose spool lost its tail
      // goes on from an older record of its own; signed with the trail key, kept apart from the
      // event rows; `audit verify` accepts that break of the chain only under such a row.
      R"sql(
        CREATE TABLE chain_resumes (
          agent_id TEXT NOT NULL,
          resumed_after_sequence INTEGER NOT NULL,
          resumed_after_hash BLOB NOT NULL,
          held_through_sequence INTEGER NOT NULL,
          held_through_hash BLOB NOT NULL,
          held_records INTEGER NOT NULL,
          time_ms INTEGER NOT NULL,
          signature BLOB NOT NULL,
          PRIMARY KEY (agent_id, held_through_sequence, resumed_after_sequence)) WITHOUT ROWID;
      )sql",
      // 14: staged rollouts (store.h, RolloutRecord), and the documents of each in-progress
      // rollout's previous version (a copy of the resources rows as they were), kept until it ends.
      R"sql(
        CREATE TABLE rollouts (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          version INTEGER NOT NULL,
          previous_version INTEGER NOT NULL,
          selector TEXT NOT NULL,
          state TEXT NOT NULL,
          reason TEXT NOT NULL DEFAULT '',
          created_ms INTEGER NOT NULL,
          created_by TEXT NOT NULL,
          updated_ms INTEGER NOT NULL,
          updated_by TEXT NOT NULL,
          restored_version INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX rollouts_state ON rollouts(state);
        CREATE TABLE rollout_resources (
          rollout_id INTEGER NOT NULL,
          kind TEXT NOT NULL,
          name TEXT NOT NULL,
          version INTEGER NOT NULL,
          spec BLOB NOT NULL,
          sealed_secret BLOB,
          updated_ms INTEGER NOT NULL,
          updated_by TEXT NOT NULL,
          PRIMARY KEY (rollout_id, kind, name));
      )sql",
      // 15: keys the control plane keeps sealed under its master key (the masking hash key, the
      // approval links' key), so that a new master key does not change them
      // (controlplane/service/master_keys.h).
      R"sql(
        CREATE TABLE sealed_keys (
          name TEXT PRIMARY KEY,
          sealed BLOB NOT NULL);
      )sql",
  };
  return *m;
}

// Migration 4's data step: every agent's rows of agent_events become chunks of framed records, in
// sequence order, and the table goes.
absl::Status MoveAgentEventsToChunks(sqlite3* db) {
  constexpr size_t kPerChunk = 1000;
  Stmt rows(db,
            "SELECT agent_id, sequence, time_ms, type, session_id, body FROM agent_events "
            "ORDER BY agent_id, sequence");
  RETURN_IF_ERROR(rows.status());
  Stmt put(db,
           "INSERT INTO event_chunks(agent_id, first_sequence, last_sequence, first_time_ms, "
           "last_time_ms, events, records) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  RETURN_IF_ERROR(put.status());
  Stmt link(db, "INSERT OR IGNORE INTO session_chunks(session_id, chunk_id) VALUES (?1, ?2)");
  RETURN_IF_ERROR(link.status());
  struct Pending {
    std::string agent;
    std::string records;
    std::vector<v1::AuditEvent> events;
  } p;
  auto flush = [&]() -> absl::Status {
    if (p.events.empty()) return absl::OkStatus();
    put.Reset();
    put.Bind(1, p.agent).Bind(2, static_cast<int64_t>(p.events.front().sequence()));
    put.Bind(3, static_cast<int64_t>(p.events.back().sequence()));
    put.Bind(4, p.events.front().time_unix_ms()).Bind(5, p.events.back().time_unix_ms());
    put.Bind(6, static_cast<int64_t>(p.events.size())).BindBlob(7, p.records);
    RETURN_IF_ERROR(put.Run());
    int64_t chunk = sqlite3_last_insert_rowid(db);
    for (const auto& e : p.events) {
      link.Reset();
      link.Bind(1, e.session_id()).Bind(2, chunk);
      RETURN_IF_ERROR(link.Run());
    }
    std::string mark = absl::StrCat(
        "UPDATE agents SET events_committed = ", p.events.back().sequence(), " WHERE id = ?1");
    Stmt committed(db, mark.c_str());
    committed.Bind(1, p.agent);
    RETURN_IF_ERROR(committed.Run());
    p.records.clear();
    p.events.clear();
    return absl::OkStatus();
  };
  while (rows.Step() == SQLITE_ROW) {
    std::string agent = rows.Text(0);
    if (agent != p.agent || p.events.size() == kPerChunk) {
      RETURN_IF_ERROR(flush());
      p.agent = agent;
    }
    v1::AuditEvent& e = p.events.emplace_back();
    e.set_sequence(static_cast<uint64_t>(rows.Int(1)));
    e.set_time_unix_ms(rows.Int(2));
    e.set_type(rows.Text(3));
    e.set_session_id(rows.Text(4));
    e.set_json(rows.Text(5));
    audit::AppendRecord(&p.records, e.SerializeAsString());
  }
  RETURN_IF_ERROR(flush());
  return ExecSql(db, "DROP TABLE agent_events");
}

// Data steps that run after a migration's SQL, in the same transaction (index i: migration i+1).
absl::Status NoDataStep(sqlite3*) { return absl::OkStatus(); }
using DataStep = absl::Status (*)(sqlite3*);
const std::vector<DataStep>& DataSteps() {
  static const auto* steps =
      new std::vector<DataStep>{NoDataStep, NoDataStep, NoDataStep, MoveAgentEventsToChunks};
  return *steps;
}

}  // namespace

int LatestSchemaVersion() { return static_cast<int>(Migrations().size()); }

absl::Status ExecSql(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return SqliteError(db, msg);
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
    return SqliteError(db);
  }
  int version = 0;
  if (sqlite3_step(stmt) == SQLITE_ROW) version = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  return version;
}

absl::Status Migrate(sqlite3* db, int target, const MigrationHook& after) {
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
    if (st.ok() && static_cast<size_t>(v) <= DataSteps().size()) st = DataSteps()[v - 1](db);
    if (st.ok() && after) st = after(db, v);
    if (st.ok()) {
      std::string record =
          absl::StrCat("INSERT INTO schema_migrations(version, applied_ms) VALUES (", v,
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
