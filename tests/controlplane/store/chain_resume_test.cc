// An agent whose spool lost its tail goes on (docs/audit-and-evidence.md, "When the agent's spool
// lost its tail"): a machine crash lost records from the agent's spool after the control plane had
// stored them, and the agent's chain goes on from an older record of its own. The store records
// the resume when the agent's head is on the stored chain (and refuses it when not), ingest then
// takes the agent's new events, and `audit verify` accepts that break only under the signed
// resume, naming it, while every other break still fails.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "controlplane/store/sqlite_store.h"
#include "tests/controlplane/store/event_chain.h"

namespace sluice::controlplane {
namespace {

using ::testing::HasSubstr;

std::string FreshPath(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/chain_resume_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir + "/sluice.db";
}

// Someone who can write the database file.
void Exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err ? err : "") << "\n"
      << sql;
  sqlite3_free(err);
  sqlite3_close(db);
}

int64_t Int(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
  int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

std::vector<v1::AuditEvent> Statements(uint64_t from, uint64_t to) {
  std::vector<v1::AuditEvent> out;
  for (uint64_t s = from; s <= to; ++s)
    out.push_back(Event(s, "statement", "s1", absl::StrCat("{\"n\":", s, "}")));
  return out;
}

// An agent `a` whose records 1..6 are stored (a session and its statements, in three batches);
// its spool kept them only through sequence 3. Its next process numbers its events from 101.
class ChainResume : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = FreshPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    store_ = *SqliteStore::Open(path_);
    ASSERT_TRUE(store_->CreateEnrollment({"h", "a", {}, 0, 1000, {}}).ok());
    ASSERT_TRUE(store_->ConsumeEnrollment("h", "s", 1, {}).ok());
    std::vector<v1::AuditEvent> first = {Event(1, "session_start", "s1", R"({"connection":"db"})")};
    for (auto& e : Statements(2, 3)) first.push_back(e);
    ASSERT_TRUE(store_->AppendAgentEvents("a", chain_.BatchOf(first)).ok());
    ASSERT_TRUE(store_->AppendAgentEvents("a", chain_.BatchOf(Statements(4, 5))).ok());
    ASSERT_EQ(
        *store_->AppendAgentEvents("a", chain_.BatchOf({Event(6, "session_end", "s1", "{}")})), 6u);
  }

  // The agent's spool ended at `last`; it goes on at `next` (what it emits after its restart).
  AgentChainStart Start(uint64_t last, uint64_t next) {
    return AgentChainStart{last, chain_.HashOf(last), next};
  }

  std::string path_;
  std::unique_ptr<SqliteStore> store_;
  Chain chain_;
};

TEST_F(ChainResume, WithoutItTheAgentsNextBatchIsRefused) {
  // What happened before: the agent's new events name its older head, and ingest refuses them,
  // every time it sends them again.
  chain_.Restart(3, 101);
  for (int i = 0; i < 2; ++i) {
    auto refused = store_->AppendAgentEvents("a", chain_.BatchOf(Statements(101, 102)));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr("the audit chain of agent a breaks at sequence 101: its prev_hash does "
                          "not match the event "
                          "stored before it (it names "));
  }
}

