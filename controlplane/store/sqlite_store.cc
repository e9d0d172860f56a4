#include "controlplane/store/sqlite_store.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/policy/resource.h"
#include "common/status_macros.h"
#include "controlplane/store/migrations.h"

namespace sluice::controlplane {
namespace {

// A prepared statement that finalizes itself; Bind* take 1-based indexes.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_)));
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  absl::Status Run() {
    RETURN_IF_ERROR(status());
    int rc = Step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
      return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
    }
    return absl::OkStatus();
  }
  std::string Text(int col) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// Rolls back unless committed.
class Txn {
 public:
  explicit Txn(sqlite3* db) : db_(db) { begun_ = ExecSql(db_, "BEGIN IMMEDIATE"); }
  ~Txn() {
    if (begun_.ok() && !done_) ExecSql(db_, "ROLLBACK").IgnoreError();
  }
  absl::Status begun() const { return begun_; }
  absl::Status Commit() {
    done_ = true;
    return ExecSql(db_, "COMMIT");
  }

 private:
  sqlite3* db_;
  absl::Status begun_;
  bool done_ = false;
};

std::string LabelsToJson(const std::map<std::string, std::string>& labels) {
  return nlohmann::json(labels).dump();
}

std::map<std::string, std::string> LabelsFromJson(const std::string& text) {
  std::map<std::string, std::string> out;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.value().is_string()) out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

AgentRecord ReadAgent(Stmt& s) {
  AgentRecord a;
  a.id = s.Text(0);
  a.labels = LabelsFromJson(s.Text(1));
  a.secret_hash = s.Text(2);
  a.enrolled_ms = s.Int(3);
  a.last_seen_ms = s.Int(4);
  a.agent_version = s.Text(5);
  std::string caps = s.Text(6);
  if (!caps.empty()) a.capabilities = absl::StrSplit(caps, ',');
  a.applied_version = static_cast<uint64_t>(s.Int(7));
  a.last_nack_version = static_cast<uint64_t>(s.Int(8));
  a.last_nack_error = s.Text(9);
  return a;
}

constexpr char kAgentColumns[] =
    "id, labels, secret_hash, enrolled_ms, last_seen_ms, agent_version, capabilities, "
    "applied_version, last_nack_version, last_nack_error";

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open SQLite database ", path, ": ", msg));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db));
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(ExecSql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  RETURN_IF_ERROR(Migrate(db));
  return store;
}

SqliteStore::~SqliteStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::StatusOr<uint64_t> SqliteStore::PolicyVersion() {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "SELECT value FROM meta WHERE key = 'policy_version'");
  RETURN_IF_ERROR(s.status());
  if (s.Step() != SQLITE_ROW) return absl::InternalError("meta.policy_version is missing");
  return static_cast<uint64_t>(std::stoull(s.Text(0)));
}

absl::StatusOr<uint64_t> SqliteStore::BumpVersionLocked() {
  Stmt up(db_, "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'policy_version'");
  RETURN_IF_ERROR(up.Run());
  Stmt s(db_, "SELECT value FROM meta WHERE key = 'policy_version'");
  RETURN_IF_ERROR(s.status());
  if (s.Step() != SQLITE_ROW) return absl::InternalError("meta.policy_version is missing");
  return static_cast<uint64_t>(std::stoull(s.Text(0)));
}

absl::StatusOr<uint64_t> SqliteStore::UpsertResources(const std::vector<StoredResource>& batch,
                                                      const std::string& actor, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  ASSIGN_OR_RETURN(uint64_t version, BumpVersionLocked());
  for (const StoredResource& sr : batch) {
    v1::Resource spec = sr.resource;
    spec.clear_meta();
    std::string bytes;
    if (!spec.SerializeToString(&bytes)) return absl::InternalError("cannot serialize resource");
    Stmt s(db_,
           "INSERT INTO resources(kind, name, version, spec, sealed_secret, updated_ms, updated_by) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
           "ON CONFLICT(kind, name) DO UPDATE SET version = ?3, spec = ?4, sealed_secret = ?5, "
           "updated_ms = ?6, updated_by = ?7");
    s.Bind(1, policy::KindOf(spec)).Bind(2, policy::NameOf(spec)).Bind(3, static_cast<int64_t>(version));
    s.BindBlob(4, bytes).BindBlob(5, sr.sealed_secret).Bind(6, now_ms).Bind(7, actor);
    RETURN_IF_ERROR(s.Run());
  }
  RETURN_IF_ERROR(txn.Commit());
  return version;
}

