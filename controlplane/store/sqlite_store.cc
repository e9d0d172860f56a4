#include "controlplane/store/sqlite_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/audit/events.h"
#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/policy/resource.h"
#include "common/policy/selectors.h"
#include "common/status_macros.h"
#include "controlplane/audit/session_index.h"
#include "controlplane/audit/trail.h"
#include "controlplane/store/disk_fault.h"
#include "controlplane/store/migrations.h"
#include "controlplane/store/sqlite_stmt.h"
#include "controlplane/store/sqlite_trail_rows.h"

namespace sluice::controlplane {
namespace {

// Rolls back unless committed.
class Txn {
 public:
  explicit Txn(sqlite3* db) : db_(db) { begun_ = ExecSql(db_, "BEGIN IMMEDIATE"); }
  ~Txn() {
    if (begun_.ok() && !done_) ExecSql(db_, "ROLLBACK").IgnoreError();
  }
  absl::Status begun() const { return begun_; }
  // Statements still stepping (a SELECT read for its first row) are reset first: a statement left
  // open at COMMIT keeps the connection's read snapshot, and while one is open at every commit the
  // WAL is never checkpointed — under a steady stream of event batches it grew without bound.
  // A COMMIT that fails (a full or failing disk: SQLITE_FULL, SQLITE_IOERR) may leave the
  // transaction open; it is rolled back, or every later BEGIN would fail ("cannot start a
  // transaction within a transaction") long after the disk recovered.
  absl::Status Commit() {
    done_ = true;
    for (sqlite3_stmt* s = sqlite3_next_stmt(db_, nullptr); s != nullptr;
         s = sqlite3_next_stmt(db_, s)) {
      if (sqlite3_stmt_busy(s)) sqlite3_reset(s);
    }
    absl::Status st = ExecSql(db_, "COMMIT");
    if (!st.ok() && sqlite3_get_autocommit(db_) == 0) ExecSql(db_, "ROLLBACK").IgnoreError();
    return st;
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

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path,
                                                               const std::string& trail_key_pem) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string pem = trail_key_pem;
  if (pem.empty()) {
    bool created = false;
    ASSIGN_OR_RETURN(pem, LoadOrCreateEd25519Key(dir + "/trail-key.pem", &created));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TrailSigner> signer, TrailSigner::FromPem(pem));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status st =
        db != nullptr ? SqliteError(db) : absl::ResourceExhaustedError("out of memory");
    sqlite3_close(db);
    return IsDiskFault(st) ? st
                           : absl::UnavailableError(absl::StrCat("cannot open SQLite database ",
                                                                 path, ": ", st.message()));
  }
  std::unique_ptr<SqliteStore> store(
      new SqliteStore(db, path, dir, pem, std::move(signer), std::make_shared<Shared>(), false));
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(
      ExecSql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  SqliteStore* s = store.get();
  absl::MutexLock lock(&s->mu_);
  RETURN_IF_ERROR(Migrate(db, -1, [s](sqlite3*, int version) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return version == kTrailAnchorMigration ? s->AnchorStoredTrailsLocked() : absl::OkStatus();
  }));
  RETURN_IF_ERROR(s->CheckTrailKeyLocked());
  return store;
}

absl::StatusOr<std::unique_ptr<Store>> SqliteStore::OpenReader() {
  if (reader_) return absl::FailedPreconditionError("a reader opens no reader of its own");
  ASSIGN_OR_RETURN(std::unique_ptr<TrailSigner> signer, TrailSigner::FromPem(trail_key_pem_));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status st =
        db != nullptr ? SqliteError(db) : absl::ResourceExhaustedError("out of memory");
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("cannot open SQLite database ", path_, " to read: ", st.message()));
  }
  std::unique_ptr<SqliteStore> reader(
      new SqliteStore(db, path_, dir_, trail_key_pem_, std::move(signer), shared_, true));
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(ExecSql(db, "PRAGMA query_only=1;"));
  return std::unique_ptr<Store>(std::move(reader));
}

absl::Status SqliteStore::ReadSnapshot(const std::function<absl::Status()>& read) {
  // A reader's snapshot keeps the recording bytes it may read (purges defer their erasing).
  std::optional<absl::ReaderMutexLock> gate;
  if (reader_) gate.emplace(&shared_->gate);
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(ExecSql(db_, "BEGIN DEFERRED"));
  }
  absl::Status st = read();
  absl::MutexLock lock(&mu_);
  // Reads still stepping are reset first: a read transaction ends only when none is pending.
  for (sqlite3_stmt* s = sqlite3_next_stmt(db_, nullptr); s != nullptr;
       s = sqlite3_next_stmt(db_, s)) {
    if (sqlite3_stmt_busy(s)) sqlite3_reset(s);
  }
  absl::Status end = ExecSql(db_, sqlite3_get_autocommit(db_) == 0 ? "COMMIT" : "SELECT 1");
  return st.ok() ? end : st;
}

SqliteStore::~SqliteStore() {
  absl::MutexLock lock(&mu_);
  statements_.Clear();  // a connection with statements left does not close
  sqlite3_close(db_);
}

absl::Status SqliteStore::ProbeWrites() {
  constexpr uint64_t kProbeBytes = 1 << 20;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(ProbeWrite(dir_ + "/.sluice-write-probe", kProbeBytes));
  struct stat st;
  if (::stat(recordings_.dir().c_str(), &st) == 0) {
    RETURN_IF_ERROR(ProbeWrite(recordings_.dir() + "/.sluice-write-probe", 4096));
  }
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  Stmt touch(db_, "UPDATE meta SET value = value WHERE key = 'policy_version'");
  RETURN_IF_ERROR(touch.Run());
  return txn.Commit();
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

absl::StatusOr<uint64_t> SqliteStore::UpsertResourcesLocked(
    const std::vector<StoredResource>& batch, const std::string& actor, int64_t now_ms) {
  ASSIGN_OR_RETURN(uint64_t version, BumpVersionLocked());
  for (const StoredResource& sr : batch) {
    v1::Resource spec = sr.resource;
    spec.clear_meta();
    std::string bytes;
    if (!spec.SerializeToString(&bytes)) return absl::InternalError("cannot serialize resource");
    Stmt s(
        db_,
        "INSERT INTO resources(kind, name, version, spec, sealed_secret, updated_ms, updated_by) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT(kind, name) DO UPDATE SET version = ?3, spec = ?4, sealed_secret = ?5, "
        "updated_ms = ?6, updated_by = ?7");
    s.Bind(1, policy::KindOf(spec))
        .Bind(2, policy::NameOf(spec))
        .Bind(3, static_cast<int64_t>(version));
    s.BindBlob(4, bytes).BindBlob(5, sr.sealed_secret).Bind(6, now_ms).Bind(7, actor);
    RETURN_IF_ERROR(s.Run());
  }
  return version;
}

absl::StatusOr<uint64_t> SqliteStore::UpsertResources(const std::vector<StoredResource>& batch,
                                                      const std::string& actor, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  RETURN_IF_ERROR(RefuseDuringRolloutLocked());
  ASSIGN_OR_RETURN(uint64_t version, UpsertResourcesLocked(batch, actor, now_ms));
  RETURN_IF_ERROR(txn.Commit());
  return version;
}

absl::StatusOr<uint64_t> SqliteStore::DeleteResource(const std::string& kind,
                                                     const std::string& name) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  RETURN_IF_ERROR(RefuseDuringRolloutLocked());
  Stmt s(db_, "DELETE FROM resources WHERE kind = ?1 AND name = ?2");
  s.Bind(1, kind).Bind(2, name);
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0)
    return absl::NotFoundError(absl::StrCat(kind, " '", name, "' does not exist"));
  ASSIGN_OR_RETURN(uint64_t version, BumpVersionLocked());
  RETURN_IF_ERROR(txn.Commit());
  return version;
}

