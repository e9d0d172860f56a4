// The audit domain (controlplane/audit/trail.h) over a second storage: rows kept in memory, with
// no SQL. What it proves: the rules need nothing of a store but TrailStorage, so another store
// (PostgreSQL, for HA) implements storage only; and the rules themselves — chain, recording split,
// session index, signed head and totals — without SQLite in the way.
#include "controlplane/audit/trail.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "common/audit/events.h"
#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/status_macros.h"
#include "tests/controlplane/store/event_chain.h"

namespace sluice::controlplane {
namespace {

using ::testing::HasSubstr;

// TrailStorage in memory: maps where the SQLite store has tables.
class MemoryRows : public TrailStorage {
 public:
  struct StoredChunk {
    std::string agent;
    ChunkSpan span;
    std::string records;
  };
  std::map<std::string, AgentChainRow> agents;
  std::map<int64_t, StoredChunk> chunks;
  std::map<std::string, std::map<uint64_t, std::string>> recordings;  // by session
  std::map<std::string, SessionIndexRow> sessions;
  std::map<std::string, std::set<int64_t>> session_chunks;
  std::map<std::string, StoredTrailHead> heads;
  std::optional<StoredTotals> totals;
  std::vector<StoredResume> resumes;
  std::vector<std::string> operator_records;