TEST_F(ChainResume, AcceptedWhenTheAgentsHeadIsOnTheStoredChain) {
  auto state = store_->ResumeAgentChain("a", Start(3, 101), 5000);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->committed, 6u);
  EXPECT_EQ(state->head, chain_.HashOf(3));  // the agent's next event names its own head
  ASSERT_TRUE(state->resume.has_value());
  EXPECT_TRUE(state->resumed_now);
  EXPECT_EQ(state->resume->resumed_after_sequence, 3u);
  EXPECT_EQ(state->resume->resumed_after_hash, chain_.HashOf(3));
  EXPECT_EQ(state->resume->held_through_sequence, 6u);
  EXPECT_EQ(state->resume->held_through_hash, chain_.HashOf(6));
  EXPECT_EQ(state->resume->held_records, 3u);  // 4 and 5 (a batch), 6 (another)
  EXPECT_EQ(state->resume->time_ms, 5000);
  EXPECT_EQ(Int(path_, "SELECT COUNT(*) FROM chain_resumes"), 1);
  EXPECT_EQ(Int(path_, "SELECT COUNT(*) FROM audit_events WHERE action = 'Audit.chain_resumed'"),
            1);

  // The same start again (the stream broke before anything new was stored): the same resume.
  state = store_->ResumeAgentChain("a", Start(3, 101), 6000);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(state->resume.has_value());
  EXPECT_FALSE(state->resumed_now);
  EXPECT_EQ(state->resume->time_ms, 5000);
  EXPECT_EQ(Int(path_, "SELECT COUNT(*) FROM chain_resumes"), 1);

  // The agent sends what its spool still holds (dropped: stored already), then its new events.
  chain_.Restart(3, 101);
  ASSERT_EQ(*store_->AppendAgentEvents("a", chain_.BatchOf(Statements(2, 3))), 6u);
  ASSERT_EQ(*store_->AppendAgentEvents(
                "a", chain_.BatchOf({Event(101, "audit_chain_resumed", "", "{}")})),
            101u);
  ASSERT_EQ(*store_->AppendAgentEvents("a", chain_.BatchOf(Statements(102, 103))), 103u);

  // Its stream starts again: its own records are stored, nothing more is recorded (the resume is
  // told again); the next process, whose spool holds them, is in step.
  state = store_->ResumeAgentChain("a", Start(3, 101), 7000);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->committed, 103u);
  EXPECT_EQ(state->head, chain_.HashOf(103));
  ASSERT_TRUE(state->resume.has_value());
  EXPECT_FALSE(state->resumed_now);
  state = store_->ResumeAgentChain("a", Start(103, 201), 8000);
  ASSERT_TRUE(state.ok());
  EXPECT_FALSE(state->resume.has_value());
  EXPECT_EQ(Int(path_, "SELECT COUNT(*) FROM chain_resumes"), 1);

  // `audit verify` passes and names the resume.
  auto v = store_->VerifyAudit({}, nullptr);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->ok()) << v->first_problem();
  EXPECT_EQ(v->records(), 9u);
  EXPECT_EQ(v->chain_resumes(), 1u);
  EXPECT_EQ(v->anchored_agents(), 1u);  // complete from its signed genesis to its signed head
  ASSERT_EQ(v->notes_size(), 1);
  EXPECT_EQ(
      v->notes(0),
      "agent a: its chain resumed after sequence 3: its spool lost the records after it (a crash "
      "before they "
      "were durable there), and the control plane holds the records after it through sequence 6 (3 "
      "record(s)); sequence 101 goes on from sequence 3 (resume recorded "
      "1970-01-01T00:00:05.000Z)");
  // The visitor (evidence export) sees the resumed link as a link.
  std::vector<std::pair<uint64_t, bool>> seen;
  ASSERT_TRUE(store_
                  ->VerifyAudit({}, [&](const std::string&, const v1::AuditEvent& e,
                                        bool linked) { seen.emplace_back(e.sequence(), linked); })
                  .ok());
  EXPECT_EQ(seen.size(), 9u);
  for (const auto& [sequence, linked] : seen) EXPECT_TRUE(linked) << sequence;
}

TEST_F(ChainResume, RecordedBeforeAnythingFollowsItIsANote) {
  ASSERT_TRUE(store_->ResumeAgentChain("a", Start(3, 101), 5000).ok());
  auto v = store_->VerifyAudit({}, nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok()) << v->first_problem();
  EXPECT_EQ(v->chain_resumes(), 0u);
  ASSERT_EQ(v->notes_size(), 1);
  EXPECT_THAT(v->notes(0),
              HasSubstr("agent a: its spool lost its tail: its chain resumes after sequence 3"));
}

