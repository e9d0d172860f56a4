#include "controlplane/store/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <random>

#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/zstd_codec.h"
#include "controlplane/store/migrations.h"
#include "tests/controlplane/store/event_chain.h"

namespace sluice::controlplane {
namespace {

std::string FreshPath(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/store_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir + "/sluice.db";
}

std::vector<std::string> Tables(sqlite3* db) {
  std::vector<std::string> out;
  sqlite3_stmt* s;
  sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name", -1, &s,
                     nullptr);
  while (sqlite3_step(s) == SQLITE_ROW)
    out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
  sqlite3_finalize(s);
  return out;
}

StoredResource Webhook(const std::string& name, const std::string& url) {
  StoredResource r;
  r.resource.mutable_webhook()->set_name(name);
  r.resource.mutable_webhook()->set_url(url);
  return r;
}

TEST(Migrations, FreshDatabaseGetsEveryMigration) {
  std::string path = FreshPath("fresh");
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(*SchemaVersion(db), LatestSchemaVersion());
  auto tables = Tables(db);
  for (const char* t :
       {"agents", "audit_events", "enrollment_tokens", "meta", "resources", "schema_migrations"}) {
    EXPECT_NE(std::find(tables.begin(), tables.end(), t), tables.end()) << t;
  }
  sqlite3_stmt* s;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST(Migrations, UpgradeKeepsExistingData) {
  std::string path = FreshPath("upgrade");
  {
    // A database left by a build that knew only migration 1, holding one resource.
    sqlite3* db;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_TRUE(Migrate(db, 1).ok());
    EXPECT_EQ(*SchemaVersion(db), 1);
    v1::Resource r;
    r.mutable_webhook()->set_name("pager");
    r.mutable_webhook()->set_url("https://pager.example");
    std::string bytes = r.SerializeAsString();
    sqlite3_stmt* s;
    sqlite3_prepare_v2(db,
                       "INSERT INTO resources(kind, name, version, spec, updated_ms, updated_by) "
                       "VALUES ('Webhook', 'pager', 1, ?1, 0, 'test')",
                       -1, &s, nullptr);
    sqlite3_bind_blob(s, 1, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    ASSERT_TRUE(ExecSql(db, "UPDATE meta SET value = '1' WHERE key = 'policy_version'").ok());
    auto tables = Tables(db);
    EXPECT_EQ(std::find(tables.begin(), tables.end(), "agents"), tables.end());
    sqlite3_close(db);
  }
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->PolicyVersion(), 1u);
  auto got = (*store)->GetResource("Webhook", "pager");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->resource.webhook().url(), "https://pager.example");
  EXPECT_TRUE((*store)->ListAgents().ok());  // the table migration 2 added
}

TEST(Migrations, RefusesANewerSchema) {
  std::string path = FreshPath("newer");
  ASSERT_TRUE(SqliteStore::Open(path).ok());
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_TRUE(
      ExecSql(db, "INSERT INTO schema_migrations(version, applied_ms) VALUES (999, 0)").ok());
  sqlite3_close(db);
  auto store = SqliteStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("version 999"), std::string::npos);
}

