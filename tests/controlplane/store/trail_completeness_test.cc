// `audit verify` proves each stored trail complete, not only intact: records removed at its end
// or its start, a trail removed whole, purged records nobody purged, and a session index that no
// longer says what the events say are all named (docs/audit-and-evidence.md, "Completeness").
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/zstd_codec.h"
#include "controlplane/store/migrations.h"
#include "controlplane/store/sqlite_store.h"
#include "tests/controlplane/store/event_chain.h"

namespace sluice::controlplane {
namespace {

using ::testing::HasSubstr;

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/trail_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Another connection to the store's database, as someone who can write the file has.
class Tamper {
 public:
  explicit Tamper(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
  }
  ~Tamper() { sqlite3_close(db_); }
  void Exec(const std::string& sql) {
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << (err ? err : "") << "\n"
        << sql;
  }
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
  }
  std::vector<int64_t> ChunkIds(const std::string& agent) {
    std::vector<int64_t> out;
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "SELECT id FROM event_chunks WHERE agent_id = ?1 ORDER BY id", -1, &s,
                       nullptr);
    sqlite3_bind_text(s, 1, agent.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(s) == SQLITE_ROW) out.push_back(sqlite3_column_int64(s, 0));
    sqlite3_finalize(s);
    return out;
  }
  // The record payloads of a stored chunk.
  std::vector<std::string> Records(int64_t chunk) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "SELECT records FROM event_chunks WHERE id = ?1", -1, &s, nullptr);
    sqlite3_bind_int64(s, 1, chunk);
    EXPECT_EQ(sqlite3_step(s), SQLITE_ROW);
    std::string stored(static_cast<const char*>(sqlite3_column_blob(s, 0)),
                       sqlite3_column_bytes(s, 0));
    sqlite3_finalize(s);
    std::string records = IsZstdFrame(stored) ? *ZstdInflate(stored, 64 << 20) : stored;
    std::vector<std::string> out;
    audit::RecordReader reader(records);
    while (!reader.done()) out.emplace_back(*reader.Next());
    return out;
  }
  // Writes a chunk back with these payloads (framed, uncompressed: the store reads both).
  void PutRecords(int64_t chunk, const std::vector<std::string>& payloads) {
    std::string records;
    for (const auto& p : payloads) audit::AppendRecord(&records, p);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "UPDATE event_chunks SET records = ?2 WHERE id = ?1", -1, &s, nullptr);
    sqlite3_bind_int64(s, 1, chunk);
    sqlite3_bind_blob(s, 2, records.data(), static_cast<int>(records.size()), SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
  }

 private:
  sqlite3* db_ = nullptr;
};

const char kStart[] =
    R"({"connection":"db","subject":"bot","issuer":"i","groups":["ci"],"tls":true})";