absl::StatusOr<uint64_t> SqliteStore::DeleteResource(const std::string& kind, const std::string& name) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  Stmt s(db_, "DELETE FROM resources WHERE kind = ?1 AND name = ?2");
  s.Bind(1, kind).Bind(2, name);
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat(kind, " '", name, "' does not exist"));
  ASSIGN_OR_RETURN(uint64_t version, BumpVersionLocked());
  RETURN_IF_ERROR(txn.Commit());
  return version;
}

absl::StatusOr<std::vector<StoredResource>> SqliteStore::QueryResourcesLocked(
    const std::string& where, const std::string& kind, const std::string& name) {
  std::string sql = absl::StrCat(
      "SELECT spec, sealed_secret, version, updated_ms, updated_by FROM resources ", where,
      " ORDER BY kind, name");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  if (!kind.empty()) s.Bind(1, kind);
  if (!name.empty()) s.Bind(2, name);
  std::vector<StoredResource> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    StoredResource sr;
    if (!sr.resource.ParseFromString(s.Text(0))) {
      return absl::DataLossError("a stored resource cannot be decoded");
    }
    sr.sealed_secret = s.Text(1);
    sr.resource.mutable_meta()->set_version(static_cast<uint64_t>(s.Int(2)));
    sr.resource.mutable_meta()->set_updated_unix_ms(s.Int(3));
    sr.resource.mutable_meta()->set_updated_by(s.Text(4));
    out.push_back(std::move(sr));
  }
  if (rc != SQLITE_DONE) return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
  return out;
}

absl::StatusOr<std::vector<StoredResource>> SqliteStore::ListResources(const std::string& kind) {
  absl::MutexLock lock(&mu_);
  return QueryResourcesLocked(kind.empty() ? "" : "WHERE kind = ?1", kind, "");
}

absl::StatusOr<StoredResource> SqliteStore::GetResource(const std::string& kind,
                                                        const std::string& name) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(auto rows, QueryResourcesLocked("WHERE kind = ?1 AND name = ?2", kind, name));
  if (rows.empty()) return absl::NotFoundError(absl::StrCat(kind, " '", name, "' does not exist"));
  return std::move(rows[0]);
}

absl::Status SqliteStore::CreateEnrollment(const EnrollmentRecord& e) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "INSERT INTO enrollment_tokens(token_hash, agent_id, labels, created_ms, expires_ms) "
         "VALUES (?1, ?2, ?3, ?4, ?5)");
  s.Bind(1, e.token_hash).Bind(2, e.agent_id).Bind(3, LabelsToJson(e.labels));
  s.Bind(4, e.created_ms).Bind(5, e.expires_ms);
  return s.Run();
}

