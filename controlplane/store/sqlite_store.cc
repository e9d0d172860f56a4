#include "controlplane/store/sqlite_store.h"

#include <google/protobuf/util/message_differencer.h>
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
#include "common/status_macros.h"
#include "controlplane/store/disk_fault.h"
#include "controlplane/store/migrations.h"
#include "controlplane/store/session_index.h"
#include "controlplane/store/sqlite_stmt.h"

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

// A stored chunk holds the records of one batch (at most 32 MiB): inflating one is capped at
// twice that.
constexpr uint64_t kMaxChunkBytes = 64 << 20;

// The framed records of a stored chunk (common/audit/records.h): a zstd frame is inflated, raw
// records (chunks stored before compression) are returned as they are.
absl::StatusOr<std::string> ChunkRecords(std::string stored, int64_t chunk) {
  if (!IsZstdFrame(stored)) return stored;
  auto records = ZstdInflate(stored, kMaxChunkBytes);
  if (!records.ok()) {
    return absl::DataLossError(absl::StrCat("stored events (chunk ", chunk,
                                            ") are damaged: ", records.status().message()));
  }
  return records;
}

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
  RETURN_IF_ERROR(txn.Commit());
  return version;
}

absl::StatusOr<uint64_t> SqliteStore::DeleteResource(const std::string& kind,
                                                     const std::string& name) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  Stmt s(db_, "DELETE FROM resources WHERE kind = ?1 AND name = ?2");
  s.Bind(1, kind).Bind(2, name);
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0)
    return absl::NotFoundError(absl::StrCat(kind, " '", name, "' does not exist"));
  ASSIGN_OR_RETURN(uint64_t version, BumpVersionLocked());
  RETURN_IF_ERROR(txn.Commit());
  return version;
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
  if (rc != SQLITE_DONE) return SqliteError(db_);
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

}  // namespace sluice::controlplane

namespace sluice::controlplane {
namespace {

// A checkpoint event's claim: the record with `sequence` has `hash`, signed by the agent.
using Checkpoint = AgentCheckpoint;

std::optional<Checkpoint> ParseCheckpoint(const v1::AuditEvent& e) {
  if (e.type() != audit::CheckpointEvent::kType) return std::nullopt;
  auto read = audit::CheckpointEvent::Read(e.json());
  if (!read.ok()) return Checkpoint{};  // malformed: sequence 0, never verifies
  Checkpoint c;
  c.sequence = read->sequence;
  c.hash = std::move(read->hash);
  c.signature = std::move(read->signature);
  return c;
}

bool SignatureValid(const std::string& key, const Checkpoint& c) {
  return c.sequence != 0 &&
         Ed25519Verify(key, audit::CheckpointMessage(c.sequence, c.hash), c.signature);
}

// The start of a chain hash, for messages.
std::string HashPrefix(absl::string_view hash) {
  return hash.empty() ? std::string("nothing") : absl::StrCat(HexEncode(hash.substr(0, 8)), "...");
}

constexpr char kResumeColumns[] =
    "agent_id, resumed_after_sequence, resumed_after_hash, held_through_sequence, "
    "held_through_hash, held_records, "
    "time_ms, signature";

// A chain_resumes row (kResumeColumns) and its signature.
std::pair<ChainResume, std::string> ReadResume(Stmt& r) {
  ChainResume x;
  x.agent_id = r.Text(0);
  x.resumed_after_sequence = static_cast<uint64_t>(r.Int(1));
  x.resumed_after_hash = r.Text(2);
  x.held_through_sequence = static_cast<uint64_t>(r.Int(3));
  x.held_through_hash = r.Text(4);
  x.held_records = static_cast<uint64_t>(r.Int(5));
  x.time_ms = r.Int(6);
  return {std::move(x), r.Text(7)};
}

}  // namespace

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

absl::StatusOr<std::string> SqliteStore::StoredRecordHashLocked(const v1::AuditEvent& e,
                                                                absl::string_view payload) {
  if (!e.purged_hash().empty()) return e.purged_hash();
  if (e.recording_bytes() == 0) return audit::ChainHash(payload);
  ASSIGN_OR_RETURN(auto slices, ReadRecordingsLocked(e.session_id(), e.sequence() - 1));
  auto slice = slices.find(e.sequence());
  if (slice == slices.end() || slice->second.size() != e.recording_bytes()) {
    return absl::DataLossError(
        absl::StrCat("the recording slice of sequence ", e.sequence(), " is missing"));
  }
  return audit::ChainHash(audit::JoinRecording(payload, slice->second));
}

absl::Status SqliteStore::PutTrailHeadLocked(const TrailHead& h) {
  ASSIGN_OR_RETURN(std::string signature, signer_->Sign(TrailHeadMessage(h)));
  Stmt put(db_, statements_,
           "INSERT INTO trail_heads(agent_id, genesis_sequence, genesis_hash, last_sequence, "
           "last_hash, records, origin, "
           "anchored_through, time_ms, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
           "ON CONFLICT(agent_id) DO UPDATE SET genesis_sequence = ?2, genesis_hash = ?3, "
           "last_sequence = ?4, "
           "last_hash = ?5, records = ?6, origin = ?7, anchored_through = ?8, time_ms = ?9, "
           "signature = ?10");
  put.Bind(1, h.agent_id)
      .Bind(2, static_cast<int64_t>(h.genesis_sequence))
      .BindBlob(3, h.genesis_hash);
  put.Bind(4, static_cast<int64_t>(h.last_sequence))
      .BindBlob(5, h.last_hash)
      .Bind(6, static_cast<int64_t>(h.records));
  put.Bind(7, static_cast<int64_t>(h.origin))
      .Bind(8, static_cast<int64_t>(h.anchored_through))
      .Bind(9, h.time_ms);
  put.BindBlob(10, signature);
  return put.Run();
}

absl::Status SqliteStore::PutTrailTotalsLocked(const TrailTotals& t) {
  ASSIGN_OR_RETURN(std::string signature, signer_->Sign(TrailTotalsMessage(t)));
  Stmt put(
      db_, statements_,
      "INSERT INTO trail_totals(id, agents, origin, time_ms, signature) VALUES (1, ?1, ?2, ?3, ?4) "
      "ON CONFLICT(id) DO UPDATE SET agents = ?1, origin = ?2, time_ms = ?3, signature = ?4");
  put.Bind(1, static_cast<int64_t>(t.agents))
      .Bind(2, static_cast<int64_t>(t.origin))
      .Bind(3, t.time_ms);
  put.BindBlob(4, signature);
  return put.Run();
}

absl::Status SqliteStore::AnchorStoredTrailsLocked() {
  struct Found {
    std::string agent;
    int64_t first_chunk = 0, last_chunk = 0;
    uint64_t first_sequence = 0, last_sequence = 0, records = 0;
  };
  std::vector<Found> found;
  {
    Stmt q(db_,
           "SELECT agent_id, MIN(id), MAX(id), MIN(first_sequence), MAX(last_sequence), "
           "SUM(events) FROM event_chunks "
           "GROUP BY agent_id ORDER BY agent_id");
    RETURN_IF_ERROR(q.status());
    while (q.Step() == SQLITE_ROW) {
      found.push_back(Found{q.Text(0), q.Int(1), q.Int(2), static_cast<uint64_t>(q.Int(3)),
                            static_cast<uint64_t>(q.Int(4)), static_cast<uint64_t>(q.Int(5))});
    }
  }
  // The first and the last record of a chunk, as stored. What cannot be read (a damaged chunk, a
  // recording slice gone) leaves the hash empty: the trail is taken as found, and verify names
  // the damage itself.
  struct Edge {
    uint64_t sequence = 0;
    std::string hash;
    int64_t time_ms = 0;
  };
  Stmt read(db_, "SELECT records FROM event_chunks WHERE id = ?1");
  RETURN_IF_ERROR(read.status());
  auto edge = [this, &read](int64_t chunk, bool first)
                  ABSL_NO_THREAD_SAFETY_ANALYSIS -> std::optional<Edge> {
    read.Reset();
    read.Bind(1, chunk);
    if (read.Step() != SQLITE_ROW) return std::nullopt;
    auto records = ChunkRecords(read.Text(0), chunk);
    if (!records.ok()) return std::nullopt;
    audit::RecordReader reader(*records);
    std::optional<absl::string_view> payload;
    while (!reader.done()) {
      auto next = reader.Next();
      if (!next.ok()) break;
      payload = *next;
      if (first) break;
    }
    v1::AuditEvent e;
    if (!payload || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size())))
      return std::nullopt;
    auto hash = StoredRecordHashLocked(e, *payload);
    return Edge{e.sequence(), hash.ok() ? *hash : std::string(), e.time_unix_ms()};
  };
  TrailTotals totals;
  uint64_t records = 0;
  for (const Found& f : found) {
    TrailHead h;
    h.agent_id = f.agent;
    h.origin = TrailOrigin::kUpgrade;
    h.records = f.records;
    h.genesis_sequence = f.first_sequence;
    h.last_sequence = f.last_sequence;
    if (auto g = edge(f.first_chunk, true); g && g->sequence == f.first_sequence)
      h.genesis_hash = g->hash;
    if (auto l = edge(f.last_chunk, false); l && l->sequence == f.last_sequence) {
      h.last_hash = l->hash;
      h.time_ms = l->time_ms;
    }
    h.anchored_through = h.last_sequence;
    RETURN_IF_ERROR(PutTrailHeadLocked(h));
    ++totals.agents;
    records += h.records;
    totals.time_ms = std::max(totals.time_ms, h.time_ms);
  }
  if (found.empty()) return absl::OkStatus();
  LogInfo("audit trails: anchored the trails of ", found.size(), " agent(s) as stored (", records,
          " records); `audit verify` proves them complete from here on");
  return PutTrailTotalsLocked(totals);
}