namespace {

constexpr char kRolloutColumns[] =
    "SELECT id, version, previous_version, selector, state, reason, created_ms, created_by, "
    "updated_ms, updated_by, restored_version FROM rollouts ";

RolloutRecord ReadRollout(Stmt& s) {
  RolloutRecord r;
  r.id = s.Int(0);
  r.version = static_cast<uint64_t>(s.Int(1));
  r.previous_version = static_cast<uint64_t>(s.Int(2));
  r.selector = LabelsFromJson(s.Text(3));
  r.state = s.Text(4);
  r.reason = s.Text(5);
  r.created_ms = s.Int(6);
  r.created_by = s.Text(7);
  r.updated_ms = s.Int(8);
  r.updated_by = s.Text(9);
  r.restored_version = static_cast<uint64_t>(s.Int(10));
  return r;
}

// A resources row as compared by an abort.
struct ResourceRow {
  int64_t version = 0;
  std::string spec;
  std::string sealed_secret;
  int64_t updated_ms = 0;
  std::string updated_by;
};
using ResourceRows = std::map<std::pair<std::string, std::string>, ResourceRow>;

absl::StatusOr<ResourceRows> ReadResourceRows(sqlite3* db, const char* sql, int64_t rollout_id) {
  Stmt s(db, sql);
  RETURN_IF_ERROR(s.status());
  if (rollout_id != 0) s.Bind(1, rollout_id);
  ResourceRows rows;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    rows[{s.Text(0), s.Text(1)}] = ResourceRow{s.Int(2), s.Text(3), s.Text(4), s.Int(5), s.Text(6)};
  }
  if (rc != SQLITE_DONE) return SqliteError(db);
  return rows;
}

// The resources a statement's rows hold (spec, sealed_secret, version, updated_ms, updated_by).
absl::StatusOr<std::vector<StoredResource>> ReadStoredResources(sqlite3* db, Stmt* s,
                                                                absl::string_view what) {
  std::vector<StoredResource> out;
  int rc;
  while ((rc = s->Step()) == SQLITE_ROW) {
    StoredResource sr;
    if (!sr.resource.ParseFromString(s->Text(0))) {
      return absl::DataLossError(absl::StrCat(what, " cannot be decoded"));
    }
    sr.sealed_secret = s->Text(1);
    sr.resource.mutable_meta()->set_version(static_cast<uint64_t>(s->Int(2)));
    sr.resource.mutable_meta()->set_updated_unix_ms(s->Int(3));
    sr.resource.mutable_meta()->set_updated_by(s->Text(4));
    out.push_back(std::move(sr));
  }
  if (rc != SQLITE_DONE) return SqliteError(db);
  return out;
}

}  // namespace

absl::StatusOr<std::optional<RolloutRecord>> SqliteStore::ReadRolloutLocked(int64_t id) {
  std::string sql = absl::StrCat(kRolloutColumns, id > 0    ? "WHERE id = ?1"
                                                  : id == 0 ? "ORDER BY id DESC LIMIT 1"
                                                            : "WHERE state IN ('canary', 'halted') "
                                                              "ORDER BY id DESC LIMIT 1");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  if (id > 0) s.Bind(1, id);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return SqliteError(db_);
  return ReadRollout(s);
}

absl::Status SqliteStore::RefuseDuringRolloutLocked() {
  ASSIGN_OR_RETURN(std::optional<RolloutRecord> r, ReadRolloutLocked(-1));
  if (!r) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "rollout ", r->id, " of policy version ", r->version, " to the canary agents ",
      policy::LabelsText(r->selector), " is in progress (", r->state,
      "); promote it (sluicectl rollout promote) or abort it (sluicectl rollout abort) before "
      "changing the policy"));
}

absl::StatusOr<RolloutRecord> SqliteStore::StartRollout(
    const std::vector<StoredResource>& batch, const std::map<std::string, std::string>& selector,
    const std::string& actor, int64_t now_ms) {
  if (selector.empty()) return absl::InvalidArgumentError("canary: give at least one label k=v");
  if (batch.empty()) return absl::InvalidArgumentError("a rollout needs a change to roll out");
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  RETURN_IF_ERROR(RefuseDuringRolloutLocked());
  RolloutRecord r;
  {
    Stmt v(db_, "SELECT value FROM meta WHERE key = 'policy_version'");
    RETURN_IF_ERROR(v.status());
    if (v.Step() != SQLITE_ROW) return absl::InternalError("meta.policy_version is missing");
    r.previous_version = static_cast<uint64_t>(std::stoull(v.Text(0)));
  }
  r.selector = selector;
  r.state = kRolloutCanary;
  r.created_ms = r.updated_ms = now_ms;
  r.created_by = r.updated_by = actor;
  Stmt ins(db_,
           "INSERT INTO rollouts(version, previous_version, selector, state, created_ms, "
           "created_by, updated_ms, updated_by) VALUES (0, ?1, ?2, ?3, ?4, ?5, ?4, ?5)");
  ins.Bind(1, static_cast<int64_t>(r.previous_version)).Bind(2, LabelsToJson(selector));
  ins.Bind(3, r.state).Bind(4, now_ms).Bind(5, actor);
  RETURN_IF_ERROR(ins.Run());
  r.id = sqlite3_last_insert_rowid(db_);
  // The previous version's documents, as they are before the change.
  Stmt keep(db_,
            "INSERT INTO rollout_resources(rollout_id, kind, name, version, spec, sealed_secret, "
            "updated_ms, updated_by) SELECT ?1, kind, name, version, spec, sealed_secret, "
            "updated_ms, updated_by FROM resources");
  keep.Bind(1, r.id);
  RETURN_IF_ERROR(keep.Run());
  ASSIGN_OR_RETURN(r.version, UpsertResourcesLocked(batch, actor, now_ms));
  Stmt set(db_, "UPDATE rollouts SET version = ?2 WHERE id = ?1");
  set.Bind(1, r.id).Bind(2, static_cast<int64_t>(r.version));
  RETURN_IF_ERROR(set.Run());
  RETURN_IF_ERROR(
      AppendAuditLocked({0, now_ms, actor, "Rollout.start", absl::StrCat("Rollout/", r.id), "ok",
                         absl::StrCat("policy version ", r.version, " to the canary agents ",
                                      policy::LabelsText(selector), "; the others keep version ",
                                      r.previous_version)})
          .status());
  RETURN_IF_ERROR(txn.Commit());
  return r;
}