absl::StatusOr<AgentRecord> SqliteStore::ConsumeEnrollment(const std::string& token_hash,
                                                           const std::string& secret_hash,
                                                           int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  Stmt q(db_, "SELECT agent_id, labels, expires_ms, used_ms FROM enrollment_tokens WHERE token_hash = ?1");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, token_hash);
  if (q.Step() != SQLITE_ROW) return absl::NotFoundError("unknown enrollment token");
  AgentRecord agent;
  agent.id = q.Text(0);
  agent.labels = LabelsFromJson(q.Text(1));
  if (q.Int(3) != 0) {
    return absl::FailedPreconditionError("this enrollment token was already used");
  }
  if (q.Int(2) < now_ms) return absl::FailedPreconditionError("this enrollment token has expired");
  Stmt used(db_, "UPDATE enrollment_tokens SET used_ms = ?2 WHERE token_hash = ?1");
  used.Bind(1, token_hash).Bind(2, now_ms);
  RETURN_IF_ERROR(used.Run());
  agent.secret_hash = secret_hash;
  agent.enrolled_ms = now_ms;
  Stmt ins(db_,
           "INSERT INTO agents(id, labels, secret_hash, enrolled_ms) VALUES (?1, ?2, ?3, ?4) "
           "ON CONFLICT(id) DO UPDATE SET labels = ?2, secret_hash = ?3, enrolled_ms = ?4, "
           "applied_version = 0, last_nack_version = 0, last_nack_error = ''");
  ins.Bind(1, agent.id).Bind(2, LabelsToJson(agent.labels)).Bind(3, secret_hash).Bind(4, now_ms);
  RETURN_IF_ERROR(ins.Run());
  RETURN_IF_ERROR(txn.Commit());
  return agent;
}

absl::StatusOr<std::vector<AgentRecord>> SqliteStore::ListAgents() {
  absl::MutexLock lock(&mu_);
  std::string sql = absl::StrCat("SELECT ", kAgentColumns, " FROM agents ORDER BY id");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  std::vector<AgentRecord> out;
  while (s.Step() == SQLITE_ROW) out.push_back(ReadAgent(s));
  return out;
}

absl::Status SqliteStore::UpdateAgentHello(const std::string& id, const std::string& agent_version,
                                           const std::vector<std::string>& capabilities,
                                           int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "UPDATE agents SET agent_version = ?2, capabilities = ?3, last_seen_ms = ?4 WHERE id = ?1");
  s.Bind(1, id).Bind(2, agent_version).Bind(3, absl::StrJoin(capabilities, ",")).Bind(4, now_ms);
  return s.Run();
}

absl::Status SqliteStore::UpdateAgentSeen(const std::string& id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "UPDATE agents SET last_seen_ms = ?2 WHERE id = ?1");
  s.Bind(1, id).Bind(2, now_ms);
  return s.Run();
}

absl::Status SqliteStore::RecordAck(const std::string& id, uint64_t version, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  // An ACK of a version newer than the last NACK means the problem is gone.
  Stmt s(db_,
         "UPDATE agents SET applied_version = ?2, last_seen_ms = ?3, "
         "last_nack_error = CASE WHEN ?2 >= last_nack_version THEN '' ELSE last_nack_error END "
         "WHERE id = ?1");
  s.Bind(1, id).Bind(2, static_cast<int64_t>(version)).Bind(3, now_ms);
  return s.Run();
}

absl::Status SqliteStore::RecordNack(const std::string& id, uint64_t version, const std::string& error,
                                     int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "UPDATE agents SET last_nack_version = ?2, last_nack_error = ?3, last_seen_ms = ?4 WHERE id = ?1");
  s.Bind(1, id).Bind(2, static_cast<int64_t>(version)).Bind(3, error).Bind(4, now_ms);
  return s.Run();
}

absl::StatusOr<int64_t> SqliteStore::AppendAudit(const AuditRecord& r) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "INSERT INTO audit_events(time_ms, actor, action, target, outcome, detail) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s.Bind(1, r.time_ms).Bind(2, r.actor).Bind(3, r.action).Bind(4, r.target).Bind(5, r.outcome);
  s.Bind(6, r.detail);
  RETURN_IF_ERROR(s.Run());
  return sqlite3_last_insert_rowid(db_);
}

absl::StatusOr<std::vector<AuditRecord>> SqliteStore::ListAudit(int limit) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT id, time_ms, actor, action, target, outcome, detail FROM audit_events "
         "ORDER BY id DESC LIMIT ?1");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(limit));
  std::vector<AuditRecord> out;
  while (s.Step() == SQLITE_ROW) {
    out.push_back({s.Int(0), s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)});
  }
  return out;
}

}  // namespace sluice::controlplane