// Agent `a`'s trail in four chunks (one per batch):
//   1: s1 starts, two statements (one failed), ends              sequences 1-4
//   2: s2 starts, a blocked statement; a checkpoint of 4         5-7
//   3: s3 refused; s4 starts, 20 statements, ends                8-30
//   4: a checkpoint of 30                                        31
class TrailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    path_ = dir_ + "/sluice.db";
    store_ = *SqliteStore::Open(path_);
    Enroll("a");
    Append("a", {Event(1, "session_start", "s1", kStart),
                 Event(2, "statement", "s1", R"({"statement":"select 1"})"),
                 Event(3, "statement", "s1", R"({"statement":"oops"})", true),
                 Event(4, "session_end", "s1", R"({"reason":"closed"})")});
    Append("a",
           {Event(5, "session_start", "s2", kStart),
            Event(6, "statement", "s2",
                  R"({"statement":"DELETE FROM t","decision":"blocked","guardrail":"g"})", true),
            CheckpointOf("a", 7, 4)});
    std::vector<v1::AuditEvent> third = {
        Event(8, "session_refused", "s3", R"({"connection":"db","reason":"no rule"})"),
        Event(9, "session_start", "s4", kStart)};
    for (uint64_t s = 10; s < 30; ++s)
      third.push_back(Event(s, "statement", "s4", R"({"statement":"select 2"})"));
    third.push_back(Event(30, "session_end", "s4", R"({"reason":"closed"})"));
    Append("a", third);
    Append("a", {CheckpointOf("a", 31, 30)});
  }

  void Enroll(const std::string& agent) {
    ASSERT_TRUE(store_->CreateEnrollment({"h-" + agent, agent, {}, 0, 1000, {}}).ok());
    ASSERT_TRUE(store_->ConsumeEnrollment("h-" + agent, "s", 1, {}).ok());
    bool created = false;
    keys_[agent] = *LoadOrCreateEd25519Key(dir_ + "/agent-" + agent + ".pem", &created);
    ASSERT_TRUE(store_->RegisterAuditKey(agent, *Ed25519PublicKey(keys_[agent]), true).ok());
  }
  void Append(const std::string& agent, std::vector<v1::AuditEvent> events) {
    auto stored = store_->AppendAgentEvents(agent, chains_[agent].BatchOf(std::move(events)));
    ASSERT_TRUE(stored.ok()) << stored.status();
  }
  // A checkpoint event at `sequence` that signs the hash of `covered`, as the agent emits it.
  v1::AuditEvent CheckpointOf(const std::string& agent, uint64_t sequence, uint64_t covered) {
    const std::string& hash = chains_[agent].HashOf(covered);
    std::string signature = *Ed25519Sign(keys_[agent], audit::CheckpointMessage(covered, hash));
    return Event(sequence, "checkpoint", "",
                 absl::StrCat(R"({"sequence":)", covered, R"(,"hash":")", HexEncode(hash),
                              R"(","signature":")", HexEncode(signature), R"("})"));
  }
  v1::VerifyAuditResponse Verify() {
    auto v = store_->VerifyAudit({}, nullptr);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : v1::VerifyAuditResponse();
  }
  static bool Lists(const v1::VerifyAuditResponse& v, const std::string& text) {
    for (const auto& p : v.problem_list()) {
      if (p.find(text) != std::string::npos) return true;
    }
    return false;
  }
  static std::string All(const v1::VerifyAuditResponse& v) {
    std::string out;
    for (const auto& p : v.problem_list()) absl::StrAppend(&out, p, "\n");
    return out;
  }

  std::string dir_, path_;
  std::unique_ptr<SqliteStore> store_;
  std::map<std::string, Chain> chains_;
  std::map<std::string, std::string> keys_;
};

TEST_F(TrailTest, AnIntactTrailIsProvenComplete) {
  auto v = Verify();
  EXPECT_TRUE(v.ok()) << All(v);
  EXPECT_EQ(v.records(), 31u);
  EXPECT_EQ(v.anchored_agents(), 1u);
  EXPECT_EQ(v.sessions_checked(), 4u);  // s1..s4, s3 refused
  EXPECT_EQ(v.checkpoints(), 2u);
  EXPECT_EQ(v.notes_size(), 0);
  EXPECT_EQ(v.trail_key().size(), 64u);
  bool created = false;
  auto key = LoadOrCreateEd25519Key(dir_ + "/trail-key.pem", &created);
  ASSERT_TRUE(key.ok() && !created);
  EXPECT_EQ(v.trail_key(), HexEncode(*Ed25519PublicKey(*key)));
}

TEST_F(TrailTest, TheLastChunkRemovedIsNamed) {
  Tamper(path_).Exec("DELETE FROM event_chunks WHERE id = (SELECT MAX(id) FROM event_chunks)");
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.first_problem(),
            "agent a: the end of its trail is missing: its signed head (1970-01-01T00:00:00.310Z) "
            "ends at sequence 31 "
            "with 31 record(s), and the newest stored record is sequence 30 with 30 record(s) "
            "stored: the records "
            "after sequence 30 through 31 were removed");
  EXPECT_EQ(v.anchored_agents(), 0u);
}

TEST_F(TrailTest, TheLastTwentyEventsRemovedAreNamed) {
  Tamper t(path_);
  auto chunks = t.ChunkIds("a");
  t.Exec(absl::StrCat("DELETE FROM event_chunks WHERE id = ", chunks[3]));
  auto third = t.Records(chunks[2]);  // 8..30: keep 8..11; 12..31 go
  third.resize(4);
  t.PutRecords(chunks[2], third);
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_THAT(v.first_problem(),
              HasSubstr("agent a: the end of its trail is missing: its signed head"));
  EXPECT_THAT(v.first_problem(),
              HasSubstr("the newest stored record is sequence 11 with 11 record(s) stored: the "
                        "records after sequence 11 through 31 were removed"));
  // The agent's own signed checkpoint, kept apart from the events, says the same.
  EXPECT_TRUE(Lists(v,
                    "agent a: its latest signed checkpoint (kept with its trail head) covers "
                    "sequence 30, and the "
                    "stored record is missing (the newest stored record is sequence 11)"))
      << All(v);
  // And the session that lost its statements no longer matches its index row.
  EXPECT_TRUE(
      Lists(v,
            "session s4 (agent a, connection db, identity bot, started 1970-01-01T00:00:00.090Z): "
            "its row in "
            "the session index differs from its events: ended_ms 300 (the events: 0); outcome "
            "'closed' (the "
            "events: 'open'); reason 'closed' (the events: ''); statements 20 (the events: 2)"))
      << All(v);
}

