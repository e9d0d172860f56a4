#include "controlplane/store/sqlite_trail_rows.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/store/migrations.h"

namespace sluice::controlplane {
namespace {

// A stored chunk holds the records of one batch (at most 32 MiB): inflating one is capped at
// twice that.
constexpr uint64_t kMaxChunkBytes = 64 << 20;

constexpr char kResumeColumns[] =
    "agent_id, resumed_after_sequence, resumed_after_hash, held_through_sequence, "
    "held_through_hash, held_records, time_ms, signature";

// A chain_resumes row (kResumeColumns) and its signature.
StoredResume ReadResume(Stmt& r) {
  StoredResume out;
  ChainResume& x = out.resume;
  x.agent_id = r.Text(0);
  x.resumed_after_sequence = static_cast<uint64_t>(r.Int(1));
  x.resumed_after_hash = r.Text(2);
  x.held_through_sequence = static_cast<uint64_t>(r.Int(3));
  x.held_through_hash = r.Text(4);
  x.held_records = static_cast<uint64_t>(r.Int(5));
  x.time_ms = r.Int(6);
  out.signature = r.Text(7);
  return out;
}

constexpr char kHeadColumns[] =
    "SELECT agent_id, genesis_sequence, genesis_hash, last_sequence, last_hash, records, origin, "
    "anchored_through, time_ms, signature, checkpoint_sequence, checkpoint_hash, "
    "checkpoint_signature FROM trail_heads";

StoredTrailHead ReadHead(Stmt& h) {
  StoredTrailHead out;
  out.head = TrailHead{h.Text(0),
                       static_cast<uint64_t>(h.Int(1)),
                       h.Text(2),
                       static_cast<uint64_t>(h.Int(3)),
                       h.Text(4),
                       static_cast<uint64_t>(h.Int(5)),
                       static_cast<TrailOrigin>(h.Int(6)),
                       static_cast<uint64_t>(h.Int(7)),
                       h.Int(8)};
  out.signature = h.Text(9);
  out.checkpoint = AgentCheckpoint{static_cast<uint64_t>(h.Int(10)), h.Text(11), h.Text(12)};
  return out;
}

// Since when rows hold what migration `version` added to the session index: 0 (always) when the
// store was created with it, else when the store was upgraded to it.
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

}  // namespace

absl::StatusOr<std::string> StoredChunkRecords(std::string stored, int64_t chunk) {
  if (!IsZstdFrame(stored)) return stored;
  auto records = ZstdInflate(stored, kMaxChunkBytes);
  if (!records.ok()) {
    return absl::DataLossError(absl::StrCat("stored events (chunk ", chunk,
                                            ") are damaged: ", records.status().message()));
  }
  return records;
}

absl::StatusOr<AgentChainRow> SqliteTrailRows::AgentChain(const std::string& agent_id) {
  Stmt q(db_, statements_,
         "SELECT events_committed, chain_head, audit_public_key FROM agents WHERE id = ?1");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, agent_id);
  if (q.Step() != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' is not enrolled"));
  }
  return AgentChainRow{static_cast<uint64_t>(q.Int(0)), q.Text(1), q.Text(2)};
}

absl::Status SqliteTrailRows::SetAgentChain(const std::string& agent_id,
                                            std::optional<uint64_t> committed,
                                            const std::string& head) {
  if (!committed) {
    Stmt up(db_, "UPDATE agents SET chain_head = ?2 WHERE id = ?1");
    up.Bind(1, agent_id).BindBlob(2, head);
    return up.Run();
  }
  Stmt mark(db_, statements_,
            "UPDATE agents SET events_committed = ?2, chain_head = ?3 WHERE id = ?1");
  mark.Bind(1, agent_id).Bind(2, static_cast<int64_t>(*committed)).BindBlob(3, head);
  return mark.Run();
}

absl::StatusOr<absl::string_view> SqliteTrailRows::StoredChunk(absl::string_view records) {
  chunk_buffer_.clear();
  RETURN_IF_ERROR(chunk_zstd_.AppendFrame(records, &chunk_buffer_));
  return absl::string_view(chunk_buffer_);
}