absl::StatusOr<std::optional<RolloutRecord>> SqliteStore::GetRollout(int64_t id) {
  absl::MutexLock lock(&mu_);
  return ReadRolloutLocked(std::max<int64_t>(id, 0));
}

absl::StatusOr<std::vector<StoredResource>> SqliteStore::RolloutPreviousResources(int64_t id) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT spec, sealed_secret, version, updated_ms, updated_by FROM rollout_resources "
         "WHERE rollout_id = ?1 ORDER BY kind, name");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  return ReadStoredResources(db_, &s, "a stored resource of a rollout");
}

absl::StatusOr<RolloutRecord> SqliteStore::EndRolloutLocked(int64_t id, const std::string& state,
                                                            const std::string& reason,
                                                            const std::string& actor,
                                                            int64_t now_ms,
                                                            const std::string& only_from) {
  ASSIGN_OR_RETURN(std::optional<RolloutRecord> r, ReadRolloutLocked(id));
  if (!r) return absl::NotFoundError(absl::StrCat("rollout ", id, " does not exist"));
  if (!r->in_progress() || (!only_from.empty() && r->state != only_from)) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", r->id, " is ", r->state, ", not in progress"));
  }
  r->state = state;
  r->reason = reason;
  r->updated_ms = now_ms;
  r->updated_by = actor;
  Stmt up(db_,
          "UPDATE rollouts SET state = ?2, reason = ?3, updated_ms = ?4, updated_by = ?5 "
          "WHERE id = ?1");
  up.Bind(1, r->id).Bind(2, state).Bind(3, reason).Bind(4, now_ms).Bind(5, actor);
  RETURN_IF_ERROR(up.Run());
  if (state == kRolloutPromoted || state == kRolloutAborted) {
    Stmt drop(db_, "DELETE FROM rollout_resources WHERE rollout_id = ?1");
    drop.Bind(1, r->id);
    RETURN_IF_ERROR(drop.Run());
  }
  return *std::move(r);
}

absl::StatusOr<std::optional<RolloutRecord>> SqliteStore::HaltRollout(uint64_t version,
                                                                      const std::string& agent_id,
                                                                      const std::string& error,
                                                                      int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  ASSIGN_OR_RETURN(std::optional<RolloutRecord> r, ReadRolloutLocked(-1));
  if (!r || r->state != kRolloutCanary || r->version != version) return std::nullopt;
  std::string reason = absl::StrCat("agent ", agent_id, " NACKed version ", version, ": ", error);
  ASSIGN_OR_RETURN(RolloutRecord halted,
                   EndRolloutLocked(r->id, kRolloutHalted, reason, "agent:" + agent_id, now_ms));
  RETURN_IF_ERROR(AppendAuditLocked({0, now_ms, "agent:" + agent_id, "Rollout.halt",
                                     absl::StrCat("Rollout/", r->id), "ok", reason})
                      .status());
  RETURN_IF_ERROR(txn.Commit());
  return halted;
}

absl::StatusOr<RolloutRecord> SqliteStore::PromoteRollout(int64_t id, const std::string& actor,
                                                          const std::string& reason,
                                                          int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  ASSIGN_OR_RETURN(RolloutRecord r, EndRolloutLocked(id, kRolloutPromoted, reason, actor, now_ms));
  RETURN_IF_ERROR(
      AppendAuditLocked({0, now_ms, actor, "Rollout.promote", absl::StrCat("Rollout/", r.id), "ok",
                         absl::StrCat("policy version ", r.version, " to every agent",
                                      reason.empty() ? "" : "; " + reason)})
          .status());
  RETURN_IF_ERROR(txn.Commit());
  return r;
}

absl::StatusOr<RolloutAbort> SqliteStore::AbortRollout(int64_t id, const std::string& actor,
                                                       const std::string& reason, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  // Read the previous documents before EndRolloutLocked drops them.
  ASSIGN_OR_RETURN(
      ResourceRows before,
      ReadResourceRows(db_,
                       "SELECT kind, name, version, spec, sealed_secret, updated_ms, updated_by "
                       "FROM rollout_resources WHERE rollout_id = ?1",
                       id));
  ASSIGN_OR_RETURN(
      ResourceRows now,
      ReadResourceRows(db_,
                       "SELECT kind, name, version, spec, sealed_secret, updated_ms, updated_by "
                       "FROM resources",
                       0));
  RolloutAbort out;
  ASSIGN_OR_RETURN(out.rollout, EndRolloutLocked(id, kRolloutAborted, reason, actor, now_ms));
  // What differs from the previous version's documents goes back to them. Sealed secrets are
  // compared as stored: a resource the rollout did not touch keeps its very bytes.
  std::vector<std::pair<const ResourceRows::key_type*, const ResourceRow*>> put;
  std::vector<const ResourceRows::key_type*> remove;
  for (const auto& [key, row] : before) {
    auto it = now.find(key);
    if (it != now.end() && it->second.spec == row.spec &&
        it->second.sealed_secret == row.sealed_secret)
      continue;
    put.emplace_back(&key, &row);
    out.changes.push_back({absl::StrCat(key.first, "/", key.second),
                           it == now.end() ? "Policy.create" : "Policy.update"});
  }
  for (const auto& [key, row] : now) {
    if (before.count(key)) continue;
    remove.push_back(&key);
    out.changes.push_back({absl::StrCat(key.first, "/", key.second), "Policy.delete"});
  }
  if (!out.changes.empty()) {
    ASSIGN_OR_RETURN(out.rollout.restored_version, BumpVersionLocked());
    for (const auto& [key, row] : put) {
      Stmt s(db_,
             "INSERT INTO resources(kind, name, version, spec, sealed_secret, updated_ms, "
             "updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
             "ON CONFLICT(kind, name) DO UPDATE SET version = ?3, spec = ?4, sealed_secret = ?5, "
             "updated_ms = ?6, updated_by = ?7");
      s.Bind(1, key->first).Bind(2, key->second);
      s.Bind(3, static_cast<int64_t>(out.rollout.restored_version));
      s.BindBlob(4, row->spec).BindBlob(5, row->sealed_secret).Bind(6, now_ms).Bind(7, actor);
      RETURN_IF_ERROR(s.Run());
    }
    for (const auto* key : remove) {
      Stmt s(db_, "DELETE FROM resources WHERE kind = ?1 AND name = ?2");
      s.Bind(1, key->first).Bind(2, key->second);
      RETURN_IF_ERROR(s.Run());
    }
    Stmt set(db_, "UPDATE rollouts SET restored_version = ?2 WHERE id = ?1");
    set.Bind(1, out.rollout.id).Bind(2, static_cast<int64_t>(out.rollout.restored_version));
    RETURN_IF_ERROR(set.Run());
  }
  RETURN_IF_ERROR(
      AppendAuditLocked(
          {0, now_ms, actor, "Rollout.abort", absl::StrCat("Rollout/", out.rollout.id), "ok",
           absl::StrCat(
               "policy version ", out.rollout.version, " withdrawn; ",
               out.changes.empty()
                   ? std::string("no document to restore")
                   : absl::StrCat("the documents of version ", out.rollout.previous_version,
                                  " stored again as version ", out.rollout.restored_version),
               reason.empty() ? "" : "; " + reason)})
          .status());
  RETURN_IF_ERROR(txn.Commit());
  return out;
}