TEST_F(TrailTest, TheOldestChunksRemovedAreNamed) {
  // Up to and including the first checkpoint (sequence 7).
  Tamper t(path_);
  auto chunks = t.ChunkIds("a");
  t.Exec(absl::StrCat("DELETE FROM event_chunks WHERE id IN (", chunks[0], ", ", chunks[1], ")"));
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.first_problem(),
            "agent a: the start of its trail is missing: its signed genesis is sequence 1, and the "
            "oldest stored record "
            "is sequence 8: the records from sequence 1 up to it were removed");
  // Their sessions' index rows no longer have events.
  EXPECT_TRUE(Lists(
      v,
      "session s1 (agent a, started 1970-01-01T00:00:00.010Z): the session index holds it, and no "
      "stored event starts it"))
      << All(v);
}

TEST_F(TrailTest, TheHeadRemovedWithTheTailIsNamed) {
  Tamper t(path_);
  t.Exec(
      "DELETE FROM event_chunks WHERE id = (SELECT MAX(id) FROM event_chunks); DELETE FROM "
      "trail_heads");
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.first_problem(),
            "agent a: 30 record(s) are stored (sequences 1 to 30) and its signed trail head is "
            "missing (it was "
            "removed): neither the start nor the end of its trail can be proven");
}

TEST_F(TrailTest, AHeadRewrittenToFitATruncatedTrailDoesNotVerify) {
  Tamper(path_).Exec(
      "DELETE FROM event_chunks WHERE id = (SELECT MAX(id) FROM event_chunks);"
      "UPDATE trail_heads SET last_sequence = 30, records = 30, last_hash = (SELECT chain_head "
      "FROM agents)");
  EXPECT_EQ(Verify().first_problem(),
            "agent a: its trail head does not carry a valid signature of this control plane's "
            "trail key (it was changed)");
}

TEST_F(TrailTest, AWholeTrailRemovedShowsInTheTotals) {
  Enroll("b");
  Append("b", {Event(100, "session_start", "b1", kStart), Event(101, "session_end", "b1", "{}")});
  EXPECT_TRUE(Verify().ok());
  Tamper t(path_);
  t.Exec(
      "DELETE FROM event_chunks WHERE agent_id = 'b'; DELETE FROM trail_heads WHERE agent_id = 'b';"
      "DELETE FROM sessions WHERE agent_id = 'b'");
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.first_problem(),
            "the signed totals (1970-01-01T00:00:01.010Z) count 2 trail(s), and the store holds 1 "
            "trail head(s): trail "
            "heads were removed (a trail removed whole, with its head, shows only here)");
  // Without the totals, their absence is the problem.
  t.Exec("DELETE FROM trail_totals");
  EXPECT_EQ(Verify().first_problem(),
            "the signed totals of the trails are missing (they were removed): a trail removed "
            "whole, with its head, "
            "would not show");
  // The next batch counts the totals again from the heads, and says they were lost.
  Append("a", {Event(32, "statement", "s4", "{}")});
  EXPECT_TRUE(Lists(
      Verify(), "the signed totals of the trails were missing (removed) when records were stored"));
}

TEST_F(TrailTest, AHeadRemovedBeforeTheNextBatchStaysReported) {
  Tamper(path_).Exec("DELETE FROM trail_heads");
  Append("a", {Event(32, "statement", "s4", "{}")});
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.first_problem(),
            "agent a: its signed trail head was missing (removed) when the control plane stored "
            "records after sequence "
            "31: the trail through that sequence is not proven complete");
}

TEST_F(TrailTest, TheSessionIndexIsDerivedAgainFromTheEvents) {
  Tamper t(path_);
  // A row removed: `sessions list` no longer shows the session.
  t.Exec("DELETE FROM sessions WHERE session_id = 's2'");
  v1::ListSessionsRequest all;
  EXPECT_EQ(store_->ListSessions(all)->size(), 3u);
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.first_problem(),
            "session s2 (agent a, connection db, identity bot, started 1970-01-01T00:00:00.050Z): "
            "its row in the "
            "session index is missing (`sessions list` and `sessions show` do not show it)");
  EXPECT_EQ(v.problems(), 1u);
  // Outside the window asked for, it is not reported.
  v1::VerifyAuditRequest later;
  later.set_from_unix_ms(60);
  EXPECT_TRUE(store_->VerifyAudit(later, nullptr)->ok());
}