absl::StatusOr<absl::string_view> SqliteStore::StoredChunkLocked(absl::string_view records) {
  chunk_buffer_.clear();
  RETURN_IF_ERROR(chunk_zstd_.AppendFrame(records, &chunk_buffer_));
  return absl::string_view(chunk_buffer_);
}

absl::StatusOr<uint64_t> SqliteStore::AppendAgentEvents(const std::string& agent_id,
                                                        const EventBatch& batch) {
  if (batch.offsets.size() != batch.events.size()) {
    return absl::InvalidArgumentError("event batch: one record offset per event is required");
  }
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  // Agents send in sequence order and resend from their first unacknowledged event, so whatever
  // is at or below the agent's committed sequence is a duplicate.
  Stmt committed_q(
      db_, statements_,
      "SELECT events_committed, chain_head, audit_public_key FROM agents WHERE id = ?1");
  RETURN_IF_ERROR(committed_q.status());
  committed_q.Bind(1, agent_id);
  if (committed_q.Step() != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' is not enrolled"));
  }
  const uint64_t committed = static_cast<uint64_t>(committed_q.Int(0));
  size_t first_new = 0;
  while (first_new < batch.events.size() && batch.events[first_new].sequence() <= committed)
    ++first_new;
  if (first_new == batch.events.size()) return committed;  // all resent: stored already
  ASSIGN_OR_RETURN(
      const BatchChain chain,
      CheckBatchChain(agent_id, batch, first_new, committed_q.Text(1), committed_q.Text(2)));

  // Recordings leave the events here: each slice goes to its session's recording file, and the
  // event is stored without it (audit::StripRecording); `audit verify` joins them again.
  absl::string_view stored = absl::string_view(batch.records).substr(batch.offsets[first_new]);
  std::string stripped_records;
  std::map<std::string, std::vector<RecordingSlice>> slices;  // by session
  RETURN_IF_ERROR(SplitRecordings(agent_id, batch, first_new, &stripped_records, &slices));
  if (!slices.empty()) stored = stripped_records;

  // The new events are a suffix of the batch: stored as they came (without recordings), as one
  // chunk.
  const v1::AuditEvent& first = batch.events[first_new];
  const v1::AuditEvent& last = batch.events.back();
  Stmt put(db_, statements_,
           "INSERT INTO event_chunks(agent_id, first_sequence, last_sequence, first_time_ms, "
           "last_time_ms, events, records) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  put.Bind(1, agent_id).Bind(2, static_cast<int64_t>(first.sequence()));
  put.Bind(3, static_cast<int64_t>(last.sequence())).Bind(4, first.time_unix_ms());
  put.Bind(5, last.time_unix_ms()).Bind(6, static_cast<int64_t>(batch.events.size() - first_new));
  ASSIGN_OR_RETURN(absl::string_view compressed, StoredChunkLocked(stored));
  put.BindBlobNoCopy(7, compressed);
  RETURN_IF_ERROR(put.Run());
  const int64_t chunk_id = sqlite3_last_insert_rowid(db_);
  RETURN_IF_ERROR(StoreRecordingsLocked(agent_id, slices));
  RETURN_IF_ERROR(IndexSessionsLocked(agent_id, batch, first_new, chunk_id));
  Stmt mark(db_, statements_,
            "UPDATE agents SET events_committed = ?2, chain_head = ?3 WHERE id = ?1");
  mark.Bind(1, agent_id).Bind(2, static_cast<int64_t>(last.sequence())).BindBlob(3, chain.head);
  RETURN_IF_ERROR(mark.Run());
  RETURN_IF_ERROR(AdvanceTrailLocked(agent_id, committed, batch.events.size() - first_new,
                                     {first.sequence(), chain.first_hash},
                                     {last.sequence(), chain.head}, last.time_unix_ms(),
                                     chain.last_checkpoint ? &*chain.last_checkpoint : nullptr));
  RETURN_IF_ERROR(txn.Commit());
  return last.sequence();
}

absl::StatusOr<SqliteStore::BatchChain> SqliteStore::CheckBatchChain(const std::string& agent_id,
                                                                     const EventBatch& batch,
                                                                     size_t first_new,
                                                                     std::string head,
                                                                     const std::string& key) {
  // The hash chain: each new event names the hash of the one before it. An agent's first stored
  // event starts its chain; so does an event with no prev_hash (an agent from before chains, or
  // one that lost its spool), which `audit verify` reports as a break. A prev_hash that names
  // something else is refused.
  BatchChain out;
  for (size_t i = first_new; i < batch.events.size(); ++i) {
    const v1::AuditEvent& e = batch.events[i];
    if (!e.purged_hash().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("audit event ", e.sequence(), " of agent ", agent_id,
                       " claims to be purged: only the control plane purges"));
    }
    if (!head.empty() && !e.prev_hash().empty() && e.prev_hash() != head) {
      return absl::DataLossError(absl::StrCat(
          "the audit chain of agent ", agent_id, " breaks at sequence ", e.sequence(),
          ": its prev_hash does not match the event stored before it (it names ",
          HashPrefix(e.prev_hash()), ", the control plane expects ", HashPrefix(head), ")"));
    }
    head = audit::ChainHash(audit::RecordPayload(batch.records, batch.offsets[i]));
    if (i == first_new) out.first_hash = head;
    // A checkpoint must carry the agent's signature (the claim itself is checked by VerifyAudit,
    // which follows the whole chain).
    if (auto c = ParseCheckpoint(e); c && !key.empty()) {
      if (!SignatureValid(key, *c)) {
        return absl::DataLossError(
            absl::StrCat("the audit checkpoint of agent ", agent_id, " at sequence ", e.sequence(),
                         " does not carry a valid signature of the agent's key"));
      }
      out.last_checkpoint = *c;
    }
  }
  out.head = std::move(head);
  return out;
}