TEST_F(ChainResume, RefusedWhenTheAgentsHeadIsNotOnTheStoredChain) {
  // Another hash at a stored sequence (the agent's data directory is another agent's, or the
  // store was put back to another copy).
  auto state =
      store_->ResumeAgentChain("a", AgentChainStart{3, std::string(32, '\xab'), 101}, 5000);
  EXPECT_EQ(state.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string why(state.status().message());
  EXPECT_THAT(
      why,
      HasSubstr(
          "agent a: its audit chain is not on the chain the control plane holds: its spool ended "
          "at "
          "sequence 3 with chain hash abababababababab... when it started, and the control plane "
          "holds its trail through sequence 6, where the stored record at sequence 3 has chain "
          "hash "));
  EXPECT_THAT(why, HasSubstr("move <data-dir>/spool aside"));
  EXPECT_EQ(Int(path_, "SELECT COUNT(*) FROM chain_resumes"), 0);
  // Its batches stay refused.
  v1::AuditEvent e = Event(101, "statement", "s1", "{}");
  e.set_prev_hash(std::string(32, '\xab'));
  EventBatch batch;
  batch.offsets.push_back(0);
  audit::AppendRecord(&batch.records, e.SerializeAsString());
  batch.events = {e};
  EXPECT_EQ(store_->AppendAgentEvents("a", batch).status().code(), absl::StatusCode::kDataLoss);

  // A sequence with no stored record.
  state = store_->ResumeAgentChain("a", AgentChainStart{0, std::string(32, 'x'), 101}, 5000);
  EXPECT_EQ(state.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(state.status().message()), HasSubstr("no stored record has sequence 0"));
}

TEST_F(ChainResume, NothingIsRecordedForAnAgentInStep) {
  // Its spool holds the last stored record, or more; it says nothing (from before resumes); or
  // the stored records above its head are its own process's (its stream broke).
  for (const AgentChainStart& start :
       {Start(6, 101), AgentChainStart{7, "h", 101}, AgentChainStart{3, "", 0}, Start(3, 5)}) {
    auto state = store_->ResumeAgentChain("a", start, 5000);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->committed, 6u);
    EXPECT_EQ(state->head, chain_.HashOf(6));
    EXPECT_FALSE(state->resume.has_value());
  }
  EXPECT_EQ(Int(path_, "SELECT COUNT(*) FROM chain_resumes"), 0);
  // An agent with nothing stored.
  ASSERT_TRUE(store_->CreateEnrollment({"h2", "b", {}, 0, 1000, {}}).ok());
  ASSERT_TRUE(store_->ConsumeEnrollment("h2", "s", 1, {}).ok());
  auto state = store_->ResumeAgentChain("b", AgentChainStart{3, "h", 101}, 5000);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->committed, 0u);
  EXPECT_EQ(store_->ResumeAgentChain("nobody", Start(3, 101), 5000).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ChainResume, EveryOtherBreakStillFails) {
  ASSERT_TRUE(store_->ResumeAgentChain("a", Start(3, 101), 5000).ok());
  chain_.Restart(3, 101);
  ASSERT_TRUE(store_->AppendAgentEvents("a", chain_.BatchOf(Statements(101, 102))).ok());
  ASSERT_TRUE(store_->AppendAgentEvents("a", chain_.BatchOf(Statements(103, 104))).ok());
  ASSERT_TRUE(store_->VerifyAudit({}, nullptr)->ok());

  // A new chain started later (an event without prev_hash) is a break: the resume covers one place.
  ASSERT_TRUE(store_
                  ->AppendAgentEvents("a",
                                      [] {
                                        EventBatch b;
                                        v1::AuditEvent e = Event(105, "statement", "s1", "{}");
                                        b.offsets.push_back(0);
                                        audit::AppendRecord(&b.records, e.SerializeAsString());
                                        b.events = {e};
                                        return b;
                                      }())
                  .ok());
  auto v = store_->VerifyAudit({}, nullptr);
  EXPECT_FALSE(v->ok());
  EXPECT_EQ(v->problems(), 1u);
  EXPECT_THAT(v->first_problem(), HasSubstr("agent a: the chain breaks at sequence 105 (chunk "));
  EXPECT_EQ(v->chain_resumes(), 1u);
}

TEST_F(ChainResume, AResumeRemovedChangedOrNotMatchingTheBreakFails) {
  ASSERT_TRUE(store_->ResumeAgentChain("a", Start(3, 101), 5000).ok());
  chain_.Restart(3, 101);
  ASSERT_TRUE(store_->AppendAgentEvents("a", chain_.BatchOf(Statements(101, 102))).ok());
  ASSERT_TRUE(store_->AppendAgentEvents("a", chain_.BatchOf(Statements(103, 104))).ok());
  ASSERT_TRUE(store_->VerifyAudit({}, nullptr)->ok());

  // Changed: it no longer carries the trail key's signature.
  Exec(path_, "UPDATE chain_resumes SET held_records = 1");
  auto v = store_->VerifyAudit({}, nullptr);
  EXPECT_FALSE(v->ok());
  EXPECT_THAT(v->first_problem(),
              HasSubstr("agent a: the chain resume recorded after sequence 3 (where sequence 101 "
                        "goes on from) does not carry a valid signature"));
  Exec(path_, "UPDATE chain_resumes SET held_records = 3");
  ASSERT_TRUE(store_->VerifyAudit({}, nullptr)->ok());

  // Records removed between the resume and what follows: the break is not where the resume says.
  Exec(path_, "CREATE TABLE kept AS SELECT * FROM event_chunks WHERE first_sequence = 101");
  Exec(path_, "DELETE FROM event_chunks WHERE first_sequence = 101");
  v = store_->VerifyAudit({}, nullptr);
  EXPECT_FALSE(v->ok());
  EXPECT_THAT(v->first_problem(), HasSubstr("agent a: the chain breaks at sequence 103 (chunk "));
  EXPECT_EQ(v->chain_resumes(), 0u);
  Exec(path_, "INSERT INTO event_chunks SELECT * FROM kept; DROP TABLE kept");
  ASSERT_TRUE(store_->VerifyAudit({}, nullptr)->ok());

  // Removed: the break it covered fails.
  Exec(path_, "DELETE FROM chain_resumes");
  v = store_->VerifyAudit({}, nullptr);
  EXPECT_FALSE(v->ok());
  EXPECT_THAT(v->first_problem(), HasSubstr("agent a: the chain breaks at sequence 101 (chunk "));
  EXPECT_THAT(v->first_problem(),
              HasSubstr("its prev_hash does not match the record before it (sequence 6)"));
  EXPECT_EQ(v->chain_resumes(), 0u);
}

}  // namespace
}  // namespace sluice::controlplane