TEST_F(TrailTest, ChangedExtraAndUnlinkedIndexRowsAreNamed) {
  Tamper t(path_);
  t.Exec("UPDATE sessions SET statements = 5, decisions = '' WHERE session_id = 's4'");
  t.Exec("UPDATE sessions SET decisions = '' WHERE session_id = 's2'");
  t.Exec(absl::StrCat("DELETE FROM session_chunks WHERE session_id = 's4' AND chunk_id = ",
                      t.ChunkIds("a")[2]));
  t.Exec(
      "INSERT INTO sessions(session_id, agent_id, connection, subject, issuer, summary, "
      "started_ms, outcome) "
      "VALUES ('ghost', 'a', 'db', 'eve', 'i', '', 5, 'closed')");
  auto v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.problems(), 4u) << All(v);
  EXPECT_TRUE(
      Lists(v,
            "session s2 (agent a, connection db, identity bot, started 1970-01-01T00:00:00.050Z): "
            "its row "
            "in the session index differs from its events: decisions '' (the events: ',blocked,')"))
      << All(v);
  EXPECT_TRUE(Lists(v,
                    "session s4 (agent a, connection db, identity bot, started "
                    "1970-01-01T00:00:00.090Z): its row "
                    "in the session index differs from its events: statements 5 (the events: 20)"))
      << All(v);
  EXPECT_TRUE(Lists(
      v,
      "session s4 (agent a, connection db, identity bot, started 1970-01-01T00:00:00.090Z): the "
      "session index does not link it to chunk(s) 3 that hold its events"))
      << All(v);
  EXPECT_TRUE(Lists(v,
                    "session ghost (agent a, started 1970-01-01T00:00:00.005Z): the session index "
                    "holds it, and no "
                    "stored event starts it"))
      << All(v);
}

TEST_F(TrailTest, ARetentionPurgeVerifiesAndAPurgeNobodyMadeDoesNot) {
  PurgeRequest purge;
  purge.cutoff_ms_by_connection = {{"db", 100}};  // s1 (ended at 40 ms) and s3 (refused at 80 ms)
  purge.actor = "test";
  purge.now_ms = 1000;
  auto purged = store_->PurgeSessions(purge);
  ASSERT_TRUE(purged.ok()) << purged.status();
  ASSERT_EQ(purged->sessions(), 2u);
  auto v = Verify();
  EXPECT_TRUE(v.ok()) << All(v);
  EXPECT_EQ(v.purged(), 5u);
  EXPECT_EQ(v.tombstones(), 1u);
  EXPECT_EQ(v.sessions_checked(), 2u);  // s2, s4: the purged ones have no row
  EXPECT_EQ(v.anchored_agents(), 1u);

  // Someone turns a statement of s4 into a purged record, as retention would, hash kept: the chain
  // still links, but the purge's signed tombstone does not name it.
  Tamper t(path_);
  const int64_t chunk = t.ChunkIds("a")[2];
  auto records = t.Records(chunk);
  v1::AuditEvent e;
  ASSERT_TRUE(e.ParseFromString(records[5]));  // sequence 13
  ASSERT_EQ(e.sequence(), 13u);
  v1::AuditEvent forged;
  forged.set_sequence(e.sequence());
  forged.set_time_unix_ms(e.time_unix_ms());
  forged.set_type("purged");
  forged.set_session_id(e.session_id());
  forged.set_prev_hash(e.prev_hash());
  forged.set_purged_hash(audit::ChainHash(records[5]));
  forged.set_json(absl::StrCat(R"({"purged_by_audit_record":)", purged->audit_id(), "}"));
  const std::string original = records[5];
  records[5] = forged.SerializeAsString();
  t.PutRecords(chunk, records);
  v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_TRUE(Lists(
      v, absl::StrCat(
             "agent a: the purged records naming purge ", purged->audit_id(),
             " (6, sequences 1 to 13) are not those its signed tombstone names (5, sequences 1 "
             "to 8): purged records were added, removed or changed")))
      << All(v);
  // Naming a purge that never was.
  forged.set_json(R"({"purged_by_audit_record":999})");
  records[5] = forged.SerializeAsString();
  t.PutRecords(chunk, records);
  EXPECT_TRUE(Lists(
      Verify(),
      "agent a: 1 purged record(s) (sequences 13 to 13) name purge 999, and no signed tombstone "
      "of it exists: retention did not purge them"));
  records[5] = original;
  t.PutRecords(chunk, records);
  EXPECT_TRUE(Verify().ok());
  // The tombstone removed: the real purged records no longer verify.
  t.Exec("DELETE FROM purge_tombstones");
  EXPECT_TRUE(
      Lists(Verify(), absl::StrCat("agent a: 5 purged record(s) (sequences 1 to 8) name purge ",
                                   purged->audit_id(), ", and no signed tombstone of it exists")));
}