absl::StatusOr<std::vector<StoredResource>> SqliteStore::QueryResourcesLocked(
    const std::string& where, const std::string& kind, const std::string& name) {
  std::string sql =
      absl::StrCat("SELECT spec, sealed_secret, version, updated_ms, updated_by FROM resources ",
                   where, " ORDER BY kind, name");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  if (!kind.empty()) s.Bind(1, kind);
  if (!name.empty()) s.Bind(2, name);
  return ReadStoredResources(db_, &s, "a stored resource");
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

absl::StatusOr<int> SqliteStore::ResealAll(const Resealer& reseal) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  // Read first, then write: no statement steps over a table while it changes.
  struct Row {
    SealedRow sealed;
    int64_t rollout_id = 0;
    std::string kind, name;
  };
  std::vector<Row> rows;
  sqlite3* db = db_;  // the lambda runs under the lock taken above
  auto read = [&rows, db](const char* sql, SealedRow::Source source) -> absl::Status {
    Stmt s(db, sql);
    RETURN_IF_ERROR(s.status());
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      Row r;
      r.sealed.source = source;
      if (source == SealedRow::Source::kKey) {
        r.sealed.name = s.Text(0);
        r.sealed.sealed = s.Text(1);
      } else {
        r.kind = s.Text(0);
        r.name = s.Text(1);
        r.rollout_id = s.Int(2);
        r.sealed.spec = s.Text(3);
        r.sealed.sealed = s.Text(4);
      }
      rows.push_back(std::move(r));
    }
    return rc == SQLITE_DONE ? absl::OkStatus() : SqliteError(db);
  };
  RETURN_IF_ERROR(
      read("SELECT kind, name, 0, spec, sealed_secret FROM resources "
           "WHERE length(sealed_secret) > 0",
           SealedRow::Source::kResource));
  RETURN_IF_ERROR(
      read("SELECT kind, name, rollout_id, spec, sealed_secret FROM rollout_resources "
           "WHERE length(sealed_secret) > 0",
           SealedRow::Source::kRolloutResource));
  RETURN_IF_ERROR(read("SELECT name, sealed FROM sealed_keys", SealedRow::Source::kKey));
  int changed = 0;
  for (const Row& r : rows) {
    ASSIGN_OR_RETURN(std::string sealed, reseal(r.sealed));
    if (sealed == r.sealed.sealed) continue;
    ++changed;
    switch (r.sealed.source) {
      case SealedRow::Source::kResource: {
        Stmt s(db_, "UPDATE resources SET sealed_secret = ?1 WHERE kind = ?2 AND name = ?3");
        s.BindBlob(1, sealed).Bind(2, r.kind).Bind(3, r.name);
        RETURN_IF_ERROR(s.Run());
        break;
      }
      case SealedRow::Source::kRolloutResource: {
        Stmt s(db_,
               "UPDATE rollout_resources SET sealed_secret = ?1 "
               "WHERE rollout_id = ?2 AND kind = ?3 AND name = ?4");
        s.BindBlob(1, sealed).Bind(2, r.rollout_id).Bind(3, r.kind).Bind(4, r.name);
        RETURN_IF_ERROR(s.Run());
        break;
      }
      case SealedRow::Source::kKey: {
        Stmt s(db_, "UPDATE sealed_keys SET sealed = ?1 WHERE name = ?2");
        s.BindBlob(1, sealed).Bind(2, r.sealed.name);
        RETURN_IF_ERROR(s.Run());
        break;
      }
    }
  }
  RETURN_IF_ERROR(txn.Commit());
  return changed;
}

absl::StatusOr<std::optional<std::string>> SqliteStore::SealedKey(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "SELECT sealed FROM sealed_keys WHERE name = ?1");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, name);
  const int rc = s.Step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(s.Text(0));
  if (rc != SQLITE_DONE) return SqliteError(db_);
  return std::optional<std::string>();
}

absl::Status SqliteStore::AddSealedKey(const std::string& name, const std::string& sealed) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "INSERT INTO sealed_keys(name, sealed) VALUES (?1, ?2)");
  s.Bind(1, name).BindBlob(2, sealed);
  return s.Run();
}

absl::Status SqliteStore::CreateEnrollment(const EnrollmentRecord& e) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "INSERT INTO enrollment_tokens(token_hash, agent_id, labels, created_ms, expires_ms, "
         "tls_names) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s.Bind(1, e.token_hash).Bind(2, e.agent_id).Bind(3, LabelsToJson(e.labels));
  s.Bind(4, e.created_ms).Bind(5, e.expires_ms).Bind(6, absl::StrJoin(e.tls_names, ","));
  return s.Run();
}

absl::StatusOr<AgentRecord> SqliteStore::ConsumeEnrollment(const std::string& token_hash,
                                                           const std::string& secret_hash,
                                                           int64_t now_ms,
                                                           const EnrollmentCheck& check) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  Stmt q(
      db_,
      "SELECT agent_id, labels, expires_ms, used_ms, created_ms, tls_names FROM enrollment_tokens "
      "WHERE token_hash = ?1");
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
  if (check) {
    EnrollmentRecord e{token_hash, agent.id, agent.labels, q.Int(4), q.Int(2), {}};
    e.tls_names = absl::StrSplit(q.Text(5), ',', absl::SkipEmpty());
    RETURN_IF_ERROR(check(e));
  }
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
  Stmt s(
      db_,
      "UPDATE agents SET agent_version = ?2, capabilities = ?3, last_seen_ms = ?4 WHERE id = ?1");
  s.Bind(1, id).Bind(2, agent_version).Bind(3, absl::StrJoin(capabilities, ",")).Bind(4, now_ms);
  return s.Run();
}

absl::Status SqliteStore::RegisterAuditKey(const std::string& id, const std::string& public_key,
                                           bool replace) {
  if (public_key.size() != 32)
    return absl::InvalidArgumentError("an Ed25519 public key is 32 bytes");
  absl::MutexLock lock(&mu_);
  Stmt q(db_, "SELECT audit_public_key FROM agents WHERE id = ?1");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, id);
  if (q.Step() != SQLITE_ROW)
    return absl::NotFoundError(absl::StrCat("agent '", id, "' is not enrolled"));
  std::string current = q.Text(0);
  if (current == public_key) return absl::OkStatus();
  if (!current.empty() && !replace) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent '", id, "' presents an audit key other than the one registered"));
  }
  Stmt up(db_, "UPDATE agents SET audit_public_key = ?2 WHERE id = ?1");
  up.Bind(1, id).BindBlob(2, public_key);
  return up.Run();
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

absl::Status SqliteStore::RecordNack(const std::string& id, uint64_t version,
                                     const std::string& error, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "UPDATE agents SET last_nack_version = ?2, last_nack_error = ?3, last_seen_ms = ?4 WHERE "
         "id = ?1");
  s.Bind(1, id).Bind(2, static_cast<int64_t>(version)).Bind(3, error).Bind(4, now_ms);
  return s.Run();
}