  absl::StatusOr<AgentChainRow> AgentChain(const std::string& agent_id) override {
    auto it = agents.find(agent_id);
    if (it == agents.end()) return absl::NotFoundError("not enrolled");
    return it->second;
  }
  absl::Status SetAgentChain(const std::string& agent_id, std::optional<uint64_t> committed,
                             const std::string& head) override {
    if (committed) agents[agent_id].committed = *committed;
    agents[agent_id].head = head;
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> PutChunk(const std::string& agent_id, const ChunkSpan& span,
                                   absl::string_view records) override {
    const int64_t id = chunks.empty() ? 1 : chunks.rbegin()->first + 1;
    chunks[id] = StoredChunk{agent_id, span, std::string(records)};
    return id;
  }
  absl::Status PutRecordings(
      const std::string&,
      const std::map<std::string, std::vector<RecordingSlice>>& slices) override {
    for (const auto& [session, list] : slices) {
      for (const RecordingSlice& s : list) recordings[session][s.sequence] = s.data;
    }
    return absl::OkStatus();
  }
  absl::Status PutSessionIndex(const std::string& agent_id, const SessionIndexBatch& batch,
                               int64_t chunk) override {
    using Kind = SessionIndexBatch::Change::Kind;
    for (const auto& c : batch.changes) {
      if (c.kind == Kind::kEnd) {
        auto it = sessions.find(c.session_id);
        if (it == sessions.end()) continue;
        it->second.ended_ms = c.time_ms;
        it->second.outcome = "closed";
        it->second.reason = c.reason;
        continue;
      }
      if (sessions.contains(c.session_id)) continue;
      const bool refused = c.kind == Kind::kRefused;
      SessionIndexRow& row = sessions[c.session_id];
      row.agent_id = agent_id;
      row.connection = c.summary.connection();
      row.subject = c.summary.subject();
      row.issuer = c.summary.issuer();
      c.summary.SerializeToString(&row.summary);
      row.started_ms = c.time_ms;
      row.ended_ms = refused ? c.time_ms : 0;
      row.outcome = refused ? "refused" : "open";
      row.reason = refused ? c.reason : "";
      row.attribution = AttributionJson(c.summary);
    }
    for (const auto& [session, t] : batch.tags) {
      auto it = sessions.find(session);
      if (it == sessions.end()) continue;
      it->second.decisions = MergeTagList(it->second.decisions, t.decisions);
      it->second.rules = MergeTagList(it->second.rules, t.rules);
    }
    for (const auto& [session, c] : batch.counts) {
      auto it = sessions.find(session);
      if (it == sessions.end()) continue;
      it->second.statements += c.statements;
      it->second.errors += c.errors;
    }
    for (const auto& session : batch.sessions) session_chunks[session].insert(chunk);
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<Chunk>> ChunkHolding(const std::string& agent_id,
                                                    uint64_t sequence) override {
    for (const auto& [id, c] : chunks) {
      if (c.agent == agent_id && c.span.last_sequence >= sequence)
        return Chunk{id, c.span.first_sequence, c.records};
    }
    return std::nullopt;
  }
  absl::StatusOr<uint64_t> RecordsInChunksAfter(const std::string& agent_id,
                                                uint64_t sequence) override {
    uint64_t n = 0;
    for (const auto& [id, c] : chunks) {
      if (c.agent == agent_id && c.span.first_sequence > sequence) n += c.span.events;
    }
    return n;
  }
  absl::StatusOr<std::optional<ChainResume>> FindResume(const std::string& agent_id,
                                                        uint64_t sequence, const std::string& hash,
                                                        uint64_t held, bool below) override {
    std::optional<ChainResume> found;
    for (const StoredResume& r : resumes) {
      const ChainResume& x = r.resume;
      if (x.agent_id != agent_id || x.resumed_after_sequence != sequence ||
          x.resumed_after_hash != hash)
        continue;
      if (below ? x.held_through_sequence < held : x.held_through_sequence == held) found = x;
    }
    return found;
  }
  absl::Status PutResume(const ChainResume& resume, const std::string& signature) override {
    resumes.push_back(StoredResume{resume, signature});
    return absl::OkStatus();
  }
  absl::Status AppendOperatorRecord(int64_t, const std::string&, const std::string& action,
                                    const std::string&, const std::string&) override {
    operator_records.push_back(action);
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<StoredTrailHead>> TrailHeadOf(const std::string& agent_id) override {
    auto it = heads.find(agent_id);
    if (it == heads.end()) return std::nullopt;
    return it->second;
  }
  absl::Status PutTrailHead(const TrailHead& head, const std::string& signature) override {
    StoredTrailHead& h = heads[head.agent_id];
    h.head = head;
    h.signature = signature;
    return absl::OkStatus();
  }
  absl::Status PutCheckpoint(const std::string& agent_id, const AgentCheckpoint& c) override {
    heads[agent_id].checkpoint = c;
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> TrailHeadCount() override { return heads.size(); }
  absl::StatusOr<std::optional<StoredTotals>> Totals() override { return totals; }
  absl::Status PutTotals(const TrailTotals& t, const std::string& signature) override {
    totals = StoredTotals{t, signature};
    return absl::OkStatus();
  }
  absl::StatusOr<std::pair<uint64_t, uint64_t>> StoredExtent(const std::string& agent_id) override {
    std::pair<uint64_t, uint64_t> out{0, 0};
    for (const auto& [id, c] : chunks) {
      if (c.agent != agent_id) continue;
      if (out.second == 0 || c.span.first_sequence < out.first) out.first = c.span.first_sequence;
      out.second += c.span.events;
    }
    return out;
  }
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> AuditKeys() override {
    absl::flat_hash_map<std::string, std::string> out;
    for (const auto& [id, a] : agents) out[id] = a.audit_key;
    return out;
  }
  absl::StatusOr<std::vector<StoredTrailHead>> TrailHeads() override {
    std::vector<StoredTrailHead> out;
    for (const auto& [id, h] : heads) out.push_back(h);
    return out;
  }
  absl::StatusOr<std::vector<StoredTombstone>> Tombstones() override {
    return std::vector<StoredTombstone>();
  }
  absl::StatusOr<std::vector<StoredResume>> Resumes() override { return resumes; }
  absl::StatusOr<std::vector<AgentChunks>> ChunksByAgent() override {
    return std::vector<AgentChunks>();
  }
  absl::StatusOr<std::string> ChunkRecords(int64_t chunk) override {
    auto it = chunks.find(chunk);
    if (it == chunks.end()) return absl::NotFoundError("no such chunk");
    return it->second.records;
  }
  absl::Status VisitChunks(const ChunkVisitor& visit) override {
    std::vector<std::pair<std::string, int64_t>> order;
    for (const auto& [id, c] : chunks) order.emplace_back(c.agent, id);
    std::sort(order.begin(), order.end());
    for (const auto& [agent, id] : order) {
      RETURN_IF_ERROR(visit(id, agent, chunks[id].records));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<uint64_t, std::string>> Recordings(const std::string& session_id,
                                                             uint64_t after) override {
    std::map<uint64_t, std::string> out;
    for (const auto& [seq, data] : recordings[session_id]) {
      if (seq > after) out[seq] = data;
    }
    return out;
  }
  absl::StatusOr<std::optional<SessionIndexRow>> SessionRow(
      const std::string& session_id) override {
    auto it = sessions.find(session_id);
    if (it == sessions.end()) return std::nullopt;
    return it->second;
  }
  absl::StatusOr<std::set<int64_t>> SessionChunks(const std::string& session_id) override {
    return session_chunks[session_id];
  }
  absl::Status VisitSessionRows(
      const std::function<void(const std::string&, const std::string&, int64_t)>& visit) override {
    for (const auto& [id, row] : sessions) visit(id, row.agent_id, row.started_ms);
    return absl::OkStatus();
  }
  IndexedSince IndexColumnsSince() override { return IndexedSince{}; }
};

class AuditTrailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test: ctest runs the tests of this file in parallel processes.
    const std::string dir = ::testing::TempDir() + "/audit_trail_test_" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    bool created = false;
    auto pem = LoadOrCreateEd25519Key(dir + "/trail-key.pem", &created);
    ASSERT_TRUE(pem.ok()) << pem.status();
    auto signer = TrailSigner::FromPem(*pem);
    ASSERT_TRUE(signer.ok()) << signer.status();
    signer_ = std::move(*signer);
    trail_ = std::make_unique<AuditTrail>(*signer_);
    rows_.agents["a"] = AgentChainRow{};
  }

  // A session of `statements` statements from sequence `first`, start to end.
  std::vector<v1::AuditEvent> Session(uint64_t first, const std::string& id, int statements) {
    audit::SessionStartEvent start;
    start.protocol = audit::kProtocolPostgres;
    start.who.connection = "orders";
    start.who.subject = "alice";
    start.access = "read";
    std::vector<v1::AuditEvent> out = {
        Event(first, std::string(audit::SessionStartEvent::kType), id, audit::ToJson(start))};
    for (int i = 1; i <= statements; ++i) {
      out.push_back(Event(first + i, std::string(audit::StatementEvent::kType), id,
                          R"({"statement":"SELECT 1"})", /*failed=*/i == statements));
    }
    out.push_back(Event(first + statements + 1, std::string(audit::SessionEndEvent::kType), id,
                        audit::ToJson(audit::SessionEndEvent{"closed", std::nullopt})));
    return out;
  }

  v1::VerifyAuditResponse Verify() {
    auto out = trail_->Verify(rows_, v1::VerifyAuditRequest(), nullptr);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : v1::VerifyAuditResponse();
  }

  std::unique_ptr<TrailSigner> signer_;
  std::unique_ptr<AuditTrail> trail_;
  MemoryRows rows_;
  Chain chain_;
};

TEST_F(AuditTrailTest, StoredBatchesVerifyAndIndexTheirSessions) {
  ASSERT_EQ(*trail_->Append(rows_, "a", chain_.BatchOf(Session(1, "s1", 3))), 5u);
  ASSERT_EQ(*trail_->Append(rows_, "a", chain_.BatchOf(Session(6, "s2", 1))), 8u);
  // A resent batch stores nothing twice.
  Chain again;
  ASSERT_EQ(*trail_->Append(rows_, "a", again.BatchOf(Session(1, "s1", 3))), 8u);
  EXPECT_EQ(rows_.chunks.size(), 2u);

  const SessionIndexRow& s1 = rows_.sessions.at("s1");
  EXPECT_EQ(s1.connection, "orders");
  EXPECT_EQ(s1.subject, "alice");
  EXPECT_EQ(s1.outcome, "closed");
  EXPECT_EQ(s1.statements, 3);
  EXPECT_EQ(s1.errors, 1);
  EXPECT_EQ(rows_.heads.at("a").head.records, 8u);
  EXPECT_EQ(rows_.heads.at("a").head.last_sequence, 8u);
  ASSERT_TRUE(rows_.totals.has_value());
  EXPECT_EQ(rows_.totals->totals.agents, 1u);

  v1::VerifyAuditResponse v = Verify();
  EXPECT_TRUE(v.ok()) << v.first_problem();
  EXPECT_EQ(v.records(), 8u);
  EXPECT_EQ(v.sessions_checked(), 2u);
  EXPECT_EQ(v.anchored_agents(), 1u);
}

TEST_F(AuditTrailTest, ABrokenChainIsRefusedAndNothingIsStored) {
  ASSERT_TRUE(trail_->Append(rows_, "a", chain_.BatchOf(Session(1, "s1", 1))).ok());
  Chain other;  // another chain: its first event names no record of this one
  other.BatchOf(Session(1, "x", 1));
  EventBatch forged = other.BatchOf(Session(4, "s2", 1));
  auto st = trail_->Append(rows_, "a", forged);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(st.status().message()), HasSubstr("breaks at sequence 4"));
  EXPECT_EQ(rows_.chunks.size(), 1u);
  EXPECT_FALSE(rows_.sessions.contains("s2"));
}

TEST_F(AuditTrailTest, RecordingsLeaveTheEventsAndVerifyJoinsThemAgain) {
  std::vector<v1::AuditEvent> events = Session(1, "s1", 1);
  events[1].set_recording("rec-one-statement");
  events[1].set_recording_bytes(static_cast<uint32_t>(events[1].recording().size()));
  ASSERT_TRUE(trail_->Append(rows_, "a", chain_.BatchOf(events)).ok());
  ASSERT_EQ(rows_.recordings["s1"].size(), 1u);
  // The stored chunk holds the event without its recording.
  ASSERT_EQ(rows_.chunks.size(), 1u);
  EXPECT_EQ(rows_.chunks.begin()->second.records.find("rec-one-statement"), std::string::npos);
  v1::VerifyAuditResponse v = Verify();
  EXPECT_TRUE(v.ok()) << v.first_problem();
  EXPECT_EQ(v.recording_slices(), 1u);

  rows_.recordings["s1"].clear();
  v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_THAT(v.first_problem(), HasSubstr("recording slice of sequence 2 (session s1)"));
}

TEST_F(AuditTrailTest, VerifyNamesRecordsRemovedFromTheEndAndIndexRowsAdded) {
  ASSERT_TRUE(trail_->Append(rows_, "a", chain_.BatchOf(Session(1, "s1", 1))).ok());
  ASSERT_TRUE(trail_->Append(rows_, "a", chain_.BatchOf(Session(4, "s2", 1))).ok());
  rows_.chunks.erase(rows_.chunks.rbegin()->first);  // the newest batch, gone
  SessionIndexRow& ghost = rows_.sessions["ghost"];
  ghost.agent_id = "a";
  ghost.connection = "orders";
  ghost.subject = "mallory";
  v1::VerifyAuditResponse v = Verify();
  EXPECT_FALSE(v.ok());
  std::string all;
  for (const auto& p : v.problem_list()) all += p + "\n";
  EXPECT_THAT(all, HasSubstr("the end of its trail is missing"));
  EXPECT_THAT(all, HasSubstr("session ghost"));
  EXPECT_THAT(all, HasSubstr("no stored event starts it"));
}

TEST_F(AuditTrailTest, ATrailHeadChangedByHandNoLongerVerifies) {
  ASSERT_TRUE(trail_->Append(rows_, "a", chain_.BatchOf(Session(1, "s1", 1))).ok());
  rows_.heads.at("a").head.records = 2;  // the signature covers the count
  v1::VerifyAuditResponse v = Verify();
  EXPECT_FALSE(v.ok());
  EXPECT_THAT(v.first_problem(), HasSubstr("its trail head does not carry a valid signature"));
}

}  // namespace
}  // namespace sluice::controlplane