// A store written before trails were anchored: the upgrade anchors what it finds, says so, and
// from there on the trail is proven complete.
TEST(TrailUpgrade, AStoreFromBeforeAnchoringIsAnchoredAsFound) {
  const std::string dir = FreshDir("upgrade");
  const std::string path = dir + "/sluice.db";
  {
    auto store = *SqliteStore::Open(path);
    ASSERT_TRUE(store->CreateEnrollment({"h", "a", {}, 0, 1000, {}}).ok());
    ASSERT_TRUE(store->ConsumeEnrollment("h", "s", 1, {}).ok());
    Chain chain;
    ASSERT_TRUE(store
                    ->AppendAgentEvents("a", chain.BatchOf({Event(1, "session_start", "s1", kStart),
                                                            Event(2, "session_end", "s1", "{}")}))
                    .ok());
    ASSERT_TRUE(store
                    ->AppendAgentEvents("a", chain.BatchOf({Event(3, "session_start", "s2", kStart),
                                                            Event(4, "statement", "s2", "{}")}))
                    .ok());
    PurgeRequest purge;
    purge.cutoff_ms_by_connection = {{"db", 100}};
    purge.now_ms = 1000;
    ASSERT_EQ(store->PurgeSessions(purge)->events(), 2u);
  }
  {
    // What a build before migration 12 left: no heads, totals, tombstones, chain resumes,
    // rollouts, sealed keys or trail key.
    Tamper t(path);
    t.Exec(
        "DROP TABLE trail_heads; DROP TABLE trail_totals; DROP TABLE purge_tombstones; DROP TABLE "
        "chain_resumes; DROP TABLE rollouts; DROP TABLE rollout_resources; DROP TABLE "
        "sealed_keys;"
        "DELETE FROM schema_migrations WHERE version >= 12; DELETE FROM meta WHERE key = "
        "'trail_public_key'");
    ASSERT_EQ(t.Int("SELECT MAX(version) FROM schema_migrations"), 11);
  }
  std::filesystem::remove(dir + "/trail-key.pem");
  auto store = *SqliteStore::Open(path);
  auto v = store->VerifyAudit({}, nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok()) << v->first_problem();
  EXPECT_EQ(v->anchored_agents(), 1u);
  ASSERT_EQ(v->notes_size(), 2);
  EXPECT_EQ(v->notes(0),
            "agent a: its trail was stored before this control plane anchored trails; it was "
            "anchored as found at the "
            "upgrade (sequences 1 to 4), and is proven complete from there on");
  EXPECT_EQ(v->notes(1),
            "agent a: 2 purged record(s) from purges before trails were anchored (no tombstone) "
            "are taken "
            "as found");
  // From there on, the end is anchored.
  Tamper(path).Exec("DELETE FROM event_chunks WHERE id = (SELECT MAX(id) FROM event_chunks)");
  v = store->VerifyAudit({}, nullptr);
  EXPECT_FALSE(v->ok());
  EXPECT_THAT(v->first_problem(),
              HasSubstr("agent a: the end of its trail is missing: its signed head"));
}

TEST(TrailKey, AStoreSignedWithAnotherKeyIsRefused) {
  const std::string dir = FreshDir("key");
  ASSERT_TRUE(SqliteStore::Open(dir + "/sluice.db").ok());
  bool created = false;
  std::string other = *LoadOrCreateEd25519Key(dir + "/other.pem", &created);
  auto store = SqliteStore::Open(dir + "/sluice.db", other);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      std::string(store.status().message()),
      HasSubstr(
          "the audit trails in this store were signed by the trail key whose public half is "));
}

}  // namespace
}  // namespace sluice::controlplane