absl::StatusOr<int64_t> SqliteStore::AppendAudit(const AuditRecord& r) {
  absl::MutexLock lock(&mu_);
  return AppendAuditLocked(r);
}

absl::StatusOr<int64_t> SqliteStore::AppendAuditLocked(const AuditRecord& r) {
  Stmt s(db_,
         "INSERT INTO audit_events(time_ms, actor, action, target, outcome, detail) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s.Bind(1, r.time_ms).Bind(2, r.actor).Bind(3, r.action).Bind(4, r.target).Bind(5, r.outcome);
  s.Bind(6, r.detail);
  RETURN_IF_ERROR(s.Run());
  return sqlite3_last_insert_rowid(db_);
}

namespace {

// The control plane's own audit records: the columns every query reads, and one row of them.
constexpr char kAuditColumns[] =
    "SELECT id, time_ms, actor, action, target, outcome, detail FROM audit_events ";

AuditRecord ReadAuditRecord(Stmt& s) {
  return {s.Int(0), s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
}

}  // namespace

absl::StatusOr<std::vector<AuditRecord>> SqliteStore::ListAudit(int limit) {
  absl::MutexLock lock(&mu_);
  const std::string sql = absl::StrCat(kAuditColumns, "ORDER BY id DESC LIMIT ?1");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(limit));
  std::vector<AuditRecord> out;
  while (s.Step() == SQLITE_ROW) out.push_back(ReadAuditRecord(s));
  return out;
}

absl::Status SqliteStore::CheckTrailKeyLocked() {
  const std::string mine = HexEncode(signer_->public_key());
  Stmt q(db_, "SELECT value FROM meta WHERE key = 'trail_public_key'");
  RETURN_IF_ERROR(q.status());
  if (q.Step() == SQLITE_ROW) {
    if (q.Text(0) == mine) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "the audit trails in this store were signed by the trail key whose public half is ",
        q.Text(0), ", and the trail key given is another (", mine,
        "): start with that key (--trail-key-file), or "
        "`audit verify` fails for every trail"));
  }
  Stmt put(db_, "INSERT INTO meta(key, value) VALUES ('trail_public_key', ?1)");
  put.Bind(1, mine);
  return put.Run();
}

absl::Status SqliteStore::AnchorStoredTrailsLocked() {
  SqliteTrailRows rows = RowsLocked();
  return trail_.AnchorStored(rows);
}

absl::StatusOr<uint64_t> SqliteStore::AppendAgentEvents(const std::string& agent_id,
                                                        const EventBatch& batch) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  SqliteTrailRows rows = RowsLocked();
  ASSIGN_OR_RETURN(const uint64_t committed, trail_.Append(rows, agent_id, batch));
  RETURN_IF_ERROR(txn.Commit());
  return committed;
}

absl::StatusOr<AgentChainState> SqliteStore::ResumeAgentChain(const std::string& agent_id,
                                                              const AgentChainStart& start,
                                                              int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  SqliteTrailRows rows = RowsLocked();
  ASSIGN_OR_RETURN(AgentChainState state, trail_.Resume(rows, agent_id, start, now_ms));
  RETURN_IF_ERROR(txn.Commit());
  if (state.resumed_now) {
    LogWarning("agent ", agent_id, ": audit chain resumed: ", ResumeDetail(*state.resume));
  }
  return state;
}

namespace {

constexpr char kSessionColumns[] =
    "summary, ended_ms, outcome, reason, statements, errors, "
    "(SELECT reason FROM legal_holds h WHERE h.session_id = sessions.session_id) FROM sessions";

v1::SessionSummary ReadSession(Stmt& s) {
  v1::SessionSummary out;
  out.ParseFromString(s.Text(0));
  out.set_ended_unix_ms(s.Int(1));
  out.set_outcome(s.Text(2));
  out.set_reason(s.Text(3));
  out.set_statements(static_cast<uint32_t>(s.Int(4)));
  out.set_errors(static_cast<uint32_t>(s.Int(5)));
  out.set_legal_hold(s.Text(6));
  return out;
}

}  // namespace

absl::StatusOr<std::vector<v1::SessionSummary>> SqliteStore::ListSessions(
    const v1::ListSessionsRequest& f) {
  absl::MutexLock lock(&mu_);
  int64_t limit = f.limit() == 0 ? 100 : std::min<int64_t>(f.limit(), 10000);
  std::string sql =
      absl::StrCat("SELECT ", kSessionColumns,
                   " WHERE (?1 = '' OR subject = ?1) AND (?2 = '' OR connection = ?2)"
                   " AND (?3 = 0 OR started_ms >= ?3) AND (?4 = 0 OR started_ms < ?4)"
                   " AND (?6 = '' OR instr(decisions, ',' || ?6 || ',') > 0) AND (?7 = '' OR "
                   "instr(rules, ',' || ?7 || ',') > 0)"
                   " AND (?8 = '' OR json_extract(attribution, '$.\"' || ?8 || '\"') = ?9)"
                   " ORDER BY started_ms DESC, session_id LIMIT ?5");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  s.Bind(1, f.subject())
      .Bind(2, f.connection())
      .Bind(3, f.since_unix_ms())
      .Bind(4, f.until_unix_ms());
  s.Bind(5, limit);
  s.Bind(6, f.decision()).Bind(7, f.rule());
  std::string key, value;
  if (!f.attribution().empty()) {
    size_t eq = f.attribution().find('=');
    key = f.attribution().substr(0, eq);
    value = eq == std::string::npos ? "" : f.attribution().substr(eq + 1);
    if (eq == std::string::npos || key.empty() || !std::all_of(key.begin(), key.end(), [](char c) {
          return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
        })) {
      return absl::InvalidArgumentError(
          "attribution: a filter is claim=value, the claim made of letters, digits, _ - .");
    }
  }
  s.Bind(8, key).Bind(9, value);
  std::vector<v1::SessionSummary> out;
  while (s.Step() == SQLITE_ROW) out.push_back(ReadSession(s));
  return out;
}

absl::StatusOr<std::map<uint64_t, std::string>> SqliteStore::ReadRecordingsLocked(
    const std::string& session_id, uint64_t after) {
  return RowsLocked().Recordings(session_id, after);
}