absl::Status SqliteStore::SplitRecordings(
    const std::string& agent_id, const EventBatch& batch, size_t first_new,
    std::string* stripped_records, std::map<std::string, std::vector<RecordingSlice>>* slices) {
  const bool recorded = std::any_of(
      batch.events.begin() + static_cast<std::ptrdiff_t>(first_new), batch.events.end(),
      [](const v1::AuditEvent& e) { return e.recording_bytes() != 0 || !e.recording().empty(); });
  if (!recorded) return absl::OkStatus();
  stripped_records->reserve(batch.records.size() - batch.offsets[first_new]);
  for (size_t i = first_new; i < batch.events.size(); ++i) {
    const v1::AuditEvent& e = batch.events[i];
    absl::string_view payload = audit::RecordPayload(batch.records, batch.offsets[i]);
    if (e.recording_bytes() == 0 && e.recording().empty()) {
      audit::AppendRecord(stripped_records, payload);
      continue;
    }
    if (e.recording().size() != e.recording_bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("audit event ", e.sequence(), " of agent ", agent_id,
                       ": recording_bytes does not match its recording"));
    }
    ASSIGN_OR_RETURN(absl::string_view without, audit::StripRecording(payload, e.recording()));
    audit::AppendRecord(stripped_records, without);
    (*slices)[e.session_id()].push_back(RecordingSlice{e.sequence(), e.recording()});
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::StoreRecordingsLocked(
    const std::string& agent_id, const std::map<std::string, std::vector<RecordingSlice>>& slices) {
  if (slices.empty()) return absl::OkStatus();
  Stmt index(db_, statements_,
             "INSERT OR REPLACE INTO recording_blocks(session_id, agent_id, first_sequence, "
             "last_sequence, file, "
             "offset, length) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  RETURN_IF_ERROR(index.status());
  std::vector<const std::vector<RecordingSlice>*> groups;
  for (const auto& [session, list] : slices) groups.push_back(&list);
  ASSIGN_OR_RETURN(auto written, recordings_.Append(groups));
  size_t i = 0;
  for (const auto& [session, list] : slices) {
    const RecordingBlock& block = written.second[i++];
    index.Reset();
    index.Bind(1, session).Bind(2, agent_id).Bind(3, static_cast<int64_t>(list.front().sequence));
    index.Bind(4, static_cast<int64_t>(list.back().sequence)).Bind(5, written.first);
    index.Bind(6, static_cast<int64_t>(block.offset)).Bind(7, static_cast<int64_t>(block.length));
    RETURN_IF_ERROR(index.Run());
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::IndexSessionsLocked(const std::string& agent_id, const EventBatch& batch,
                                              size_t first_new, int64_t chunk_id) {
  // Statement counters are summed per session and written once per batch.
  struct Counts {
    int64_t statements = 0;
    int64_t errors = 0;
  };
  absl::flat_hash_map<std::string, Counts> counts;
  absl::flat_hash_set<std::string> sessions;
  // Decisions and rules per session, for the session filters. Only events that name one are
  // parsed (most statement events do not).
  absl::flat_hash_map<std::string, SessionTags> tags;
  auto tag = [&tags](const v1::AuditEvent& e) {
    auto t = EventTags(e);
    if (!t) return;
    SessionTags& into = tags[e.session_id()];
    into.decisions.insert(t->decisions.begin(), t->decisions.end());
    into.rules.insert(t->rules.begin(), t->rules.end());
  };
  for (size_t i = first_new; i < batch.events.size(); ++i) {
    const v1::AuditEvent& e = batch.events[i];
    sessions.insert(e.session_id());
    if (e.type() == audit::StatementEvent::kType) {
      Counts& c = counts[e.session_id()];
      ++c.statements;
      if (e.failed()) ++c.errors;
      tag(e);
      continue;
    }
    if (e.type() == audit::AlertEvent::kType || e.type() == audit::ApprovalEvent::kType) {
      tag(e);
      continue;
    }
    if (e.type() != audit::SessionStartEvent::kType &&
        e.type() != audit::SessionRefusedEvent::kType &&
        e.type() != audit::SessionEndEvent::kType) {
      continue;
    }
    auto reason = [&e]() { return EventReason(e); };
    if (e.type() == audit::SessionEndEvent::kType) {
      Stmt up(db_, statements_,
              "UPDATE sessions SET ended_ms = ?2, outcome = 'closed', reason = ?3 WHERE session_id "
              "= ?1");
      up.Bind(1, e.session_id()).Bind(2, e.time_unix_ms()).Bind(3, reason());
      RETURN_IF_ERROR(up.Run());
      continue;
    }
    v1::SessionSummary summary = SummaryFromEvent(agent_id, e);
    std::string bytes;
    summary.SerializeToString(&bytes);
    bool refused = e.type() == audit::SessionRefusedEvent::kType;
    Stmt up(db_, statements_,
            "INSERT OR IGNORE INTO sessions(session_id, agent_id, connection, subject, issuer, "
            "summary, "
            "started_ms, ended_ms, outcome, reason, attribution) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
            "?7, ?8, ?9, ?10, ?11)");
    up.Bind(1, e.session_id())
        .Bind(2, agent_id)
        .Bind(3, summary.connection())
        .Bind(4, summary.subject());
    up.Bind(5, summary.issuer()).BindBlob(6, bytes).Bind(7, e.time_unix_ms());
    up.Bind(8, refused ? e.time_unix_ms() : 0).Bind(9, std::string(refused ? "refused" : "open"));
    up.Bind(10, refused ? reason() : std::string());
    up.Bind(11, AttributionJson(summary));
    RETURN_IF_ERROR(up.Run());
  }
  for (const auto& [session, t] : tags) {
    Stmt q(db_, statements_, "SELECT decisions, rules FROM sessions WHERE session_id = ?1");
    RETURN_IF_ERROR(q.status());
    q.Bind(1, session);
    if (q.Step() != SQLITE_ROW) continue;
    auto merge = MergeTagList;
    Stmt up(db_, statements_,
            "UPDATE sessions SET decisions = ?2, rules = ?3 WHERE session_id = ?1");
    up.Bind(1, session).Bind(2, merge(q.Text(0), t.decisions)).Bind(3, merge(q.Text(1), t.rules));
    RETURN_IF_ERROR(up.Run());
  }
  Stmt up(db_, statements_,
          "UPDATE sessions SET statements = statements + ?2, errors = errors + ?3 WHERE session_id "
          "= ?1");
  RETURN_IF_ERROR(up.status());
  for (const auto& [session, c] : counts) {
    up.Reset();
    up.Bind(1, session).Bind(2, c.statements).Bind(3, c.errors);
    RETURN_IF_ERROR(up.Run());
  }
  Stmt link(db_, statements_,
            "INSERT OR IGNORE INTO session_chunks(session_id, chunk_id) VALUES (?1, ?2)");
  RETURN_IF_ERROR(link.status());
  for (const auto& session : sessions) {
    link.Reset();
    link.Bind(1, session).Bind(2, chunk_id);
    RETURN_IF_ERROR(link.Run());
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::AdvanceTrailLocked(const std::string& agent_id, uint64_t committed,
                                             uint64_t added, const SequenceHash& first,
                                             const SequenceHash& last, int64_t time_ms,
                                             const AgentCheckpoint* checkpoint) {
  TrailHead h;
  h.agent_id = agent_id;
  h.last_sequence = last.sequence;
  h.last_hash = last.hash;
  h.time_ms = time_ms;
  bool new_head = false;
  {
    Stmt q(db_, statements_,
           "SELECT genesis_sequence, genesis_hash, records, origin, anchored_through FROM "
           "trail_heads WHERE agent_id = ?1");
    RETURN_IF_ERROR(q.status());
    q.Bind(1, agent_id);
    if (q.Step() == SQLITE_ROW) {
      h.genesis_sequence = static_cast<uint64_t>(q.Int(0));
      h.genesis_hash = q.Text(1);
      h.records = static_cast<uint64_t>(q.Int(2)) + added;
      h.origin = static_cast<TrailOrigin>(q.Int(3));
      h.anchored_through = static_cast<uint64_t>(q.Int(4));
    } else {
      new_head = true;
      h.genesis_sequence = first.sequence;
      h.genesis_hash = first.hash;
      h.records = added;
    }
  }
  if (new_head && committed != 0) {
    // Events were stored for this agent, and their head is gone: someone removed it. A new head
    // is signed from what is stored (so that ingest goes on), marked lost: verify reports it.
    Stmt q(db_, "SELECT MIN(first_sequence), SUM(events) FROM event_chunks WHERE agent_id = ?1");
    RETURN_IF_ERROR(q.status());
    q.Bind(1, agent_id);
    if (q.Step() == SQLITE_ROW) {
      h.genesis_sequence = static_cast<uint64_t>(q.Int(0));
      h.records = static_cast<uint64_t>(q.Int(1));
    }
    h.genesis_hash.clear();
    h.origin = TrailOrigin::kLost;
    h.anchored_through = committed;
    LogWarning("audit trail of agent ", agent_id,
               ": its signed head was missing (removed from the store); a new one "
               "marks the trail through sequence ",
               committed, " as not proven");
  }
  RETURN_IF_ERROR(PutTrailHeadLocked(h));
  if (checkpoint != nullptr) {
    Stmt up(db_, statements_,
            "UPDATE trail_heads SET checkpoint_sequence = ?2, checkpoint_hash = ?3, "
            "checkpoint_signature = ?4 "
            "WHERE agent_id = ?1");
    up.Bind(1, agent_id)
        .Bind(2, static_cast<int64_t>(checkpoint->sequence))
        .BindBlob(3, checkpoint->hash);
    up.BindBlob(4, checkpoint->signature);
    RETURN_IF_ERROR(up.Run());
  }

  // The count of trails changes when one starts (a lost head's agent was counted already).
  TrailTotals totals;
  totals.time_ms = time_ms;
  Stmt q(db_, statements_, "SELECT agents, origin FROM trail_totals WHERE id = 1");
  RETURN_IF_ERROR(q.status());
  if (q.Step() == SQLITE_ROW) {
    if (!new_head || committed != 0) return absl::OkStatus();
    totals.agents = static_cast<uint64_t>(q.Int(0)) + 1;
    totals.origin = static_cast<TrailOrigin>(q.Int(1));
  } else {
    // No totals yet: a new store, whose first trail this is; otherwise someone removed them, and
    // they are counted again from the heads, marked lost.
    Stmt heads(db_, "SELECT COUNT(*) FROM trail_heads");
    RETURN_IF_ERROR(heads.status());
    if (heads.Step() == SQLITE_ROW) totals.agents = static_cast<uint64_t>(heads.Int(0));
    if (!(new_head && committed == 0 && totals.agents == 1)) {
      totals.origin = TrailOrigin::kLost;
      LogWarning(
          "audit trails: the signed totals were missing (removed from the store); new ones are "
          "marked lost");
    }
  }
  return PutTrailTotalsLocked(totals);
}

absl::StatusOr<std::optional<std::string>> SqliteStore::StoredHashAtLocked(
    const std::string& agent_id, uint64_t sequence, uint64_t* after_in_chunk) {
  Stmt q(db_,
         "SELECT id, first_sequence, records FROM event_chunks WHERE agent_id = ?1 AND "
         "last_sequence >= ?2 "
         "ORDER BY last_sequence LIMIT 1");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, agent_id).Bind(2, static_cast<int64_t>(sequence));
  if (q.Step() != SQLITE_ROW || static_cast<uint64_t>(q.Int(1)) > sequence) return std::nullopt;
  const int64_t chunk = q.Int(0);
  ASSIGN_OR_RETURN(std::string records, ChunkRecords(q.Text(2), chunk));
  audit::RecordReader reader(records);
  std::optional<std::string> hash;
  uint64_t after = 0;
  while (!reader.done()) {
    auto payload = reader.Next();
    v1::AuditEvent e;
    if (!payload.ok() || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
      return absl::DataLossError(absl::StrCat("stored events (chunk ", chunk, ") are damaged"));
    }
    if (hash) {
      ++after;
    } else if (e.sequence() == sequence) {
      ASSIGN_OR_RETURN(std::string h, StoredRecordHashLocked(e, *payload));
      hash = std::move(h);
    }
  }
  if (after_in_chunk != nullptr) *after_in_chunk = after;
  return hash;
}

absl::StatusOr<AgentChainState> SqliteStore::ResumeAgentChain(const std::string& agent_id,
                                                              const AgentChainStart& start,
                                                              int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.begun());
  AgentChainState state;
  {
    Stmt q(db_, "SELECT events_committed, chain_head FROM agents WHERE id = ?1");
    RETURN_IF_ERROR(q.status());
    q.Bind(1, agent_id);
    if (q.Step() != SQLITE_ROW)
      return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' is not enrolled"));
    state.committed = static_cast<uint64_t>(q.Int(0));
    state.head = q.Text(1);
  }
  const uint64_t held = state.committed;
  // In step: nothing stored yet, an agent that says nothing (from before this), or a spool that
  // holds the last stored record or more (what the control plane holds is dropped when resent).
  if (held == 0 || start.hash.empty() || start.own_from == 0 || start.sequence >= held)
    return state;
  if (start.own_from <= held) {
    // Records of this very process are stored: its stream broke and started again. A resume
    // recorded for its start is told again, in case the agent did not hear of it.
    Stmt r(db_, absl::StrCat("SELECT ", kResumeColumns,
                             " FROM chain_resumes WHERE agent_id = ?1 AND "
                             "resumed_after_sequence = ?2 AND resumed_after_hash = ?3 AND "
                             "held_through_sequence < ?4 "
                             "ORDER BY held_through_sequence DESC LIMIT 1")
                    .c_str());
    RETURN_IF_ERROR(r.status());
    r.Bind(1, agent_id).Bind(2, static_cast<int64_t>(start.sequence)).BindBlob(3, start.hash);
    r.Bind(4, static_cast<int64_t>(start.own_from));
    if (r.Step() == SQLITE_ROW) state.resume = ReadResume(r).first;
    return state;
  }
  // The control plane holds records after the last one the agent's spool held, and they are not
  // this process's own: the spool lost them. Recorded once for this start.
  {
    Stmt r(db_, absl::StrCat("SELECT ", kResumeColumns,
                             " FROM chain_resumes WHERE agent_id = ?1 AND "
                             "resumed_after_sequence = ?2 AND resumed_after_hash = ?3 AND "
                             "held_through_sequence = ?4")
                    .c_str());
    RETURN_IF_ERROR(r.status());
    r.Bind(1, agent_id).Bind(2, static_cast<int64_t>(start.sequence)).BindBlob(3, start.hash);
    r.Bind(4, static_cast<int64_t>(held));
    if (r.Step() == SQLITE_ROW) {
      state.resume = ReadResume(r).first;
      r.Reset();
      if (state.head != start.hash) {
        Stmt up(db_, "UPDATE agents SET chain_head = ?2 WHERE id = ?1");
        up.Bind(1, agent_id).BindBlob(2, start.hash);
        RETURN_IF_ERROR(up.Run());
        RETURN_IF_ERROR(txn.Commit());
        state.head = start.hash;
      }
      return state;
    }
  }
  // Only on the stored chain: the stored record at the agent's head must have its hash.
  uint64_t after_in_chunk = 0;
  ASSIGN_OR_RETURN(std::optional<std::string> stored,
                   StoredHashAtLocked(agent_id, start.sequence, &after_in_chunk));
  if (!stored || *stored != start.hash) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent ", agent_id,
                     ": its audit chain is not on the chain the control plane holds: its spool "
                     "ended at sequence ",
                     start.sequence, " with chain hash ", HashPrefix(start.hash),
                     " when it started, and the control plane holds "
                     "its trail through sequence ",
                     held, ", where ",
                     stored ? absl::StrCat("the stored record at sequence ", start.sequence,
                                           " has chain hash ", HashPrefix(*stored))
                            : absl::StrCat("no stored record has sequence ", start.sequence),
                     "; its audit batches are refused (the agent keeps them, and refuses new "
                     "sessions once its buffers fill). "
                     "Its data directory may have been replaced or copied from another agent's, or "
                     "the control plane's store "
                     "restored from an older copy. To go on with a new chain: stop the agent and "
                     "move <data-dir>/spool aside "
                     "(keep it: it holds the events not stored yet); its next events start a new "
                     "chain, which `audit verify` "
                     "reports as a break"));
  }
  ChainResume resume;
  resume.agent_id = agent_id;
  resume.resumed_after_sequence = start.sequence;
  resume.resumed_after_hash = start.hash;
  resume.held_through_sequence = held;
  ASSIGN_OR_RETURN(std::optional<std::string> held_hash,
                   StoredHashAtLocked(agent_id, held, nullptr));
  resume.held_through_hash = held_hash.value_or("");
  {
    Stmt n(db_,
           "SELECT COALESCE(SUM(events), 0) FROM event_chunks WHERE agent_id = ?1 AND "
           "first_sequence > ?2");
    RETURN_IF_ERROR(n.status());
    n.Bind(1, agent_id).Bind(2, static_cast<int64_t>(start.sequence));
    resume.held_records =
        after_in_chunk + (n.Step() == SQLITE_ROW ? static_cast<uint64_t>(n.Int(0)) : 0);
  }
  resume.time_ms = now_ms;
  ASSIGN_OR_RETURN(std::string signature, signer_->Sign(ChainResumeMessage(resume)));
  Stmt put(db_, absl::StrCat("INSERT INTO chain_resumes(", kResumeColumns,
                             ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                    .c_str());
  put.Bind(1, agent_id)
      .Bind(2, static_cast<int64_t>(resume.resumed_after_sequence))
      .BindBlob(3, resume.resumed_after_hash);
  put.Bind(4, static_cast<int64_t>(resume.held_through_sequence))
      .BindBlob(5, resume.held_through_hash);
  put.Bind(6, static_cast<int64_t>(resume.held_records))
      .Bind(7, resume.time_ms)
      .BindBlob(8, signature);
  RETURN_IF_ERROR(put.Run());
  // Its next new event names the head its spool held (and is numbered above `held`: what is at or
  // below is dropped as resent).
  Stmt up(db_, "UPDATE agents SET chain_head = ?2 WHERE id = ?1");
  up.Bind(1, agent_id).BindBlob(2, start.hash);
  RETURN_IF_ERROR(up.Run());
  const std::string detail =
      absl::StrCat("the agent's spool ended at sequence ", resume.resumed_after_sequence,
                   " (chain hash ", HashPrefix(resume.resumed_after_hash),
                   ") and the control plane holds its trail through sequence ",
                   resume.held_through_sequence, ": the ", resume.held_records,
                   " record(s) after it were stored, then lost from "
                   "the agent's spool (a crash before they were durable there); its chain goes on "
                   "from sequence ",
                   resume.resumed_after_sequence);
  RETURN_IF_ERROR(AppendAuditLocked({0, now_ms, "agent:" + agent_id, "Audit.chain_resumed",
                                     "Agent/" + agent_id, "ok", detail})
                      .status());
  RETURN_IF_ERROR(txn.Commit());
  LogWarning("agent ", agent_id, ": audit chain resumed: ", detail);
  state.head = start.hash;
  state.resume = std::move(resume);
  state.resumed_now = true;
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
  Stmt q(db_,
         "SELECT file, offset, length FROM recording_blocks WHERE session_id = ?1 AND "
         "last_sequence > ?2 "
         "ORDER BY first_sequence");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, session_id).Bind(2, static_cast<int64_t>(after));
  std::map<uint64_t, std::string> out;
  while (q.Step() == SQLITE_ROW) {
    RecordingBlock block{static_cast<uint64_t>(q.Int(1)), static_cast<uint64_t>(q.Int(2))};
    ASSIGN_OR_RETURN(std::vector<RecordingSlice> slices, recordings_.Read(q.Text(0), block));
    for (RecordingSlice& slice : slices) {
      if (slice.sequence > after) out[slice.sequence] = std::move(slice.data);
    }
  }
  return out;
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
    ASSIGN_OR_RETURN(std::string records, ChunkRecords(ev.Text(2), ev.Int(0)));
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

namespace {

// A chunk's records with the purged sessions' events replaced by purged records (the hash each
// had, which covers its recording slice from `slices`), folded into the agent's tombstone `t`.
absl::StatusOr<std::string> PurgedChunk(
    int64_t chunk, const std::string& records, const absl::flat_hash_set<std::string>& purged,
    const std::string& tombstone_body,
    absl::flat_hash_map<std::string, std::map<uint64_t, std::string>>* slices, PurgeTombstone* t,
    v1::PurgeExpiredResponse* out) {
  std::string rewritten;
  rewritten.reserve(records.size());
  audit::RecordReader reader(records);
  while (!reader.done()) {
    size_t at = reader.offset();
    auto payload = reader.Next();
    v1::AuditEvent e;
    if (!payload.ok() || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
      return absl::DataLossError(absl::StrCat("retention cannot purge: stored events (chunk ",
                                              chunk, ", byte ", at,
                                              ") are damaged (run `sluicectl audit verify`)"));
    }
    if (!purged.contains(e.session_id()) || !e.purged_hash().empty()) {
      audit::AppendRecord(&rewritten, *payload);
      continue;
    }
    std::string whole(*payload);
    if (e.recording_bytes() > 0) {
      auto& mine = (*slices)[e.session_id()];
      auto slice = mine.find(e.sequence());
      if (slice == mine.end()) {
        return absl::DataLossError(absl::StrCat("retention cannot purge session ", e.session_id(),
                                                ": the recording of "
                                                "sequence ",
                                                e.sequence(),
                                                " is missing (run `sluicectl audit verify`)"));
      }
      whole = audit::JoinRecording(*payload, slice->second);
    }
    v1::AuditEvent tombstone;
    tombstone.set_sequence(e.sequence());
    tombstone.set_time_unix_ms(e.time_unix_ms());
    tombstone.set_type(std::string(audit::PurgedEvent::kType));
    tombstone.set_session_id(e.session_id());
    tombstone.set_prev_hash(e.prev_hash());
    tombstone.set_purged_hash(audit::ChainHash(whole));
    tombstone.set_json(tombstone_body);
    audit::AppendRecord(&rewritten, tombstone.SerializeAsString());
    out->set_events(out->events() + 1);
    if (t->events == 0) {
      t->digest = PurgeDigestStart();
      t->first_sequence = e.sequence();
    }
    ++t->events;
    t->last_sequence = e.sequence();
    PurgeDigestAdd(&t->digest, e.sequence(), tombstone.purged_hash());
  }
  return rewritten;
}

}  // namespace

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

  absl::flat_hash_set<std::string> purged(due.begin(), due.end());
  struct DueBlock {
    std::string session;
    std::string file;
    RecordingBlock block;
  };
  std::vector<DueBlock> blocks;  // the sessions' recording blocks, erased after the commit
  {
    Stmt f(db_,
           "SELECT file, offset, length FROM recording_blocks WHERE session_id = ?1 ORDER BY "
           "first_sequence");
    RETURN_IF_ERROR(f.status());
    for (const std::string& session : due) {
      f.Reset();
      f.Bind(1, session);
      while (f.Step() == SQLITE_ROW) {
        blocks.push_back(DueBlock{
            session, f.Text(0),
            RecordingBlock{static_cast<uint64_t>(f.Int(1)), static_cast<uint64_t>(f.Int(2))}});
        out.set_recording_bytes(out.recording_bytes() + static_cast<uint64_t>(f.Int(2)));
      }
    }
  }
  std::set<int64_t> chunks;
  {
    Stmt c(db_, "SELECT chunk_id FROM session_chunks WHERE session_id = ?1");
    RETURN_IF_ERROR(c.status());
    for (const std::string& session : due) {
      c.Reset();
      c.Bind(1, session);
      while (c.Step() == SQLITE_ROW) chunks.insert(c.Int(0));
    }
  }
  Stmt r(db_, "SELECT records, agent_id FROM event_chunks WHERE id = ?1");
  RETURN_IF_ERROR(r.status());
  if (req.dry_run) {
    // Count the events without changing anything.
    for (int64_t chunk : chunks) {
      r.Reset();
      r.Bind(1, chunk);
      if (r.Step() != SQLITE_ROW) continue;
      ASSIGN_OR_RETURN(std::string records, ChunkRecords(r.Text(0), chunk));
      ASSIGN_OR_RETURN(auto events,
                       audit::DecodeEvents(records, std::numeric_limits<size_t>::max()));
      for (const auto& e : events)
        out.set_events(out.events() + (purged.contains(e.session_id()) ? 1 : 0));
    }
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
  const std::string tombstone_body = audit::ToJson(audit::PurgedEvent{audit_id});
  // One signed tombstone per agent says which records this purge replaced (trail_anchor.h).
  // Chunks are visited by id: each agent's in sequence order, as verify folds them.
  std::map<std::string, PurgeTombstone> tombstones;
  for (int64_t chunk : chunks) {
    r.Reset();
    r.Bind(1, chunk);
    if (r.Step() != SQLITE_ROW) continue;
    ASSIGN_OR_RETURN(const std::string records, ChunkRecords(r.Text(0), chunk));
    const std::string chunk_agent = r.Text(1);
    ASSIGN_OR_RETURN(const std::string rewritten,
                     PurgedChunk(chunk, records, purged, tombstone_body, &slices,
                                 &tombstones[chunk_agent], &out));
    Stmt w(db_, "UPDATE event_chunks SET records = ?2 WHERE id = ?1");
    ASSIGN_OR_RETURN(absl::string_view compressed, StoredChunkLocked(rewritten));
    w.Bind(1, chunk).BindBlobNoCopy(2, compressed);
    RETURN_IF_ERROR(w.Run());
  }
  for (auto& [agent, t] : tombstones) {
    if (t.events == 0) continue;  // its chunks held no event of these sessions still unpurged
    t.audit_id = audit_id;
    t.agent_id = agent;
    t.time_ms = req.now_ms;
    ASSIGN_OR_RETURN(std::string signature, signer_->Sign(PurgeTombstoneMessage(t)));
    Stmt put(db_,
             "INSERT INTO purge_tombstones(agent_id, audit_id, time_ms, events, first_sequence, "
             "last_sequence, digest, "
             "signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    put.Bind(1, agent).Bind(2, audit_id).Bind(3, t.time_ms).Bind(4, static_cast<int64_t>(t.events));
    put.Bind(5, static_cast<int64_t>(t.first_sequence))
        .Bind(6, static_cast<int64_t>(t.last_sequence));
    put.BindBlob(7, t.digest).BindBlob(8, signature);
    RETURN_IF_ERROR(put.Run());
  }
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
  detail.Bind(1, audit_id).Bind(2, absl::StrCat(due.size(), " sessions"));
  detail.Bind(3, absl::StrCat("purged ", due.size(), " sessions (", out.events(),
                              " events kept in the chain as purged "
                              "records, ",
                              out.recording_bytes(), " recording bytes), ", out.held(),
                              " due sessions under legal hold kept; sessions: ",
                              absl::StrJoin(out.session_ids(), ",").substr(0, 4000)));
  RETURN_IF_ERROR(detail.Run());
  RETURN_IF_ERROR(txn.Commit());
  std::vector<std::pair<std::string, RecordingBlock>> erase;
  erase.reserve(blocks.size());
  for (const DueBlock& b : blocks) erase.emplace_back(b.file, b.block);
  EraseRecordingsLocked(std::move(erase));
  return out;
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

namespace {

std::string FormatMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

// Since when rows hold what migration `version` added to the session index: 0 (always) when the
// store was created with it, else when the store was upgraded to it (rows written before hold the
// columns' defaults). Sessions started before are not compared on those columns.
int64_t IndexedSinceMs(sqlite3* db, int version) {
  Stmt q(db,
         "SELECT (SELECT applied_ms FROM schema_migrations WHERE version = ?1), "
         "(SELECT applied_ms FROM schema_migrations WHERE version = 1)");
  q.Bind(1, static_cast<int64_t>(version));
  if (!q.status().ok() || q.Step() != SQLITE_ROW) return 0;
  const int64_t applied = q.Int(0), created = q.Int(1);
  // One run of Migrate applies every migration within moments; an upgrade comes a start later.
  return applied - created < 60000 ? 0 : applied;
}

// A trail head as stored, read back to be checked.
struct StoredHead {
  TrailHead head;
  std::string signature;
  AgentCheckpoint checkpoint;  // sequence 0: none kept
  bool seen = false;           // the agent has stored records
};

struct StoredTombstone {
  PurgeTombstone tombstone;
  std::string signature;
};

// What verify learns of one agent's trail while it reads it.
struct TrailPass {
  uint64_t records = 0;
  bool any = false;
  uint64_t first_sequence = 0;
  std::string first_hash;
  uint64_t last_sequence = 0;
  std::string last_hash;
  struct Fold {  // the purged records naming one purge
    uint64_t events = 0;
    uint64_t first = 0;
    uint64_t last = 0;
    std::string digest = PurgeDigestStart();
  };
  std::map<int64_t, Fold> purges;  // by the purge's audit record (0: none named)
  absl::flat_hash_map<std::string, DerivedSession> sessions;
};

// The audit record a purged record names ({"purged_by_audit_record": N}); 0 when none.
int64_t PurgedBy(const v1::AuditEvent& e) {
  return audit::PurgedEvent::Read(e.json()).purged_by_audit_record;
}

// The problems and notes of one verification.
class Findings {
 public:
  explicit Findings(v1::VerifyAuditResponse* out) : out_(out) {}
  void Problem(const std::string& what) {
    if (out_->problems() == 0) out_->set_first_problem(what);
    out_->set_problems(out_->problems() + 1);
    if (out_->problem_list_size() < 100) out_->add_problem_list(what);
  }
  void Note(const std::string& what) {
    if (out_->notes_size() < 100) out_->add_notes(what);
  }

 private:
  v1::VerifyAuditResponse* out_;
};

// Whether the index row of a session (the `sessions` columns read by CheckSessionIndex) says what
// its events say; the differences, named, or "".
std::string IndexDifferences(Stmt& row, const std::string& agent, const DerivedSession& d,
                             int64_t tags_since_ms, int64_t summaries_since_ms) {
  std::vector<std::string> diffs;
  auto text = [&diffs](const char* what, const std::string& index, const std::string& events) {
    if (index != events)
      diffs.push_back(absl::StrCat(what, " '", index, "' (the events: '", events, "')"));
  };
  auto number = [&diffs](const char* what, int64_t index, int64_t events) {
    if (index != events)
      diffs.push_back(absl::StrCat(what, " ", index, " (the events: ", events, ")"));
  };
  text("agent", row.Text(0), agent);
  text("connection", row.Text(1), d.summary.connection());
  text("identity", row.Text(2), d.summary.subject());
  text("issuer", row.Text(3), d.summary.issuer());
  number("started_ms", row.Int(5), d.summary.started_unix_ms());
  number("ended_ms", row.Int(6), d.ended_ms);
  text("outcome", row.Text(7), d.outcome);
  text("reason", row.Text(8), d.reason);
  number("statements", row.Int(9), static_cast<int64_t>(d.statements));
  number("errors", row.Int(10), static_cast<int64_t>(d.errors));
  // Rows written before a column existed hold its default: compared only when written since.
  if (d.summary.started_unix_ms() >= tags_since_ms) {
    text("decisions", row.Text(11), TagList(d.tags.decisions));
    text("rules", row.Text(12), TagList(d.tags.rules));
    text("attribution", row.Text(13), AttributionJson(d.summary));
  }
  if (d.summary.started_unix_ms() >= summaries_since_ms) {
    v1::SessionSummary stored;
    if (!stored.ParseFromString(row.Text(4)) ||
        !google::protobuf::util::MessageDifferencer::Equals(stored, d.summary)) {
      diffs.push_back(
          "summary (identity, groups, client, access, rule, TLS) does not match the session's "
          "start event");
    }
  }
  return absl::StrJoin(diffs, "; ");
}

}  // namespace

absl::StatusOr<v1::VerifyAuditResponse> SqliteStore::VerifyAudit(const v1::VerifyAuditRequest& req,
                                                                 const EventVisitor& visit) {
  absl::MutexLock lock(&mu_);
  v1::VerifyAuditResponse out;
  out.set_trail_key(HexEncode(signer_->public_key()));
  Findings findings(&out);
  auto problem = [&findings](const std::string& what) { findings.Problem(what); };
  absl::flat_hash_map<std::string, std::string> keys;
  {
    Stmt k(db_, "SELECT id, audit_public_key FROM agents");
    RETURN_IF_ERROR(k.status());
    while (k.Step() == SQLITE_ROW) keys[k.Text(0)] = k.Text(1);
  }
  // What proves the trails complete (trail_anchor.h): small tables, read whole.
  std::map<std::string, StoredHead> heads;
  {
    Stmt h(db_,
           "SELECT agent_id, genesis_sequence, genesis_hash, last_sequence, last_hash, records, "
           "origin, anchored_through, "
           "time_ms, signature, checkpoint_sequence, checkpoint_hash, checkpoint_signature FROM "
           "trail_heads");
    RETURN_IF_ERROR(h.status());
    while (h.Step() == SQLITE_ROW) {
      StoredHead& sh = heads[h.Text(0)];
      sh.head = TrailHead{h.Text(0),
                          static_cast<uint64_t>(h.Int(1)),
                          h.Text(2),
                          static_cast<uint64_t>(h.Int(3)),
                          h.Text(4),
                          static_cast<uint64_t>(h.Int(5)),
                          static_cast<TrailOrigin>(h.Int(6)),
                          static_cast<uint64_t>(h.Int(7)),
                          h.Int(8)};
      sh.signature = h.Text(9);
      sh.checkpoint = AgentCheckpoint{static_cast<uint64_t>(h.Int(10)), h.Text(11), h.Text(12)};
    }
  }
  std::map<std::string, std::map<int64_t, StoredTombstone>>
      tombstones;  // by agent, by audit record
  {
    Stmt t(db_,
           "SELECT agent_id, audit_id, time_ms, events, first_sequence, last_sequence, digest, "
           "signature "
           "FROM purge_tombstones");
    RETURN_IF_ERROR(t.status());
    while (t.Step() == SQLITE_ROW) {
      tombstones[t.Text(0)][t.Int(1)] = StoredTombstone{
          PurgeTombstone{t.Int(1), t.Text(0), t.Int(2), static_cast<uint64_t>(t.Int(3)),
                         static_cast<uint64_t>(t.Int(4)), static_cast<uint64_t>(t.Int(5)),
                         t.Text(6)},
          t.Text(7)};
    }
  }
  // Chain resumes (an agent whose spool lost its tail went on from an older record), by agent.
  struct StoredResume {
    ChainResume resume;
    std::string signature;
    bool used = false;  // a stored record goes on from it
  };
  std::map<std::string, std::vector<StoredResume>> resumes;
  {
    Stmt r(db_, absl::StrCat("SELECT ", kResumeColumns,
                             " FROM chain_resumes ORDER BY agent_id, held_through_sequence")
                    .c_str());
    RETURN_IF_ERROR(r.status());
    while (r.Step() == SQLITE_ROW) {
      auto [resume, signature] = ReadResume(r);
      resumes[resume.agent_id].push_back(StoredResume{std::move(resume), std::move(signature)});
    }
  }
  std::optional<std::pair<TrailTotals, std::string>> totals;
  {
    Stmt t(db_, "SELECT agents, origin, time_ms, signature FROM trail_totals WHERE id = 1");
    RETURN_IF_ERROR(t.status());
    if (t.Step() == SQLITE_ROW) {
      totals.emplace(TrailTotals{static_cast<uint64_t>(t.Int(0)),
                                 static_cast<TrailOrigin>(t.Int(1)), t.Int(2)},
                     t.Text(3));
    }
  }
  const int64_t tags_since_ms = IndexedSinceMs(db_, 9);
  const int64_t summaries_since_ms = IndexedSinceMs(db_, kTrailAnchorMigration);

  Stmt s(db_, "SELECT id, agent_id, records FROM event_chunks ORDER BY agent_id, id");
  RETURN_IF_ERROR(s.status());
  absl::flat_hash_map<uint64_t, std::string> hashes;  // the agent's records: sequence -> hash
  // By session, the slices not yet used (read once per session: a session whose recording cannot
  // be read is reported once, and each of its slices as missing).
  absl::flat_hash_map<std::string, std::map<uint64_t, std::string>> recordings;
  std::string agent;
  std::string head;       // hash of the agent's previous record
  uint64_t previous = 0;  // its sequence
  TrailPass pass;
  // Sessions whose events account for their index row (64-bit hashes of their ids: a large store
  // has millions).
  absl::flat_hash_set<size_t> indexed;
  const absl::Hash<std::string> id_hash;
  auto in_window = [&req](int64_t t) {
    return (req.from_unix_ms() == 0 || t >= req.from_unix_ms()) &&
           (req.until_unix_ms() == 0 || t < req.until_unix_ms());
  };

  // The end of one agent's trail: is it complete (its signed head, checkpoint and tombstones), and
  // does the session index say what its events say?
  Stmt row(db_,
           "SELECT agent_id, connection, subject, issuer, summary, started_ms, ended_ms, outcome, "
           "reason, statements, "
           "errors, decisions, rules, attribution FROM sessions WHERE session_id = ?1");
  RETURN_IF_ERROR(row.status());
  Stmt links(db_, "SELECT chunk_id FROM session_chunks WHERE session_id = ?1");
  RETURN_IF_ERROR(links.status());
  auto finish = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (agent.empty()) return;
    const std::string who = absl::StrCat("agent ", agent, ": ");
    auto found = heads.find(agent);
    const StoredHead* sh = found == heads.end() ? nullptr : &found->second;
    if (sh != nullptr) found->second.seen = true;
    const bool head_valid =
        sh != nullptr && signer_->Verify(TrailHeadMessage(sh->head), sh->signature);
    if (sh == nullptr) {
      problem(absl::StrCat(who, pass.records, " record(s) are stored (sequences ",
                           pass.first_sequence, " to ", pass.last_sequence,
                           ") and its signed trail head is missing (it was removed): neither the "
                           "start nor the end of its trail can be proven"));
    } else if (!head_valid) {
      problem(absl::StrCat(
          who,
          "its trail head does not carry a valid signature of this control plane's trail key "
          "(it was changed)"));
    } else {
      const TrailHead& h = sh->head;
      bool complete = true;
      if (h.origin == TrailOrigin::kLost) {
        complete = false;
        problem(absl::StrCat(
            who,
            "its signed trail head was missing (removed) when the control plane stored records "
            "after sequence ",
            h.anchored_through,
            ": the trail through that sequence is not proven "
            "complete"));
      } else if (h.origin == TrailOrigin::kUpgrade) {
        findings.Note(
            absl::StrCat(who,
                         "its trail was stored before this control plane anchored trails; it was "
                         "anchored as found at the upgrade (sequences ",
                         h.genesis_sequence, " to ", h.anchored_through,
                         "), and is proven complete from there on"));
      }
      if (!pass.any) {
        complete = false;
        problem(absl::StrCat(who, "none of its stored records can be read; its signed head names ",
                             h.records, " record(s), sequences ", h.genesis_sequence, " to ",
                             h.last_sequence));
      } else {
        const bool start_differs =
            h.origin != TrailOrigin::kLost && pass.first_sequence != h.genesis_sequence;
        if (start_differs) {
          complete = false;
          problem(
              pass.first_sequence > h.genesis_sequence
                  ? absl::StrCat(
                        who, "the start of its trail is missing: its signed genesis is sequence ",
                        h.genesis_sequence, ", and the oldest stored record is sequence ",
                        pass.first_sequence, ": the records from sequence ", h.genesis_sequence,
                        " up to it were removed")
                  : absl::StrCat(who, "records before its signed genesis (sequence ",
                                 h.genesis_sequence, ") are stored, from sequence ",
                                 pass.first_sequence, ": the control plane did not store them"));
        } else if (h.origin != TrailOrigin::kLost && !h.genesis_hash.empty() &&
                   pass.first_hash != h.genesis_hash) {
          complete = false;
          problem(absl::StrCat(who, "the oldest stored record (sequence ", pass.first_sequence,
                               ") is not its signed genesis: its hash differs (it was replaced)"));
        }
        if (pass.last_sequence != h.last_sequence ||
            (pass.records != h.records && !start_differs)) {
          complete = false;
          if (pass.last_sequence < h.last_sequence) {
            problem(absl::StrCat(
                who, "the end of its trail is missing: its signed head (", FormatMs(h.time_ms),
                ") ends at sequence ", h.last_sequence, " with ", h.records,
                " record(s), and the newest stored record is sequence ", pass.last_sequence,
                " with ", pass.records, " record(s) stored: the records after sequence ",
                pass.last_sequence, " through ", h.last_sequence, " were removed"));
          } else if (pass.last_sequence > h.last_sequence) {
            problem(absl::StrCat(who, "records after its signed head (sequence ", h.last_sequence,
                                 ") are stored, up to sequence ", pass.last_sequence,
                                 ": the control plane did not store them"));
          } else {
            problem(absl::StrCat(
                who, pass.records, " record(s) are stored and its signed head counts ", h.records,
                ": ", pass.records < h.records ? "records were removed" : "records were added",
                " between sequences ", h.genesis_sequence, " and ", h.last_sequence));
          }
        } else if (!h.last_hash.empty() && pass.last_hash != h.last_hash) {
          complete = false;
          problem(absl::StrCat(who, "the newest stored record (sequence ", pass.last_sequence,
                               ") no longer has the hash its signed head names (it was changed)"));
        }
      }
      if (complete) out.set_anchored_agents(out.anchored_agents() + 1);
    }
    // The agent's latest checkpoint, kept with the head: signed with the agent's own key, so it
    // holds even against someone who could sign heads.
    if (sh != nullptr && sh->checkpoint.sequence != 0) {
      const std::string& key = keys[agent];
      auto claimed = hashes.find(sh->checkpoint.sequence);
      if (key.empty() || !SignatureValid(key, sh->checkpoint)) {
        problem(absl::StrCat(
            who,
            "the latest checkpoint kept with its trail head does not carry a valid signature "
            "of the agent's key"));
      } else if (claimed == hashes.end() || claimed->second != sh->checkpoint.hash) {
        problem(absl::StrCat(
            who, "its latest signed checkpoint (kept with its trail head) covers sequence ",
            sh->checkpoint.sequence, ", and the stored record ",
            claimed == hashes.end()
                ? absl::StrCat("is missing (the newest stored record is sequence ",
                               pass.last_sequence, ")")
                : std::string("no longer has that hash (it was changed)")));
      }
    }
    // Purged records: each purge's must be exactly what its signed tombstone says.
    auto& mine = tombstones[agent];
    uint64_t legacy = 0;
    for (const auto& [audit_id, fold] : pass.purges) {
      auto t = mine.find(audit_id);
      if (t == mine.end()) {
        if (head_valid && sh->head.origin == TrailOrigin::kUpgrade &&
            fold.last <= sh->head.anchored_through) {
          legacy += fold.events;  // purged before tombstones existed: taken as found with the trail
          continue;
        }
        problem(absl::StrCat(
            who, fold.events, " purged record(s) (sequences ", fold.first, " to ", fold.last,
            ") name ", audit_id == 0 ? std::string("no purge") : absl::StrCat("purge ", audit_id),
            ", and no signed tombstone of it exists: retention did not purge them (their content "
            "was removed)"));
        continue;
      }
      const PurgeTombstone& signed_one = t->second.tombstone;
      if (!signer_->Verify(PurgeTombstoneMessage(signed_one), t->second.signature)) {
        problem(absl::StrCat(who, "the tombstone of purge ", audit_id,
                             " does not carry a valid signature of this "
                             "control plane's trail key (it was changed)"));
      } else if (signed_one.events != fold.events || signed_one.first_sequence != fold.first ||
                 signed_one.last_sequence != fold.last || signed_one.digest != fold.digest) {
        problem(absl::StrCat(
            who, "the purged records naming purge ", audit_id, " (", fold.events, ", sequences ",
            fold.first, " to ", fold.last, ") are not those its signed tombstone names (",
            signed_one.events, ", sequences ", signed_one.first_sequence, " to ",
            signed_one.last_sequence, "): purged records were added, removed or changed"));
      } else {
        out.set_tombstones(out.tombstones() + 1);
      }
    }
    for (const auto& [audit_id, t] : mine) {
      if (pass.purges.contains(audit_id)) continue;
      problem(absl::StrCat(who, "the signed tombstone of purge ", audit_id, " names ",
                           t.tombstone.events, " purged record(s) (sequences ",
                           t.tombstone.first_sequence, " to ", t.tombstone.last_sequence,
                           "), and none is stored: they were removed"));
    }
    if (legacy > 0) {
      findings.Note(absl::StrCat(who, legacy,
                                 " purged record(s) from purges before trails were anchored (no "
                                 "tombstone) are taken as found"));
    }
    // Resumes no stored record goes on from (yet): the agent has sent nothing since, or lost its
    // spool again and went on from another record. Nothing of the chain rests on them.
    for (const StoredResume& r : resumes[agent]) {
      if (r.used) continue;
      if (!signer_->Verify(ChainResumeMessage(r.resume), r.signature)) {
        problem(absl::StrCat(who, "the chain resume recorded after sequence ",
                             r.resume.resumed_after_sequence,
                             " does not carry a valid signature of this control plane's trail key "
                             "(it was changed)"));
        continue;
      }
      findings.Note(absl::StrCat(
          who, "its spool lost its tail: its chain resumes after sequence ",
          r.resume.resumed_after_sequence, " (recorded ", FormatMs(r.resume.time_ms),
          ", the control plane holding it through sequence ", r.resume.held_through_sequence,
          "), and no stored record goes on from there yet"));
    }
    // The session index, derived again from the events.
    for (const auto& [session, d] : pass.sessions) {
      row.Reset();
      row.Bind(1, session);
      const bool has_row = row.Step() == SQLITE_ROW;
      if (d.purged) {
        if (has_row) indexed.insert(id_hash(session));  // named here, not again as unaccounted for
        if (has_row && in_window(row.Int(5))) {
          problem(absl::StrCat("session ", session, " (agent ", agent,
                               "): the session index holds it, and "
                               "retention purged it (its events are purged records)"));
        }
        continue;
      }
      if (!d.started) continue;  // no start event: ingest indexed nothing
      indexed.insert(id_hash(session));
      out.set_sessions_checked(out.sessions_checked() + 1);
      if (!in_window(d.summary.started_unix_ms())) continue;
      const std::string named = absl::StrCat(
          "session ", session, " (agent ", agent, ", connection ", d.summary.connection(),
          ", identity ", d.summary.subject().empty() ? "-" : d.summary.subject(), ", started ",
          FormatMs(d.summary.started_unix_ms()), ")");
      if (!has_row) {
        problem(absl::StrCat(
            named,
            ": its row in the session index is missing (`sessions list` and `sessions show` "
            "do not show it)"));
        continue;
      }
      if (std::string diffs = IndexDifferences(row, agent, d, tags_since_ms, summaries_since_ms);
          !diffs.empty()) {
        problem(
            absl::StrCat(named, ": its row in the session index differs from its events: ", diffs));
      }
      links.Reset();
      links.Bind(1, session);
      std::set<int64_t> linked;
      while (links.Step() == SQLITE_ROW) linked.insert(links.Int(0));
      std::vector<int64_t> unlinked;
      for (int64_t chunk : d.chunks) {
        if (!linked.contains(chunk)) unlinked.push_back(chunk);
      }
      if (!unlinked.empty()) {
        problem(absl::StrCat(named, ": the session index does not link it to chunk(s) ",
                             absl::StrJoin(unlinked, ", "),
                             " that hold its events (`sessions show` leaves them out)"));
      }
    }
  };

  while (s.Step() == SQLITE_ROW) {
    int64_t chunk = s.Int(0);
    std::string chunk_agent = s.Text(1);
    auto records = ChunkRecords(s.Text(2), chunk);
    if (chunk_agent != agent) {
      finish();
      agent = chunk_agent;
      head.clear();
      previous = 0;
      hashes.clear();
      pass = TrailPass();
      out.set_agents(out.agents() + 1);
    }
    if (!records.ok()) {
      problem(absl::StrCat("agent ", agent, ": ", records.status().message()));
      continue;  // the chain names the gap at the next chunk
    }
    audit::RecordReader reader(*records);
    while (!reader.done()) {
      size_t offset = reader.offset();
      auto payload = reader.Next();
      v1::AuditEvent e;
      if (!payload.ok() || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
        problem(
            absl::StrCat("agent ", agent, ": the record after sequence ", previous, " (chunk ",
                         chunk, ", byte ", offset, ") is damaged: ",
                         payload.ok() ? "it is not an audit event" : payload.status().message()));
        break;  // the rest of the chunk cannot be framed
      }
      out.set_records(out.records() + 1);
      // An event stored without its recording is hashed with it: the slice comes back from the
      // session's recording file (read once per session, each slice used once).
      std::string joined;
      absl::string_view whole = *payload;
      if (!e.purged_hash().empty()) {
        out.set_purged(out.purged() + 1);
        TrailPass::Fold& fold = pass.purges[PurgedBy(e)];
        if (fold.events++ == 0) fold.first = e.sequence();
        fold.last = e.sequence();
        PurgeDigestAdd(&fold.digest, e.sequence(), e.purged_hash());
      } else if (e.recording_bytes() > 0) {
        auto loaded = recordings.find(e.session_id());
        if (loaded == recordings.end()) {
          auto read = ReadRecordingsLocked(e.session_id(), 0);
          if (!read.ok()) {
            problem(absl::StrCat("agent ", agent, ": the recording of session ", e.session_id(),
                                 " (sequence ", e.sequence(),
                                 ") cannot be read: ", read.status().message()));
          }
          loaded = recordings
                       .emplace(e.session_id(),
                                read.ok() ? std::move(*read) : std::map<uint64_t, std::string>())
                       .first;
        }
        auto slice = loaded->second.find(e.sequence());
        if (slice != loaded->second.end() && slice->second.size() == e.recording_bytes()) {
          joined = audit::JoinRecording(*payload, slice->second);
          whole = joined;
          loaded->second.erase(slice);
          out.set_recording_slices(out.recording_slices() + 1);
        } else {
          problem(absl::StrCat("agent ", agent, ": the recording slice of sequence ", e.sequence(),
                               " (session ", e.session_id(),
                               ") is missing from its recording file"));
        }
      }
      bool linked = head.empty() || e.prev_hash() == head;
      if (!linked) {
        // An agent whose spool lost its tail goes on from an older record of its own: accepted
        // only under a signed resume naming exactly this place (after the record before it, from
        // the stored record whose hash this one names).
        for (StoredResume& r : resumes[agent]) {
          const ChainResume& x = r.resume;
          if (r.used || x.held_through_sequence != previous || x.held_through_hash != head ||
              x.resumed_after_hash != e.prev_hash() || e.sequence() <= previous) {
            continue;
          }
          auto from = hashes.find(x.resumed_after_sequence);
          if (from == hashes.end() || from->second != x.resumed_after_hash) continue;
          if (!signer_->Verify(ChainResumeMessage(x), r.signature)) {
            problem(absl::StrCat("agent ", agent, ": the chain resume recorded after sequence ",
                                 x.resumed_after_sequence, " (where sequence ", e.sequence(),
                                 " goes on from) does not "
                                 "carry a valid signature of this control plane's trail key (it "
                                 "was changed or added)"));
            break;
          }
          r.used = true;
          linked = true;
          out.set_chain_resumes(out.chain_resumes() + 1);
          findings.Note(absl::StrCat(
              "agent ", agent, ": its chain resumed after sequence ", x.resumed_after_sequence,
              ": its spool lost the "
              "records after it (a crash before they were durable there), and the control plane "
              "holds the records "
              "after it through sequence ",
              x.held_through_sequence, " (", x.held_records, " record(s)); sequence ", e.sequence(),
              " goes on from sequence ", x.resumed_after_sequence, " (resume recorded ",
              FormatMs(x.time_ms), ")"));
          break;
        }
      }
      if (!linked && in_window(e.time_unix_ms())) {
        problem(absl::StrCat(
            "agent ", agent, ": the chain breaks at sequence ", e.sequence(), " (chunk ", chunk,
            "): ",
            e.prev_hash().empty() ? "it starts a new chain (no prev_hash) after sequence "
                                  : "its prev_hash does not match the record before it (sequence ",
            previous,
            e.prev_hash().empty()
                ? ""
                : "); that record was changed, or records between them are missing"));
      }
      head = e.purged_hash().empty() ? audit::ChainHash(whole) : e.purged_hash();
      previous = e.sequence();
      hashes[e.sequence()] = head;
      ++pass.records;
      if (!pass.any) {
        pass.any = true;
        pass.first_sequence = e.sequence();
        pass.first_hash = head;
      }
      pass.last_sequence = e.sequence();
      pass.last_hash = head;
      if (!e.session_id().empty()) DeriveSession(agent, e, chunk, &pass.sessions[e.session_id()]);
      if (auto c = ParseCheckpoint(e)) {
        const std::string& key = keys[agent];
        auto claimed = hashes.find(c->sequence);
        if (key.empty() || !SignatureValid(key, *c)) {
          problem(absl::StrCat("agent ", agent, ": the checkpoint at sequence ", e.sequence(),
                               " (chunk ", chunk, ") ",
                               key.empty()
                                   ? "cannot be checked: the agent has no registered key"
                                   : "does not carry a valid signature of the agent's key"));
        } else if (claimed == hashes.end() || claimed->second != c->hash) {
          problem(absl::StrCat(
              "agent ", agent, ": the checkpoint at sequence ", e.sequence(),
              " signed the hash of sequence ", c->sequence, ", and the stored record ",
              claimed == hashes.end() ? "is missing" : "no longer has that hash (it was changed)"));
        } else {
          out.set_checkpoints(out.checkpoints() + 1);
          out.set_signed_through(std::max<uint64_t>(out.signed_through(), c->sequence));
        }
      }
      if (visit) visit(agent, e, linked);
    }
  }
  finish();

  // Trails removed whole: a head whose agent has nothing stored, and the totals.
  for (const auto& [id, sh] : heads) {
    if (sh.seen) continue;
    if (!signer_->Verify(TrailHeadMessage(sh.head), sh.signature)) {
      problem(
          absl::StrCat("agent ", id,
                       ": its trail head does not carry a valid signature of this control plane's "
                       "trail key (it was changed)"));
      continue;
    }
    problem(absl::StrCat("agent ", id, ": its signed trail head (", FormatMs(sh.head.time_ms),
                         ") names ", sh.head.records, " record(s), sequences ",
                         sh.head.genesis_sequence, " to ", sh.head.last_sequence,
                         ", and none is stored: its whole trail was removed"));
  }
  if (!totals) {
    if (!heads.empty() || out.records() > 0) {
      problem(
          "the signed totals of the trails are missing (they were removed): a trail removed whole, "
          "with its "
          "head, would not show");
    }
  } else if (!signer_->Verify(TrailTotalsMessage(totals->first), totals->second)) {
    problem(
        "the totals of the trails do not carry a valid signature of this control plane's trail key "
        "(they were "
        "changed)");
  } else {
    const TrailTotals& t = totals->first;
    if (t.origin == TrailOrigin::kLost) {
      problem(
          "the signed totals of the trails were missing (removed) when records were stored, and "
          "were counted "
          "again from the trail heads then: a trail removed whole before then would not show");
    }
    if (t.agents != heads.size()) {
      problem(absl::StrCat(
          "the signed totals (", FormatMs(t.time_ms), ") count ", t.agents,
          " trail(s), and the store holds ", heads.size(), " trail head(s): ",
          t.agents > heads.size()
              ? "trail heads were removed (a trail removed whole, with its head, shows only here)"
              : "trail heads were added"));
    }
  }
  // Index rows that no stored event accounts for.
  {
    Stmt all(db_, "SELECT session_id, agent_id, started_ms FROM sessions");
    RETURN_IF_ERROR(all.status());
    while (all.Step() == SQLITE_ROW) {
      std::string session = all.Text(0);
      if (indexed.contains(id_hash(session)) || !in_window(all.Int(2))) continue;
      problem(absl::StrCat(
          "session ", session, " (agent ", all.Text(1), ", started ", FormatMs(all.Int(2)),
          "): the session index holds it, and no stored event starts it (the row was added, or its "
          "events were removed)"));
    }
  }
  out.set_ok(out.problems() == 0);
  return out;
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