TEST(SqliteStore, EveryChangeBumpsTheVersion) {
  auto store = *SqliteStore::Open(FreshPath("versions"));
  EXPECT_EQ(*store->PolicyVersion(), 0u);
  EXPECT_EQ(*store->UpsertResources({Webhook("a", "https://a"), Webhook("b", "https://b")}, "t", 1),
            1u);
  EXPECT_EQ(*store->UpsertResources({Webhook("a", "https://a2")}, "t", 2), 2u);
  auto a = store->GetResource("Webhook", "a");
  EXPECT_EQ(a->resource.webhook().url(), "https://a2");
  EXPECT_EQ(a->resource.meta().version(), 2u);
  EXPECT_EQ(store->GetResource("Webhook", "b")->resource.meta().version(), 1u);
  EXPECT_EQ(*store->DeleteResource("Webhook", "b"), 3u);
  EXPECT_EQ(store->DeleteResource("Webhook", "b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store->PolicyVersion(), 3u);
  EXPECT_EQ(store->ListResources("")->size(), 1u);
}

TEST(SqliteStore, EnrollmentTokensAreSingleUseAndExpire) {
  auto store = *SqliteStore::Open(FreshPath("enroll"));
  ASSERT_TRUE(store->CreateEnrollment({"hash1", "agent-a", {{"vpc", "a"}}, 0, 1000, {}}).ok());
  ASSERT_TRUE(store->CreateEnrollment({"hash2", "agent-b", {{"vpc", "b"}}, 0, 1000, {}}).ok());
  auto agent = store->ConsumeEnrollment("hash1", "secret-hash", 500, {});
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_EQ(agent->id, "agent-a");
  EXPECT_EQ(agent->labels.at("vpc"), "a");
  EXPECT_EQ(store->ConsumeEnrollment("hash1", "x", 600, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->ConsumeEnrollment("hash2", "x", 2000, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->ConsumeEnrollment("nope", "x", 600, {}).status().code(),
            absl::StatusCode::kNotFound);
  auto agents = *store->ListAgents();
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0].secret_hash, "secret-hash");
}

TEST(SqliteStore, EnrollmentCheckSeesTheGrantedNamesAndCanRefuse) {
  auto store = *SqliteStore::Open(FreshPath("enroll_check"));
  EnrollmentRecord e{"h", "agent-a", {{"vpc", "a"}}, 0, 1000, {"db.example.com", "10.0.0.5"}};
  ASSERT_TRUE(store->CreateEnrollment(e).ok());
  std::vector<std::string> seen;
  auto refuse = [&seen](const EnrollmentRecord& r) {
    seen = r.tls_names;
    return absl::PermissionDeniedError("not that name");
  };
  auto refused = store->ConsumeEnrollment("h", "s", 10, refuse);
  EXPECT_EQ(refused.status().message(), "not that name");
  EXPECT_EQ(seen, (std::vector<std::string>{"db.example.com", "10.0.0.5"}));
  EXPECT_TRUE(store->ListAgents()->empty());
  // The token was not used up by the refusal.
  EXPECT_TRUE(store
                  ->ConsumeEnrollment("h", "s", 20,
                                      [](const EnrollmentRecord&) { return absl::OkStatus(); })
                  .ok());
}

TEST(SqliteStore, AckClearsAnOlderNack) {
  auto store = *SqliteStore::Open(FreshPath("acks"));
  ASSERT_TRUE(store->CreateEnrollment({"h", "a", {{"k", "v"}}, 0, 1000, {}}).ok());
  ASSERT_TRUE(store->ConsumeEnrollment("h", "s", 1, {}).ok());
  ASSERT_TRUE(store->RecordAck("a", 4, 2).ok());
  ASSERT_TRUE(store->RecordNack("a", 5, "protocol mysql is not supported", 3).ok());
  auto a = (*store->ListAgents())[0];
  EXPECT_EQ(a.applied_version, 4u);
  EXPECT_EQ(a.last_nack_version, 5u);
  EXPECT_EQ(a.last_nack_error, "protocol mysql is not supported");
  ASSERT_TRUE(store->RecordAck("a", 6, 4).ok());
  a = (*store->ListAgents())[0];
  EXPECT_EQ(a.applied_version, 6u);
  EXPECT_EQ(a.last_nack_error, "");
}

std::unique_ptr<SqliteStore> StoreWithAgent(const std::string& name) {
  auto store = *SqliteStore::Open(FreshPath(name));
  EXPECT_TRUE(store->CreateEnrollment({"h", "a", {{"k", "v"}}, 0, 1000, {}}).ok());
  EXPECT_TRUE(store->ConsumeEnrollment("h", "s", 1, {}).ok());
  return store;
}

TEST(SqliteStore, AgentEventsAreStoredOnceAndCounted) {
  auto store = StoreWithAgent("events");
  Chain chain;
  const std::string start = R"({"connection":"db","subject":"bot","issuer":"https://idp"})";
  std::vector<v1::AuditEvent> batch = {
      Event(10, "session_start", "s1", start),
      Event(11, "statement", "s1", R"({"statement":"select 1"})"),
      Event(12, "statement", "s1", R"({"statement":"oops"})", true)};
  EXPECT_EQ(*store->AppendAgentEvents("a", chain.BatchOf(batch)), 12u);
  // The stream broke before the ack: the agent resends from 11, with one new event.
  std::vector<v1::AuditEvent> again = {
      Event(11, "statement", "s1", R"({"statement":"select 1"})"),
      Event(12, "statement", "s1", R"({"statement":"oops"})", true),
      Event(13, "session_end", "s1", R"({"reason":"closed"})")};
  EXPECT_EQ(*store->AppendAgentEvents("a", chain.BatchOf(again)), 13u);
  // Nothing new at all still answers with the committed sequence.
  EXPECT_EQ(*store->AppendAgentEvents("a", chain.BatchOf({Event(9, "statement", "s1", "{}")})),
            13u);

  auto detail = store->GetSession("s1");
  ASSERT_TRUE(detail.ok()) << detail.status();
  EXPECT_EQ(detail->session().statements(), 2u);
  EXPECT_EQ(detail->session().errors(), 1u);
  EXPECT_EQ(detail->session().outcome(), "closed");
  EXPECT_EQ(detail->session().subject(), "bot");
  ASSERT_EQ(detail->events_size(), 4);
  EXPECT_EQ(detail->events(0).type(), "session_start");
  EXPECT_EQ(detail->events(1).json(), R"({"statement":"select 1"})");
  EXPECT_EQ(detail->events(3).sequence(), 13u);

  EXPECT_EQ(store->AppendAgentEvents("ghost", chain.BatchOf(batch)).status().code(),
            absl::StatusCode::kNotFound);

  // A second session in the same agent's stream: each session shows only its own events.
  EXPECT_EQ(*store->AppendAgentEvents("a", chain.BatchOf({Event(14, "session_start", "s2", start),
                                                          Event(15, "statement", "s2", "{}")})),
            15u);
  EXPECT_EQ(store->GetSession("s2")->events_size(), 2);
  EXPECT_EQ(store->GetSession("s1")->events_size(), 4);
}

// A control plane whose agents never pause commits batch after batch: SQLite's checkpoints must
// still run, or the write-ahead log grows with everything ever stored (it did: 80 MB after 200
// batches of 400 KB, the database file untouched).
TEST(SqliteStore, ASteadyStreamOfBatchesKeepsTheWriteAheadLogBounded) {
  const std::string path = FreshPath("wal_bound");
  std::unique_ptr<SqliteStore> store = *SqliteStore::Open(path);
  ASSERT_TRUE(store->CreateEnrollment({"h", "a", {}, 0, 1000, {}}).ok());
  ASSERT_TRUE(store->ConsumeEnrollment("h", "s", 1, {}).ok());
  Chain chain;
  // Bodies that do not compress (stored chunks are zstd frames).
  std::mt19937 random(7);
  auto body = [&random] {
    std::string text(2000, ' ');
    for (char& c : text) c = static_cast<char>('a' + random() % 26);
    return R"({"statement":")" + text + R"("})";
  };
  uint64_t sequence = 1;
  ASSERT_TRUE(
      store->AppendAgentEvents("a", chain.BatchOf({Event(sequence, "session_start", "s1", "{}")}))
          .ok());
  // 100 batches of ~200 KB (~120 KB compressed): 12 MB through the log, three times SQLite's
  // checkpoint threshold.
  for (int b = 0; b < 100; ++b) {
    std::vector<v1::AuditEvent> events;
    for (int i = 0; i < 100; ++i) events.push_back(Event(++sequence, "statement", "s1", body()));
    auto stored = store->AppendAgentEvents("a", chain.BatchOf(std::move(events)));
    ASSERT_TRUE(stored.ok()) << stored.status();
  }
  const uintmax_t wal = std::filesystem::file_size(path + "-wal");
  const uintmax_t db = std::filesystem::file_size(path);
  EXPECT_LT(wal, 8u << 20) << "the WAL holds what should have been checkpointed";
  EXPECT_GT(db, 8u << 20) << "the events never reached the database file";
  EXPECT_EQ(store->GetSession("s1")->session().statements(), 10000u);
}

TEST(Migrations, EventsSurviveTheMoveToChunks) {
  std::string path = FreshPath("events_upgrade");
  {
    // A database at migration 3, whose agent_events held two events of one agent.
    sqlite3* db;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_TRUE(Migrate(db, 3).ok());
    ASSERT_TRUE(
        ExecSql(
            db,
            "INSERT INTO agents(id, labels, secret_hash, enrolled_ms) VALUES ('a', '{}', 'x', 0);"
            "INSERT INTO agent_events(agent_id, sequence, time_ms, type, session_id, body) VALUES"
            " ('a', 7, 70, 'session_start', 's1', '{}'),"
            " ('a', 8, 80, 'statement', 's1', '{\"statement\":\"select 2\"}');"
            "INSERT INTO sessions(session_id, agent_id, connection, subject, issuer, summary,"
            " started_ms, outcome) VALUES ('s1', 'a', 'db', 'bot', 'i', '', 70, 'open');")
            .ok());
    sqlite3_close(db);
  }
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto detail = (*store)->GetSession("s1");
  ASSERT_TRUE(detail.ok()) << detail.status();
  ASSERT_EQ(detail->events_size(), 2);
  EXPECT_EQ(detail->events(1).json(), R"({"statement":"select 2"})");
  // The committed sequence came along: a resend of 8 is a duplicate, 9 is new.
  EXPECT_EQ(*(*store)->AppendAgentEvents("a", Chain().BatchOf({Event(8, "statement", "s1", "{}"),
                                                               Event(9, "statement", "s1", "{}")})),
            9u);
  EXPECT_EQ((*store)->GetSession("s1")->events_size(), 3);
}

TEST(SqliteStore, TheHashChainIsCheckedOnIngestAndVerifiedFromStorage) {
  std::string path = FreshPath("chain");
  auto store = *SqliteStore::Open(path);
  ASSERT_TRUE(store->CreateEnrollment({"h", "a", {{"k", "v"}}, 0, 1000, {}}).ok());
  ASSERT_TRUE(store->ConsumeEnrollment("h", "s", 1, {}).ok());
  Chain chain;
  std::vector<v1::AuditEvent> first;
  for (uint64_t s = 1; s <= 5; ++s)
    first.push_back(Event(s, "statement", "s1", "{\"n\":" + std::to_string(s) + "}"));
  ASSERT_TRUE(store->AppendAgentEvents("a", chain.BatchOf(first)).ok());
  std::vector<v1::AuditEvent> second;
  for (uint64_t s = 6; s <= 8; ++s) second.push_back(Event(s, "statement", "s1", "{}"));
  ASSERT_TRUE(store->AppendAgentEvents("a", chain.BatchOf(second)).ok());
  auto verified = store->VerifyAudit({}, nullptr);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->first_problem();
  EXPECT_EQ(verified->records(), 8u);

  // An event that does not link to the stored chain is refused (nothing stored, not acknowledged).
  v1::AuditEvent forged = Event(9, "statement", "s1", "{}");
  forged.set_prev_hash(std::string(32, 'x'));
  EventBatch bad;
  bad.offsets.push_back(0);
  audit::AppendRecord(&bad.records, forged.SerializeAsString());
  bad.events = {forged};
  auto refused = store->AppendAgentEvents("a", bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(refused.status().message(),
            "the audit chain of agent a breaks at sequence 9: its prev_hash does not match the "
            "event stored before it "
            "(it names 7878787878787878..., the control plane expects " +
                HexEncode(chain.HashOf(8).substr(0, 8)) + "...)");

  // One byte changed in storage, with its checksum made to match: the chain names the next record.
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  {
    sqlite3_stmt* q;
    sqlite3_prepare_v2(db, "SELECT id, records FROM event_chunks ORDER BY id LIMIT 1", -1, &q,
                       nullptr);
    ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
    int64_t id = sqlite3_column_int64(q, 0);
    std::string stored(static_cast<const char*>(sqlite3_column_blob(q, 1)),
                       sqlite3_column_bytes(q, 1));
    sqlite3_finalize(q);
    ASSERT_TRUE(IsZstdFrame(stored));
    auto records = ZstdInflate(stored, 1 << 20);
    ASSERT_TRUE(records.ok()) << records.status();
    // Re-frame the records with event 3's body changed.
    std::string changed;
    audit::RecordReader reader(*records);
    while (!reader.done()) {
      v1::AuditEvent e;
      auto payload = reader.Next();
      ASSERT_TRUE(payload.ok());
      ASSERT_TRUE(e.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
      if (e.sequence() == 3) e.set_json("{\"n\":4}");
      audit::AppendRecord(&changed, e.SerializeAsString());
    }
    std::string frame;
    ASSERT_TRUE(ZstdCompressor(1, false).AppendFrame(changed, &frame).ok());
    changed = frame;
    sqlite3_prepare_v2(db, "UPDATE event_chunks SET records = ?2 WHERE id = ?1", -1, &q, nullptr);
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_blob(q, 2, changed.data(), static_cast<int>(changed.size()), SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
  }
  sqlite3_close(db);
  verified = store->VerifyAudit({}, nullptr);
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->ok());
  EXPECT_EQ(verified->problems(), 1u);
  EXPECT_EQ(verified->first_problem().rfind("agent a: the chain breaks at sequence 4 (chunk ", 0),
            0u)
      << verified->first_problem();

  // A stored chunk whose compressed bytes were changed does not inflate: named, not skipped.
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE event_chunks SET records = substr(records, 1, 12) || zeroblob(40) "
                         "WHERE id = (SELECT min(id) FROM event_chunks)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  verified = store->VerifyAudit({}, nullptr);
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->ok());
  EXPECT_NE(verified->first_problem().find("agent a: stored events (chunk "), std::string::npos)
      << verified->first_problem();
  EXPECT_NE(verified->first_problem().find(") are damaged: it does not decompress"),
            std::string::npos)
      << verified->first_problem();
}

v1::AuditEvent Recorded(v1::AuditEvent e, const std::string& recording) {
  e.set_recording_bytes(static_cast<uint32_t>(recording.size()));
  e.set_recording(recording);
  return e;
}

TEST(SqliteStore, RecordingsAreKeptApartAndPurgedSessionsKeepTheChain) {
  auto store = StoreWithAgent("recordings");
  Chain chain;
  const std::string start = R"({"connection":"db","subject":"bot","issuer":"i"})";
  ASSERT_TRUE(
      store
          ->AppendAgentEvents(
              "a", chain.BatchOf({Recorded(Event(1, "session_start", "s1", start), "rec-one-start"),
                                  Event(2, "session_start", "s2", start),
                                  Recorded(Event(3, "statement", "s1", "{}"), "rec-one-statement"),
                                  Recorded(Event(4, "statement", "s2", "{}"), "rec-two-statement"),
                                  Recorded(Event(5, "session_end", "s1", "{}"), "rec-one-end"),
                                  Event(6, "session_end", "s2", "{}")}))
          .ok());
  // The slices come back with their events, and only when asked for.
  v1::GetSessionRequest req;
  req.set_session_id("s1");
  req.set_recording(true);
  auto d = store->GetSession(req);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->events_size(), 3);
  EXPECT_EQ(d->events(1).recording(), "rec-one-statement");
  EXPECT_EQ(store->GetSession("s1")->events(1).recording(), "");
  req.set_after_sequence(3);
  EXPECT_EQ(store->GetSession(req)->events_size(), 1);
  // Pages stay under 2 MiB of bodies and recordings.
  const std::string big(900 << 10, 'r');
  ASSERT_TRUE(store
                  ->AppendAgentEvents(
                      "a", chain.BatchOf({Event(7, "session_start", "s3", start),
                                          Recorded(Event(8, "statement", "s3", "{}"), big),
                                          Recorded(Event(9, "statement", "s3", "{}"), big),
                                          Recorded(Event(10, "statement", "s3", "{}"), big)}))
                  .ok());
  v1::GetSessionRequest paged;
  paged.set_session_id("s3");
  paged.set_recording(true);
  auto first_page = store->GetSession(paged);
  ASSERT_TRUE(first_page.ok()) << first_page.status();
  EXPECT_EQ(first_page->events_size(), 3);
  EXPECT_TRUE(first_page->more());
  paged.set_after_sequence(9);
  auto second_page = store->GetSession(paged);
  ASSERT_EQ(second_page->events_size(), 1);
  EXPECT_EQ(second_page->events(0).recording(), big);
  EXPECT_FALSE(second_page->more());
  // The event store itself holds the events without them; verify puts them back.
  auto v = store->VerifyAudit({}, nullptr);
  ASSERT_TRUE(v.ok() && v->ok()) << v->first_problem();
  EXPECT_EQ(v->recording_slices(), 7u);

  // s2 is held; both are due: s1 goes, its events stay in the chain as purged records.
  ASSERT_TRUE(store->SetLegalHold("s2", "case 1", "auditor", 7, false).ok());
  EXPECT_EQ(store->GetSession("s2")->session().legal_hold(), "case 1");
  PurgeRequest purge;
  purge.cutoff_ms_by_connection = {{"db", 1000000}};
  purge.actor = "test";
  purge.now_ms = 1000000;
  auto purged = store->PurgeSessions(purge);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(purged->sessions(), 1u);
  EXPECT_EQ(purged->held(), 1u);
  EXPECT_EQ(purged->events(), 3u);
  EXPECT_EQ(store->GetSession("s1").status().code(), absl::StatusCode::kNotFound);
  req.set_session_id("s2");
  req.set_after_sequence(0);
  EXPECT_EQ(store->GetSession(req)->events(1).recording(), "rec-two-statement");
  v = store->VerifyAudit({}, nullptr);
  ASSERT_TRUE(v.ok() && v->ok()) << v->first_problem();
  EXPECT_EQ(v->purged(), 3u);
  // The chain goes on after the purge.
  ASSERT_TRUE(
      store->AppendAgentEvents("a", chain.BatchOf({Event(11, "statement", "s2", "{}")})).ok());
  EXPECT_TRUE(store->VerifyAudit({}, nullptr)->ok());
  // Only the control plane purges: an agent's event that claims it is refused.
  v1::AuditEvent claim = Event(12, "statement", "s2", "{}");
  claim.set_purged_hash(std::string(32, 'p'));
  EXPECT_EQ(store->AppendAgentEvents("a", chain.BatchOf({claim})).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A recording whose size does not match is refused too.
  v1::AuditEvent lying = Recorded(Event(12, "statement", "s2", "{}"), "abc");
  lying.set_recording_bytes(9);
  EXPECT_EQ(store->AppendAgentEvents("a", chain.BatchOf({lying})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// `audit verify` and the evidence export read through a reader of their own: writes go on while
// it holds a snapshot, and the snapshot sees none of them; a purge meanwhile leaves the recording
// bytes the snapshot may read, and its next run after the snapshot erases them.
TEST(SqliteStore, AReaderReadsOneSnapshotWhileWritesGoOn) {
  auto store = StoreWithAgent("reader");
  Chain chain;
  const std::string start = R"({"connection":"db","subject":"bot","issuer":"i"})";
  ASSERT_TRUE(store
                  ->AppendAgentEvents(
                      "a", chain.BatchOf({Recorded(Event(1, "session_start", "s1", start), "one"),
                                          Recorded(Event(2, "statement", "s1", "{}"), "two"),
                                          Event(3, "session_end", "s1", "{}")}))
                  .ok());
  auto opened = store->OpenReader();
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<Store> reader = *std::move(opened);
  EXPECT_EQ(reader->UpsertResources({Webhook("a", "https://a")}, "t", 1).status().code(),
            absl::StatusCode::kUnavailable)
      << "a reader writes nothing";
  absl::Status read = reader->ReadSnapshot([&]() -> absl::Status {
    auto before = reader->VerifyAudit({}, nullptr);
    EXPECT_TRUE(before.ok() && before->ok()) << before.status();
    EXPECT_EQ(before->records(), 3u);
    // Meanwhile the writer stores more, and purges s1 (the reader does not wait for, or see,
    // either).
    EXPECT_TRUE(store
                    ->AppendAgentEvents("a", chain.BatchOf({Event(4, "session_start", "s2", start),
                                                            Event(5, "statement", "s2", "{}")}))
                    .ok());
    PurgeRequest purge;
    purge.cutoff_ms_by_connection = {{"db", 1000000}};
    purge.actor = "test";
    purge.now_ms = 1000000;
    auto purged = store->PurgeSessions(purge);
    EXPECT_TRUE(purged.ok()) << purged.status();
    auto after = reader->VerifyAudit({}, nullptr);
    EXPECT_TRUE(after.ok() && after->ok())
        << (after.ok() ? after->first_problem() : after.status().ToString());
    EXPECT_EQ(after->records(), 3u);
    EXPECT_EQ(after->recording_slices(), 2u);  // read back from the files: not erased yet
    EXPECT_TRUE(reader->GetSession("s1").ok());
    return absl::OkStatus();
  });
  ASSERT_TRUE(read.ok()) << read;
  // A new snapshot sees everything stored.
  ASSERT_TRUE(
      reader
          ->ReadSnapshot([&]() -> absl::Status {
            auto v = reader->VerifyAudit({}, nullptr);
            EXPECT_TRUE(v.ok() && v->ok()) << (v.ok() ? v->first_problem() : v.status().ToString());
            EXPECT_EQ(v->records(), 5u);
            EXPECT_EQ(v->purged(), 3u);
            EXPECT_EQ(reader->GetSession("s1").status().code(), absl::StatusCode::kNotFound);
            return absl::OkStatus();
          })
          .ok());
  // The deferred bytes go at the next purge; the chain still verifies.
  PurgeRequest again;
  again.cutoff_ms_by_connection = {{"db", 1}};
  again.actor = "test";
  again.now_ms = 1000001;
  ASSERT_TRUE(store->PurgeSessions(again).ok());
  auto v = store->VerifyAudit({}, nullptr);
  EXPECT_TRUE(v.ok() && v->ok()) << (v.ok() ? v->first_problem() : v.status().ToString());
}

}  // namespace
}  // namespace sluice::controlplane