absl::StatusOr<v1::SessionDetail> SqliteStore::GetSession(const v1::GetSessionRequest& req) {
  const std::string& session_id = req.session_id();
  absl::MutexLock lock(&mu_);
  v1::SessionDetail d;
  ASSIGN_OR_RETURN(*d.mutable_session(), ReadSessionLocked(session_id));
  std::map<uint64_t, std::string> recordings;
  if (req.recording()) {
    ASSIGN_OR_RETURN(recordings, ReadRecordingsLocked(session_id, req.after_sequence()));
  }
  // The chunks that hold the session's events, oldest first; each is decoded whole (checksums
  // included) and the session's events picked out.
  Stmt ev(db_,
          "SELECT c.id, c.agent_id, c.records FROM session_chunks s JOIN event_chunks c ON c.id = "
          "s.chunk_id "
          "WHERE s.session_id = ?1 AND c.last_sequence > ?2 ORDER BY c.id");
  RETURN_IF_ERROR(ev.status());
  ev.Bind(1, session_id).Bind(2, static_cast<int64_t>(req.after_sequence()));
  // A page stays well under gRPC's 4 MiB message limit: at most 2 MiB of bodies and recordings
  // (always at least one event), the rest with `more`.
  constexpr size_t kMaxPageBytes = 2 << 20;
  size_t page_bytes = 0;
  while (ev.Step() == SQLITE_ROW) {
    std::string agent = ev.Text(1);
    ASSIGN_OR_RETURN(std::string records, StoredChunkRecords(ev.Text(2), ev.Int(0)));
    auto events = audit::DecodeEvents(records, std::numeric_limits<size_t>::max());
    if (!events.ok()) {
      return absl::DataLossError(absl::StrCat("stored events of agent ", agent, " (chunk ",
                                              ev.Int(0),
                                              ") are damaged: ", events.status().message()));
    }
    for (auto& e : *events) {
      if (e.session_id() != session_id || e.sequence() <= req.after_sequence()) continue;
      const size_t size = e.json().size() + (req.recording() ? e.recording_bytes() : 0);
      if ((req.max_events() != 0 && d.events_size() >= static_cast<int>(req.max_events())) ||
          (d.events_size() > 0 && page_bytes + size > kMaxPageBytes)) {
        d.set_more(true);
        return d;
      }
      page_bytes += size;
      v1::StoredEvent* out = d.add_events();
      out->set_agent_id(agent);
      out->set_sequence(e.sequence());
      out->set_time_unix_ms(e.time_unix_ms());
      out->set_type(e.type());
      out->set_json(std::move(*e.mutable_json()));
      if (e.recording_bytes() > 0 && req.recording()) {
        auto it = recordings.find(e.sequence());
        if (it == recordings.end() || it->second.size() != e.recording_bytes()) {
          return absl::DataLossError(absl::StrCat("the recording of session ", session_id,
                                                  " at sequence ", e.sequence(),
                                                  " is missing from its recording file"));
        }
        out->set_recording(std::move(it->second));
      }
    }
  }
  return d;
}

absl::StatusOr<uint64_t> SqliteStore::CreateApproval(const ApprovalRecord& r) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  Stmt s(db_,
         "INSERT INTO approvals(status, agent_id, agent_request_id, created_ms, expires_ms, spec) "
         "VALUES (?1, ?2, ?3, ?4, ?5, x'')");
  s.Bind(1, r.approval.status()).Bind(2, r.approval.agent_id()).Bind(3, r.agent_request_id);
  s.Bind(4, r.approval.created_unix_ms()).Bind(5, r.approval.expires_unix_ms());
  RETURN_IF_ERROR(s.Run());
  uint64_t id = static_cast<uint64_t>(sqlite3_last_insert_rowid(db_));
  v1::Approval stored = r.approval;
  stored.set_id(id);
  Stmt put(db_, "UPDATE approvals SET spec = ?2 WHERE id = ?1");
  put.Bind(1, static_cast<int64_t>(id)).BindBlob(2, stored.SerializeAsString());
  RETURN_IF_ERROR(put.Run());
  RETURN_IF_ERROR(txn.Commit());
  return id;
}

namespace {

absl::StatusOr<ApprovalRecord> ReadApproval(Stmt& s) {
  ApprovalRecord r;
  if (!r.approval.ParseFromString(s.Text(1))) {
    return absl::DataLossError(absl::StrCat("stored approval ", s.Int(0), " is damaged"));
  }
  r.agent_request_id = s.Text(2);
  return r;
}

}  // namespace

absl::StatusOr<ApprovalRecord> SqliteStore::GetApproval(uint64_t id) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "SELECT id, spec, agent_request_id FROM approvals WHERE id = ?1");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(id));
  if (s.Step() != SQLITE_ROW)
    return absl::NotFoundError(absl::StrCat("approval request ", id, " does not exist"));
  return ReadApproval(s);
}

absl::StatusOr<ApprovalRecord> SqliteStore::FindApproval(const std::string& agent_id,
                                                         const std::string& agent_request_id) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT id, spec, agent_request_id FROM approvals WHERE agent_id = ?1 AND "
         "agent_request_id = ?2");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, agent_id).Bind(2, agent_request_id);
  if (s.Step() != SQLITE_ROW) return absl::NotFoundError("no such approval request");
  return ReadApproval(s);
}

absl::Status SqliteStore::UpdateApproval(const v1::Approval& a) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "UPDATE approvals SET status = ?2, spec = ?3 WHERE id = ?1");
  s.Bind(1, static_cast<int64_t>(a.id())).Bind(2, a.status()).BindBlob(3, a.SerializeAsString());
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0)
    return absl::NotFoundError(absl::StrCat("approval request ", a.id(), " does not exist"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Approval>> SqliteStore::ListApprovals(const std::string& status,
                                                                     int limit) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT id, spec, agent_request_id FROM approvals WHERE (?1 = '' OR status = ?1) "
         "ORDER BY id DESC LIMIT ?2");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, status).Bind(2, static_cast<int64_t>(limit));
  std::vector<v1::Approval> out;
  while (s.Step() == SQLITE_ROW) {
    ASSIGN_OR_RETURN(ApprovalRecord r, ReadApproval(s));
    out.push_back(std::move(r.approval));
  }
  return out;
}

absl::StatusOr<std::vector<ApprovalRecord>> SqliteStore::DueApprovals(int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT id, spec, agent_request_id FROM approvals WHERE status = 'pending' AND expires_ms "
         "<= ?1 "
         "ORDER BY id LIMIT 1000");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, now_ms);
  std::vector<ApprovalRecord> out;
  while (s.Step() == SQLITE_ROW) {
    ASSIGN_OR_RETURN(ApprovalRecord r, ReadApproval(s));
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<v1::SessionSummary> SqliteStore::ReadSessionLocked(const std::string& session_id) {
  std::string sql = absl::StrCat("SELECT ", kSessionColumns, " WHERE session_id = ?1");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  s.Bind(1, session_id);
  if (s.Step() != SQLITE_ROW)
    return absl::NotFoundError(absl::StrCat("session '", session_id, "' does not exist"));
  return ReadSession(s);
}

absl::StatusOr<v1::SessionSummary> SqliteStore::SetLegalHold(const std::string& session_id,
                                                             const std::string& reason,
                                                             const std::string& actor,
                                                             int64_t now_ms, bool release) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(ReadSessionLocked(session_id).status());
  if (release) {
    Stmt del(db_, "DELETE FROM legal_holds WHERE session_id = ?1");
    del.Bind(1, session_id);
    RETURN_IF_ERROR(del.Run());
  } else {
    Stmt put(db_,
             "INSERT OR REPLACE INTO legal_holds(session_id, reason, held_by, held_ms) VALUES (?1, "
             "?2, ?3, ?4)");
    put.Bind(1, session_id).Bind(2, reason).Bind(3, actor).Bind(4, now_ms);
    RETURN_IF_ERROR(put.Run());
  }
  return ReadSessionLocked(session_id);
}