absl::StatusOr<int64_t> SqliteTrailRows::PutChunk(const std::string& agent_id,
                                                  const ChunkSpan& span,
                                                  absl::string_view records) {
  ASSIGN_OR_RETURN(absl::string_view stored, StoredChunk(records));
  Stmt put(db_, statements_,
           "INSERT INTO event_chunks(agent_id, first_sequence, last_sequence, first_time_ms, "
           "last_time_ms, events, records) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  put.Bind(1, agent_id).Bind(2, static_cast<int64_t>(span.first_sequence));
  put.Bind(3, static_cast<int64_t>(span.last_sequence)).Bind(4, span.first_time_ms);
  put.Bind(5, span.last_time_ms).Bind(6, static_cast<int64_t>(span.events));
  put.BindBlobNoCopy(7, stored);
  RETURN_IF_ERROR(put.Run());
  return sqlite3_last_insert_rowid(db_);
}

absl::Status SqliteTrailRows::PutRecordings(
    const std::string& agent_id, const std::map<std::string, std::vector<RecordingSlice>>& slices) {
  if (slices.empty()) return absl::OkStatus();
  Stmt index(db_, statements_,
             "INSERT OR REPLACE INTO recording_blocks(session_id, agent_id, first_sequence, "
             "last_sequence, file, offset, length) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
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

absl::Status SqliteTrailRows::PutSessionChange(const std::string& agent_id,
                                               const SessionIndexBatch::Change& c) {
  using Kind = SessionIndexBatch::Change::Kind;
  if (c.kind == Kind::kEnd) {
    Stmt up(db_, statements_,
            "UPDATE sessions SET ended_ms = ?2, outcome = 'closed', reason = ?3 WHERE "
            "session_id = ?1");
    up.Bind(1, c.session_id).Bind(2, c.time_ms).Bind(3, c.reason);
    return up.Run();
  }
  const bool refused = c.kind == Kind::kRefused;
  std::string bytes;
  c.summary.SerializeToString(&bytes);
  Stmt up(db_, statements_,
          "INSERT OR IGNORE INTO sessions(session_id, agent_id, connection, subject, issuer, "
          "summary, started_ms, ended_ms, outcome, reason, attribution) VALUES (?1, ?2, ?3, ?4, "
          "?5, ?6, ?7, ?8, ?9, ?10, ?11)");
  up.Bind(1, c.session_id)
      .Bind(2, agent_id)
      .Bind(3, c.summary.connection())
      .Bind(4, c.summary.subject());
  up.Bind(5, c.summary.issuer()).BindBlob(6, bytes).Bind(7, c.time_ms);
  up.Bind(8, refused ? c.time_ms : 0).Bind(9, std::string(refused ? "refused" : "open"));
  up.Bind(10, refused ? c.reason : std::string());
  up.Bind(11, AttributionJson(c.summary));
  return up.Run();
}

absl::Status SqliteTrailRows::PutSessionIndex(const std::string& agent_id,
                                              const SessionIndexBatch& batch, int64_t chunk) {
  for (const SessionIndexBatch::Change& c : batch.changes) {
    RETURN_IF_ERROR(PutSessionChange(agent_id, c));
  }
  for (const auto& [session, t] : batch.tags) {
    Stmt q(db_, statements_, "SELECT decisions, rules FROM sessions WHERE session_id = ?1");
    RETURN_IF_ERROR(q.status());
    q.Bind(1, session);
    if (q.Step() != SQLITE_ROW) continue;
    Stmt up(db_, statements_,
            "UPDATE sessions SET decisions = ?2, rules = ?3 WHERE session_id = ?1");
    up.Bind(1, session)
        .Bind(2, MergeTagList(q.Text(0), t.decisions))
        .Bind(3, MergeTagList(q.Text(1), t.rules));
    RETURN_IF_ERROR(up.Run());
  }
  // Statement counters are summed per session and written once per batch.
  Stmt up(db_, statements_,
          "UPDATE sessions SET statements = statements + ?2, errors = errors + ?3 WHERE "
          "session_id = ?1");
  RETURN_IF_ERROR(up.status());
  for (const auto& [session, c] : batch.counts) {
    up.Reset();
    up.Bind(1, session).Bind(2, c.statements).Bind(3, c.errors);
    RETURN_IF_ERROR(up.Run());
  }
  Stmt link(db_, statements_,
            "INSERT OR IGNORE INTO session_chunks(session_id, chunk_id) VALUES (?1, ?2)");
  RETURN_IF_ERROR(link.status());
  for (const auto& session : batch.sessions) {
    link.Reset();
    link.Bind(1, session).Bind(2, chunk);
    RETURN_IF_ERROR(link.Run());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<TrailStorage::Chunk>> SqliteTrailRows::ChunkHolding(
    const std::string& agent_id, uint64_t sequence) {
  Stmt q(db_,
         "SELECT id, first_sequence, records FROM event_chunks WHERE agent_id = ?1 AND "
         "last_sequence >= ?2 ORDER BY last_sequence LIMIT 1");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, agent_id).Bind(2, static_cast<int64_t>(sequence));
  if (q.Step() != SQLITE_ROW) return std::nullopt;
  Chunk c;
  c.id = q.Int(0);
  c.first_sequence = static_cast<uint64_t>(q.Int(1));
  if (c.first_sequence > sequence) return c;  // no stored record has that sequence
  ASSIGN_OR_RETURN(c.records, StoredChunkRecords(q.Text(2), c.id));
  return c;
}

absl::StatusOr<uint64_t> SqliteTrailRows::RecordsInChunksAfter(const std::string& agent_id,
                                                               uint64_t sequence) {
  Stmt n(db_,
         "SELECT COALESCE(SUM(events), 0) FROM event_chunks WHERE agent_id = ?1 AND "
         "first_sequence > ?2");
  RETURN_IF_ERROR(n.status());
  n.Bind(1, agent_id).Bind(2, static_cast<int64_t>(sequence));
  return n.Step() == SQLITE_ROW ? static_cast<uint64_t>(n.Int(0)) : 0;
}

absl::StatusOr<std::optional<ChainResume>> SqliteTrailRows::FindResume(const std::string& agent_id,
                                                                       uint64_t sequence,
                                                                       const std::string& hash,
                                                                       uint64_t held, bool below) {
  const std::string sql =
      absl::StrCat("SELECT ", kResumeColumns,
                   " FROM chain_resumes WHERE agent_id = ?1 AND resumed_after_sequence = ?2 AND "
                   "resumed_after_hash = ?3 AND ",
                   below ? "held_through_sequence < ?4 ORDER BY held_through_sequence DESC LIMIT 1"
                         : "held_through_sequence = ?4");
  Stmt r(db_, sql.c_str());
  RETURN_IF_ERROR(r.status());
  r.Bind(1, agent_id).Bind(2, static_cast<int64_t>(sequence)).BindBlob(3, hash);
  r.Bind(4, static_cast<int64_t>(held));
  if (r.Step() != SQLITE_ROW) return std::nullopt;
  return ReadResume(r).resume;
}

absl::Status SqliteTrailRows::PutResume(const ChainResume& resume, const std::string& signature) {
  const std::string sql = absl::StrCat("INSERT INTO chain_resumes(", kResumeColumns,
                                       ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  Stmt put(db_, sql.c_str());
  put.Bind(1, resume.agent_id)
      .Bind(2, static_cast<int64_t>(resume.resumed_after_sequence))
      .BindBlob(3, resume.resumed_after_hash);
  put.Bind(4, static_cast<int64_t>(resume.held_through_sequence))
      .BindBlob(5, resume.held_through_hash);
  put.Bind(6, static_cast<int64_t>(resume.held_records))
      .Bind(7, resume.time_ms)
      .BindBlob(8, signature);
  return put.Run();
}

absl::Status SqliteTrailRows::AppendOperatorRecord(int64_t time_ms, const std::string& actor,
                                                   const std::string& action,
                                                   const std::string& target,
                                                   const std::string& detail) {
  Stmt s(db_,
         "INSERT INTO audit_events(time_ms, actor, action, target, outcome, detail) "
         "VALUES (?1, ?2, ?3, ?4, 'ok', ?5)");
  s.Bind(1, time_ms).Bind(2, actor).Bind(3, action).Bind(4, target).Bind(5, detail);
  return s.Run();
}

absl::StatusOr<std::optional<StoredTrailHead>> SqliteTrailRows::TrailHeadOf(
    const std::string& agent_id) {
  static const std::string sql = absl::StrCat(kHeadColumns, " WHERE agent_id = ?1");
  Stmt q(db_, statements_, sql.c_str());
  RETURN_IF_ERROR(q.status());
  q.Bind(1, agent_id);
  if (q.Step() != SQLITE_ROW) return std::nullopt;
  return ReadHead(q);
}

absl::Status SqliteTrailRows::PutTrailHead(const TrailHead& h, const std::string& signature) {
  Stmt put(db_, statements_,
           "INSERT INTO trail_heads(agent_id, genesis_sequence, genesis_hash, last_sequence, "
           "last_hash, records, origin, anchored_through, time_ms, signature) VALUES (?1, ?2, ?3, "
           "?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(agent_id) DO UPDATE SET genesis_sequence = "
           "?2, genesis_hash = ?3, last_sequence = ?4, last_hash = ?5, records = ?6, origin = ?7, "
           "anchored_through = ?8, time_ms = ?9, signature = ?10");
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

absl::Status SqliteTrailRows::PutCheckpoint(const std::string& agent_id,
                                            const AgentCheckpoint& checkpoint) {
  Stmt up(db_, statements_,
          "UPDATE trail_heads SET checkpoint_sequence = ?2, checkpoint_hash = ?3, "
          "checkpoint_signature = ?4 WHERE agent_id = ?1");
  up.Bind(1, agent_id)
      .Bind(2, static_cast<int64_t>(checkpoint.sequence))
      .BindBlob(3, checkpoint.hash);
  up.BindBlob(4, checkpoint.signature);
  return up.Run();
}

absl::StatusOr<uint64_t> SqliteTrailRows::TrailHeadCount() {
  Stmt heads(db_, "SELECT COUNT(*) FROM trail_heads");
  RETURN_IF_ERROR(heads.status());
  return heads.Step() == SQLITE_ROW ? static_cast<uint64_t>(heads.Int(0)) : 0;
}

absl::StatusOr<std::optional<StoredTotals>> SqliteTrailRows::Totals() {
  Stmt t(db_, statements_,
         "SELECT agents, origin, time_ms, signature FROM trail_totals WHERE id = 1");
  RETURN_IF_ERROR(t.status());
  if (t.Step() != SQLITE_ROW) return std::nullopt;
  return StoredTotals{
      TrailTotals{static_cast<uint64_t>(t.Int(0)), static_cast<TrailOrigin>(t.Int(1)), t.Int(2)},
      t.Text(3)};
}

absl::Status SqliteTrailRows::PutTotals(const TrailTotals& t, const std::string& signature) {
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

absl::StatusOr<std::pair<uint64_t, uint64_t>> SqliteTrailRows::StoredExtent(
    const std::string& agent_id) {
  Stmt q(db_, "SELECT MIN(first_sequence), SUM(events) FROM event_chunks WHERE agent_id = ?1");
  RETURN_IF_ERROR(q.status());
  q.Bind(1, agent_id);
  if (q.Step() != SQLITE_ROW) return std::make_pair(uint64_t{0}, uint64_t{0});
  return std::make_pair(static_cast<uint64_t>(q.Int(0)), static_cast<uint64_t>(q.Int(1)));
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> SqliteTrailRows::AuditKeys() {
  absl::flat_hash_map<std::string, std::string> keys;
  Stmt k(db_, "SELECT id, audit_public_key FROM agents");
  RETURN_IF_ERROR(k.status());
  while (k.Step() == SQLITE_ROW) keys[k.Text(0)] = k.Text(1);
  return keys;
}

absl::StatusOr<std::vector<StoredTrailHead>> SqliteTrailRows::TrailHeads() {
  std::vector<StoredTrailHead> out;
  Stmt h(db_, kHeadColumns);
  RETURN_IF_ERROR(h.status());
  while (h.Step() == SQLITE_ROW) out.push_back(ReadHead(h));
  return out;
}

absl::StatusOr<std::vector<StoredTombstone>> SqliteTrailRows::Tombstones() {
  std::vector<StoredTombstone> out;
  Stmt t(db_,
         "SELECT agent_id, audit_id, time_ms, events, first_sequence, last_sequence, digest, "
         "signature FROM purge_tombstones");
  RETURN_IF_ERROR(t.status());
  while (t.Step() == SQLITE_ROW) {
    out.push_back(StoredTombstone{
        PurgeTombstone{t.Int(1), t.Text(0), t.Int(2), static_cast<uint64_t>(t.Int(3)),
                       static_cast<uint64_t>(t.Int(4)), static_cast<uint64_t>(t.Int(5)), t.Text(6)},
        t.Text(7)});
  }
  return out;
}

absl::StatusOr<std::vector<StoredResume>> SqliteTrailRows::Resumes() {
  std::vector<StoredResume> out;
  const std::string sql = absl::StrCat("SELECT ", kResumeColumns,
                                       " FROM chain_resumes ORDER BY agent_id, "
                                       "held_through_sequence");
  Stmt r(db_, sql.c_str());
  RETURN_IF_ERROR(r.status());
  while (r.Step() == SQLITE_ROW) out.push_back(ReadResume(r));
  return out;
}

absl::StatusOr<std::vector<AgentChunks>> SqliteTrailRows::ChunksByAgent() {
  std::vector<AgentChunks> out;
  Stmt q(db_,
         "SELECT agent_id, MIN(id), MAX(id), MIN(first_sequence), MAX(last_sequence), "
         "SUM(events) FROM event_chunks GROUP BY agent_id ORDER BY agent_id");
  RETURN_IF_ERROR(q.status());
  while (q.Step() == SQLITE_ROW) {
    out.push_back(AgentChunks{q.Text(0), q.Int(1), q.Int(2), static_cast<uint64_t>(q.Int(3)),
                              static_cast<uint64_t>(q.Int(4)), static_cast<uint64_t>(q.Int(5))});
  }
  return out;
}

absl::StatusOr<std::string> SqliteTrailRows::ChunkRecords(int64_t chunk) {
  Stmt read(db_, "SELECT records FROM event_chunks WHERE id = ?1");
  RETURN_IF_ERROR(read.status());
  read.Bind(1, chunk);
  if (read.Step() != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("stored events (chunk ", chunk, ") are missing"));
  }
  return StoredChunkRecords(read.Text(0), chunk);
}

absl::Status SqliteTrailRows::VisitChunks(const ChunkVisitor& visit) {
  Stmt s(db_, "SELECT id, agent_id, records FROM event_chunks ORDER BY agent_id, id");
  RETURN_IF_ERROR(s.status());
  while (s.Step() == SQLITE_ROW) {
    const int64_t chunk = s.Int(0);
    RETURN_IF_ERROR(visit(chunk, s.Text(1), StoredChunkRecords(s.Text(2), chunk)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<uint64_t, std::string>> SqliteTrailRows::Recordings(
    const std::string& session_id, uint64_t after) {
  Stmt q(db_,
         "SELECT file, offset, length FROM recording_blocks WHERE session_id = ?1 AND "
         "last_sequence > ?2 ORDER BY first_sequence");
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

absl::StatusOr<std::optional<SessionIndexRow>> SqliteTrailRows::SessionRow(
    const std::string& session_id) {
  Stmt row(db_, statements_,
           "SELECT agent_id, connection, subject, issuer, summary, started_ms, ended_ms, outcome, "
           "reason, statements, errors, decisions, rules, attribution FROM sessions WHERE "
           "session_id = ?1");
  RETURN_IF_ERROR(row.status());
  row.Bind(1, session_id);
  if (row.Step() != SQLITE_ROW) return std::nullopt;
  return SessionIndexRow{row.Text(0), row.Text(1),  row.Text(2),  row.Text(3), row.Text(4),
                         row.Int(5),  row.Int(6),   row.Text(7),  row.Text(8), row.Int(9),
                         row.Int(10), row.Text(11), row.Text(12), row.Text(13)};
}

absl::StatusOr<std::set<int64_t>> SqliteTrailRows::SessionChunks(const std::string& session_id) {
  Stmt links(db_, statements_, "SELECT chunk_id FROM session_chunks WHERE session_id = ?1");
  RETURN_IF_ERROR(links.status());
  links.Bind(1, session_id);
  std::set<int64_t> linked;
  while (links.Step() == SQLITE_ROW) linked.insert(links.Int(0));
  return linked;
}

absl::Status SqliteTrailRows::VisitSessionRows(
    const std::function<void(const std::string&, const std::string&, int64_t)>& visit) {
  Stmt all(db_, "SELECT session_id, agent_id, started_ms FROM sessions");
  RETURN_IF_ERROR(all.status());
  while (all.Step() == SQLITE_ROW) visit(all.Text(0), all.Text(1), all.Int(2));
  return absl::OkStatus();
}

TrailStorage::IndexedSince SqliteTrailRows::IndexColumnsSince() {
  return IndexedSince{IndexedSinceMs(db_, 9), IndexedSinceMs(db_, kTrailAnchorMigration)};
}

}  // namespace sluice::controlplane