absl::StatusOr<std::vector<std::string>> SqliteStore::DueSessionsLocked(
    const PurgeRequest& req, v1::PurgeExpiredResponse* out) {
  // What is due: ended sessions of each connection older than its cutoff; held ones are counted.
  std::vector<std::string> due;
  Stmt q(db_,
         "SELECT s.session_id, h.session_id IS NOT NULL FROM sessions s LEFT JOIN legal_holds h "
         "ON h.session_id = s.session_id WHERE s.connection = ?1 AND s.outcome != 'open' AND "
         "s.ended_ms > 0 "
         "AND s.ended_ms < ?2 ORDER BY s.ended_ms");
  RETURN_IF_ERROR(q.status());
  for (const auto& [connection, cutoff] : req.cutoff_ms_by_connection) {
    q.Reset();
    q.Bind(1, connection).Bind(2, cutoff);
    while (q.Step() == SQLITE_ROW && due.size() < req.max_sessions) {
      if (q.Int(1) != 0) {
        out->set_held(out->held() + 1);
      } else {
        due.push_back(q.Text(0));
      }
    }
  }
  return due;
}

absl::StatusOr<v1::PurgeExpiredResponse> SqliteStore::PurgeSessions(const PurgeRequest& req) {
  absl::MutexLock lock(&mu_);
  v1::PurgeExpiredResponse out;
  ASSIGN_OR_RETURN(const std::vector<std::string> due, DueSessionsLocked(req, &out));
  out.set_sessions(static_cast<uint32_t>(due.size()));
  for (size_t i = 0; i < due.size() && i < 1000; ++i) out.add_session_ids(due[i]);
  if (due.empty()) return out;

  const absl::flat_hash_set<std::string> purged(due.begin(), due.end());
  std::vector<DueBlock> blocks;  // the sessions' recording blocks, erased after the commit
  std::set<int64_t> chunks;      // the chunks holding their events
  RETURN_IF_ERROR(PurgeScopeLocked(due, &blocks, &chunks, &out));
  if (req.dry_run) {
    RETURN_IF_ERROR(CountPurgedEventsLocked(chunks, purged, &out));
    return out;
  }

  // Each purged event keeps its place in the chain with the hash it had, which covers its
  // recording slice: the slices are read before anything changes (an unreadable recording stops
  // the purge, so that the chain is never cut short by it).
  absl::flat_hash_map<std::string, std::map<uint64_t, std::string>> slices;
  for (const DueBlock& b : blocks) {
    auto read = recordings_.Read(b.file, b.block);
    if (!read.ok()) {
      return absl::DataLossError(absl::StrCat("retention cannot purge session ", b.session, ": ",
                                              read.status().message(),
                                              " (run `sluicectl audit verify`)"));
    }
    for (RecordingSlice& slice : *read) slices[b.session][slice.sequence] = std::move(slice.data);
  }

  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  ASSIGN_OR_RETURN(int64_t audit_id, AppendAuditLocked({0, req.now_ms, req.actor, "Retention.purge",
                                                        "", "ok", "in progress"}));
  out.set_audit_id(audit_id);
  RETURN_IF_ERROR(RewritePurgedChunksLocked(chunks, purged, req.now_ms, &slices, &out));
  RETURN_IF_ERROR(DeletePurgedRowsLocked(due, out));
  RETURN_IF_ERROR(txn.Commit());
  std::vector<std::pair<std::string, RecordingBlock>> erase;
  erase.reserve(blocks.size());
  for (const DueBlock& b : blocks) erase.emplace_back(b.file, b.block);
  EraseRecordingsLocked(std::move(erase));
  return out;
}

absl::Status SqliteStore::PurgeScopeLocked(const std::vector<std::string>& due,
                                           std::vector<DueBlock>* blocks, std::set<int64_t>* chunks,
                                           v1::PurgeExpiredResponse* out) {
  Stmt f(db_,
         "SELECT file, offset, length FROM recording_blocks WHERE session_id = ?1 ORDER BY "
         "first_sequence");
  RETURN_IF_ERROR(f.status());
  Stmt c(db_, "SELECT chunk_id FROM session_chunks WHERE session_id = ?1");
  RETURN_IF_ERROR(c.status());
  for (const std::string& session : due) {
    f.Reset();
    f.Bind(1, session);
    while (f.Step() == SQLITE_ROW) {
      blocks->push_back(DueBlock{
          session, f.Text(0),
          RecordingBlock{static_cast<uint64_t>(f.Int(1)), static_cast<uint64_t>(f.Int(2))}});
      out->set_recording_bytes(out->recording_bytes() + static_cast<uint64_t>(f.Int(2)));
    }
    c.Reset();
    c.Bind(1, session);
    while (c.Step() == SQLITE_ROW) chunks->insert(c.Int(0));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::CountPurgedEventsLocked(const std::set<int64_t>& chunks,
                                                  const absl::flat_hash_set<std::string>& purged,
                                                  v1::PurgeExpiredResponse* out) {
  Stmt r(db_, "SELECT records FROM event_chunks WHERE id = ?1");
  RETURN_IF_ERROR(r.status());
  for (int64_t chunk : chunks) {
    r.Reset();
    r.Bind(1, chunk);
    if (r.Step() != SQLITE_ROW) continue;
    ASSIGN_OR_RETURN(std::string records, StoredChunkRecords(r.Text(0), chunk));
    ASSIGN_OR_RETURN(auto events, audit::DecodeEvents(records, std::numeric_limits<size_t>::max()));
    for (const auto& e : events)
      out->set_events(out->events() + (purged.contains(e.session_id()) ? 1 : 0));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::RewritePurgedChunksLocked(
    const std::set<int64_t>& chunks, const absl::flat_hash_set<std::string>& purged, int64_t now_ms,
    absl::flat_hash_map<std::string, std::map<uint64_t, std::string>>* slices,
    v1::PurgeExpiredResponse* out) {
  const int64_t audit_id = out->audit_id();
  const std::string tombstone_body = audit::ToJson(audit::PurgedEvent{audit_id});
  // One signed tombstone per agent says which records this purge replaced (trail_anchor.h).
  // Chunks are visited by id: each agent's in sequence order, as verify folds them.
  std::map<std::string, PurgeTombstone> tombstones;
  Stmt r(db_, "SELECT records, agent_id FROM event_chunks WHERE id = ?1");
  RETURN_IF_ERROR(r.status());
  for (int64_t chunk : chunks) {
    r.Reset();
    r.Bind(1, chunk);
    if (r.Step() != SQLITE_ROW) continue;
    ASSIGN_OR_RETURN(const std::string records, StoredChunkRecords(r.Text(0), chunk));
    const std::string chunk_agent = r.Text(1);
    ASSIGN_OR_RETURN(
        const std::string rewritten,
        PurgedChunk(chunk, records, purged, tombstone_body, slices, &tombstones[chunk_agent], out));
    Stmt w(db_, "UPDATE event_chunks SET records = ?2 WHERE id = ?1");
    ASSIGN_OR_RETURN(absl::string_view compressed, RowsLocked().StoredChunk(rewritten));
    w.Bind(1, chunk).BindBlobNoCopy(2, compressed);
    RETURN_IF_ERROR(w.Run());
  }
  for (auto& [agent, t] : tombstones) {
    if (t.events == 0) continue;  // its chunks held no event of these sessions still unpurged
    t.audit_id = audit_id;
    t.agent_id = agent;
    t.time_ms = now_ms;
    ASSIGN_OR_RETURN(std::string signature, signer_->Sign(PurgeTombstoneMessage(t)));
    Stmt put(db_,
             "INSERT INTO purge_tombstones(agent_id, audit_id, time_ms, events, first_sequence, "
             "last_sequence, digest, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    put.Bind(1, agent).Bind(2, audit_id).Bind(3, t.time_ms).Bind(4, static_cast<int64_t>(t.events));
    put.Bind(5, static_cast<int64_t>(t.first_sequence))
        .Bind(6, static_cast<int64_t>(t.last_sequence));
    put.BindBlob(7, t.digest).BindBlob(8, signature);
    RETURN_IF_ERROR(put.Run());
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::DeletePurgedRowsLocked(const std::vector<std::string>& due,
                                                 const v1::PurgeExpiredResponse& out) {
  for (const char* sql : {"DELETE FROM session_chunks WHERE session_id = ?1",
                          "DELETE FROM recording_blocks WHERE session_id = ?1",
                          "DELETE FROM sessions WHERE session_id = ?1"}) {
    Stmt d(db_, sql);
    RETURN_IF_ERROR(d.status());
    for (const std::string& session : due) {
      d.Reset();
      d.Bind(1, session);
      RETURN_IF_ERROR(d.Run());
    }
  }
  Stmt detail(db_, "UPDATE audit_events SET target = ?2, detail = ?3 WHERE id = ?1");
  detail.Bind(1, out.audit_id()).Bind(2, absl::StrCat(due.size(), " sessions"));
  detail.Bind(3, absl::StrCat("purged ", due.size(), " sessions (", out.events(),
                              " events kept in the chain as purged records, ",
                              out.recording_bytes(), " recording bytes), ", out.held(),
                              " due sessions under legal hold kept; sessions: ",
                              absl::StrJoin(out.session_ids(), ",").substr(0, 4000)));
  return detail.Run();
}

void SqliteStore::EraseRecordingsLocked(
    std::vector<std::pair<std::string, RecordingBlock>> blocks) {
  // A reader in a snapshot from before the purge may still read these bytes (`audit verify`, the
  // evidence export): they wait for the next purge after it.
  absl::MutexLock shared_lock(&shared_->mu);
  if (!shared_->gate.TryLock()) {
    shared_->deferred.insert(shared_->deferred.end(), std::make_move_iterator(blocks.begin()),
                             std::make_move_iterator(blocks.end()));
    LogInfo(
        "retention: ", shared_->deferred.size(),
        " purged recording block(s) are erased at the next purge (an audit read holds a snapshot)");
    return;
  }
  blocks.insert(blocks.end(), std::make_move_iterator(shared_->deferred.begin()),
                std::make_move_iterator(shared_->deferred.end()));
  shared_->deferred.clear();
  // The bytes go once the index no longer names them (a failure leaves orphaned bytes, not a gap);
  // a file none of whose blocks is indexed any more goes whole.
  std::set<std::string> files;
  for (const auto& [file, block] : blocks) {
    absl::Status st = recordings_.Erase(file, block);
    if (!st.ok()) LogWarning("retention: ", st.message());
    files.insert(file);
  }
  for (const std::string& file : files) {
    Stmt left(db_, "SELECT 1 FROM recording_blocks WHERE file = ?1 LIMIT 1");
    left.Bind(1, file);
    if (left.Step() == SQLITE_ROW) continue;
    absl::Status st = recordings_.RemoveIfDone(file);
    if (!st.ok()) LogWarning("retention: ", st.message());
  }
  shared_->gate.Unlock();
}

absl::StatusOr<v1::VerifyAuditResponse> SqliteStore::VerifyAudit(const v1::VerifyAuditRequest& req,
                                                                 const EventVisitor& visit) {
  absl::MutexLock lock(&mu_);
  SqliteTrailRows rows = RowsLocked();
  return trail_.Verify(rows, req, visit);
}

absl::Status SqliteStore::VisitAudit(int64_t from_ms, int64_t until_ms,
                                     const std::function<void(const AuditRecord&)>& visit) {
  absl::MutexLock lock(&mu_);
  const std::string sql =
      absl::StrCat(kAuditColumns, "WHERE time_ms >= ?1 AND time_ms < ?2 ORDER BY time_ms, id");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  s.Bind(1, from_ms).Bind(2, until_ms);
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) visit(ReadAuditRecord(s));
  if (rc != SQLITE_DONE) return SqliteError(db_);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::SessionSummary>> SqliteStore::FindSessions(
    const std::vector<std::string>& session_ids) {
  absl::MutexLock lock(&mu_);
  std::string sql = absl::StrCat("SELECT ", kSessionColumns, " WHERE session_id = ?1");
  Stmt s(db_, sql.c_str());
  RETURN_IF_ERROR(s.status());
  std::vector<v1::SessionSummary> out;
  for (const std::string& id : session_ids) {
    s.Reset();
    s.Bind(1, id);
    if (s.Step() == SQLITE_ROW) out.push_back(ReadSession(s));
  }
  return out;
}

absl::StatusOr<RecordsHeld> SqliteStore::Held() {
  absl::MutexLock lock(&mu_);
  RecordsHeld out;
  Stmt e(db_, "SELECT COALESCE(MIN(first_time_ms), 0) FROM event_chunks");
  RETURN_IF_ERROR(e.status());
  if (e.Step() == SQLITE_ROW) out.oldest_event_ms = e.Int(0);
  Stmt a(db_, "SELECT COALESCE(MIN(time_ms), 0), COUNT(*) FROM audit_events");
  RETURN_IF_ERROR(a.status());
  if (a.Step() == SQLITE_ROW) {
    out.oldest_audit_ms = a.Int(0);
    out.audit_records = a.Int(1);
  }
  Stmt h(db_, "SELECT COUNT(*) FROM legal_holds");
  RETURN_IF_ERROR(h.status());
  if (h.Step() == SQLITE_ROW) out.legal_holds = h.Int(0);
  return out;
}

absl::Status SqliteStore::VisitApprovals(int64_t from_ms, int64_t until_ms,
                                         const std::function<void(const v1::Approval&)>& visit) {
  absl::MutexLock lock(&mu_);
  Stmt s(
      db_,
      "SELECT id, spec, agent_request_id FROM approvals WHERE created_ms >= ?1 AND created_ms < ?2 "
      "ORDER BY created_ms, id");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, from_ms).Bind(2, until_ms);
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    ASSIGN_OR_RETURN(ApprovalRecord r, ReadApproval(s));
    visit(r.approval);
  }
  if (rc != SQLITE_DONE) return SqliteError(db_);
  return absl::OkStatus();
}

}  // namespace sluice::controlplane
