// AuditTrail::Verify: every stored record read again, in each agent's sequence order, and what
// must hold of them checked (docs/audit-and-evidence.md, "Verifying"):
//
//   - each record frames and decodes, and its recording slice is back where it was stored;
//   - each record names the hash of the one before it, or goes on from an older one under a
//     signed chain resume;
//   - each checkpoint carries the agent's signature over a hash that a stored record still has;
//   - each agent's stored trail is what its signed head says (start, end, count), its latest
//     checkpoint still holds, its purged records are what the signed tombstones say;
//   - the signed totals count the trails stored (a trail removed whole shows there);
//   - the session index says what the events say, and holds no row they do not account for.
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/audit/events.h"
#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/status_macros.h"
#include "controlplane/audit/trail.h"

namespace sluice::controlplane {
namespace {

std::string FormatMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

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

// Whether the index row of a session says what its events say; the differences, named, or "".
std::string IndexDifferences(const SessionIndexRow& row, const std::string& agent,
                             const DerivedSession& d, int64_t tags_since_ms,
                             int64_t summaries_since_ms) {
  std::vector<std::string> diffs;
  auto text = [&diffs](const char* what, const std::string& index, const std::string& events) {
    if (index != events)
      diffs.push_back(absl::StrCat(what, " '", index, "' (the events: '", events, "')"));
  };
  auto number = [&diffs](const char* what, int64_t index, int64_t events) {
    if (index != events)
      diffs.push_back(absl::StrCat(what, " ", index, " (the events: ", events, ")"));
  };
  text("agent", row.agent_id, agent);
  text("connection", row.connection, d.summary.connection());
  text("identity", row.subject, d.summary.subject());
  text("issuer", row.issuer, d.summary.issuer());
  number("started_ms", row.started_ms, d.summary.started_unix_ms());
  number("ended_ms", row.ended_ms, d.ended_ms);
  text("outcome", row.outcome, d.outcome);
  text("reason", row.reason, d.reason);
  number("statements", row.statements, static_cast<int64_t>(d.statements));
  number("errors", row.errors, static_cast<int64_t>(d.errors));
  // Rows written before a column existed hold its default: compared only when written since.
  if (d.summary.started_unix_ms() >= tags_since_ms) {
    text("decisions", row.decisions, TagList(d.tags.decisions));
    text("rules", row.rules, TagList(d.tags.rules));
    text("attribution", row.attribution, AttributionJson(d.summary));
  }
  if (d.summary.started_unix_ms() >= summaries_since_ms) {
    v1::SessionSummary stored;
    if (!stored.ParseFromString(row.summary) ||
        !google::protobuf::util::MessageDifferencer::Equals(stored, d.summary)) {
      diffs.push_back(
          "summary (identity, groups, client, access, rule, TLS) does not match the session's "
          "start event");
    }
  }
  return absl::StrJoin(diffs, "; ");
}

// One verification: the signed rows read whole first, then the chunks agent by agent.
class Verifier {
 public:
  Verifier(const TrailSigner& signer, TrailStorage& rows, const v1::VerifyAuditRequest& req,
           const EventVisitor& visit)
      : signer_(signer), rows_(rows), req_(req), visit_(visit), findings_(&out_) {}

  absl::StatusOr<v1::VerifyAuditResponse> Run() {
    out_.set_trail_key(HexEncode(signer_.public_key()));
    RETURN_IF_ERROR(LoadSignedRows());
    RETURN_IF_ERROR(rows_.VisitChunks(
        [this](int64_t chunk, const std::string& agent, absl::StatusOr<std::string> records) {
          return Chunk(chunk, agent, std::move(records));
        }));
    RETURN_IF_ERROR(FinishAgent());
    CheckTrailsRemovedWhole();
    CheckTotals();
    RETURN_IF_ERROR(CheckUnaccountedRows());
    out_.set_ok(out_.problems() == 0);
    return std::move(out_);
  }

 private:
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
  struct Head {
    StoredTrailHead stored;
    bool seen = false;  // the agent has stored records
  };
  struct Resume {
    StoredResume stored;
    bool used = false;  // a stored record goes on from it
  };

  void Problem(const std::string& what) { findings_.Problem(what); }
  bool InWindow(int64_t t) const {
    return (req_.from_unix_ms() == 0 || t >= req_.from_unix_ms()) &&
           (req_.until_unix_ms() == 0 || t < req_.until_unix_ms());
  }

  absl::Status LoadSignedRows();
  absl::Status Chunk(int64_t chunk, const std::string& agent, absl::StatusOr<std::string> records);
  // One record of the current agent, decoded.
  void Record(int64_t chunk, const v1::AuditEvent& e, absl::string_view payload);
  // `joined`: the record with its recording slice put back (left empty when the slice is gone).
  void JoinRecording(const v1::AuditEvent& e, absl::string_view payload, std::string* joined);
  bool LinkedByResume(const v1::AuditEvent& e);
  void CheckCheckpointEvent(int64_t chunk, const v1::AuditEvent& e);
  // The end of one agent's trail: is it complete (its signed head, checkpoint, tombstones,
  // resumes), and does the session index say what its events say?
  absl::Status FinishAgent();
  bool CheckHead(const std::string& who, const Head* head);
  void CheckHeadCheckpoint(const std::string& who, const Head* head);
  void CheckTombstones(const std::string& who, const Head* head, bool head_valid);
  void CheckUnusedResumes(const std::string& who);
  absl::Status CheckSessionIndex();
  void CheckTrailsRemovedWhole();
  void CheckTotals();
  absl::Status CheckUnaccountedRows();

  const TrailSigner& signer_;
  TrailStorage& rows_;
  const v1::VerifyAuditRequest& req_;
  const EventVisitor& visit_;
  v1::VerifyAuditResponse out_;
  Findings findings_;

  absl::flat_hash_map<std::string, std::string> keys_;  // agents' audit keys
  std::map<std::string, Head> heads_;
  std::map<std::string, std::map<int64_t, StoredTombstone>> tombstones_;  // by agent, audit record
  std::map<std::string, std::vector<Resume>> resumes_;                    // by agent
  std::optional<StoredTotals> totals_;
  int64_t tags_since_ms_ = 0;
  int64_t summaries_since_ms_ = 0;

  // The agent being read.
  std::string agent_;
  std::string head_;       // hash of the agent's previous record
  uint64_t previous_ = 0;  // its sequence
  TrailPass pass_;
  absl::flat_hash_map<uint64_t, std::string> hashes_;  // the agent's records: sequence -> hash
  // By session, the slices not yet used (read once per session: a session whose recording cannot
  // be read is reported once, and each of its slices as missing).
  absl::flat_hash_map<std::string, std::map<uint64_t, std::string>> recordings_;
  // Sessions whose events account for their index row (64-bit hashes of their ids: a large store
  // has millions).
  absl::flat_hash_set<size_t> indexed_;
  absl::Hash<std::string> id_hash_;
};

absl::Status Verifier::LoadSignedRows() {
  ASSIGN_OR_RETURN(keys_, rows_.AuditKeys());
  ASSIGN_OR_RETURN(std::vector<StoredTrailHead> heads, rows_.TrailHeads());
  for (StoredTrailHead& h : heads) heads_[h.head.agent_id].stored = std::move(h);
  ASSIGN_OR_RETURN(std::vector<StoredTombstone> tombstones, rows_.Tombstones());
  for (StoredTombstone& t : tombstones) {
    tombstones_[t.tombstone.agent_id][t.tombstone.audit_id] = std::move(t);
  }
  ASSIGN_OR_RETURN(std::vector<StoredResume> resumes, rows_.Resumes());
  for (StoredResume& r : resumes) resumes_[r.resume.agent_id].push_back(Resume{std::move(r)});
  ASSIGN_OR_RETURN(totals_, rows_.Totals());
  const TrailStorage::IndexedSince since = rows_.IndexColumnsSince();
  tags_since_ms_ = since.tags_ms;
  summaries_since_ms_ = since.summaries_ms;
  return absl::OkStatus();
}

absl::Status Verifier::Chunk(int64_t chunk, const std::string& agent,
                             absl::StatusOr<std::string> records) {
  if (agent != agent_) {
    RETURN_IF_ERROR(FinishAgent());
    agent_ = agent;
    head_.clear();
    previous_ = 0;
    hashes_.clear();
    pass_ = TrailPass();
    out_.set_agents(out_.agents() + 1);
  }
  if (!records.ok()) {
    Problem(absl::StrCat("agent ", agent_, ": ", records.status().message()));
    return absl::OkStatus();  // the chain names the gap at the next chunk
  }
  audit::RecordReader reader(*records);
  while (!reader.done()) {
    size_t offset = reader.offset();
    auto payload = reader.Next();
    v1::AuditEvent e;
    if (!payload.ok() || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
      Problem(absl::StrCat("agent ", agent_, ": the record after sequence ", previous_, " (chunk ",
                           chunk, ", byte ", offset, ") is damaged: ",
                           payload.ok() ? "it is not an audit event" : payload.status().message()));
      break;  // the rest of the chunk cannot be framed
    }
    Record(chunk, e, *payload);
  }
  return absl::OkStatus();
}

void Verifier::JoinRecording(const v1::AuditEvent& e, absl::string_view payload,
                             std::string* joined) {
  auto loaded = recordings_.find(e.session_id());
  if (loaded == recordings_.end()) {
    auto read = rows_.Recordings(e.session_id(), 0);
    if (!read.ok()) {
      Problem(absl::StrCat("agent ", agent_, ": the recording of session ", e.session_id(),
                           " (sequence ", e.sequence(),
                           ") cannot be read: ", read.status().message()));
    }
    loaded = recordings_
                 .emplace(e.session_id(),
                          read.ok() ? std::move(*read) : std::map<uint64_t, std::string>())
                 .first;
  }
  auto slice = loaded->second.find(e.sequence());
  if (slice != loaded->second.end() && slice->second.size() == e.recording_bytes()) {
    *joined = audit::JoinRecording(payload, slice->second);
    loaded->second.erase(slice);
    out_.set_recording_slices(out_.recording_slices() + 1);
  } else {
    Problem(absl::StrCat("agent ", agent_, ": the recording slice of sequence ", e.sequence(),
                         " (session ", e.session_id(), ") is missing from its recording file"));
  }
}

void Verifier::Record(int64_t chunk, const v1::AuditEvent& e, absl::string_view payload) {
  out_.set_records(out_.records() + 1);
  // An event stored without its recording is hashed with it: the slice comes back from the
  // session's recording (read once per session, each slice used once).
  std::string joined;
  absl::string_view whole = payload;
  if (!e.purged_hash().empty()) {
    out_.set_purged(out_.purged() + 1);
    TrailPass::Fold& fold = pass_.purges[PurgedBy(e)];
    if (fold.events++ == 0) fold.first = e.sequence();
    fold.last = e.sequence();
    PurgeDigestAdd(&fold.digest, e.sequence(), e.purged_hash());
  } else if (e.recording_bytes() > 0) {
    JoinRecording(e, payload, &joined);
    if (!joined.empty()) whole = joined;
  }
  const bool linked = head_.empty() || e.prev_hash() == head_ || LinkedByResume(e);
  if (!linked && InWindow(e.time_unix_ms())) {
    Problem(absl::StrCat(
        "agent ", agent_, ": the chain breaks at sequence ", e.sequence(), " (chunk ", chunk, "): ",
        e.prev_hash().empty() ? "it starts a new chain (no prev_hash) after sequence "
                              : "its prev_hash does not match the record before it (sequence ",
        previous_,
        e.prev_hash().empty() ? ""
                              : "); that record was changed, or records between them are missing"));
  }
  head_ = e.purged_hash().empty() ? audit::ChainHash(whole) : e.purged_hash();
  previous_ = e.sequence();
  hashes_[e.sequence()] = head_;
  ++pass_.records;
  if (!pass_.any) {
    pass_.any = true;
    pass_.first_sequence = e.sequence();
    pass_.first_hash = head_;
  }
  pass_.last_sequence = e.sequence();
  pass_.last_hash = head_;
  if (!e.session_id().empty()) DeriveSession(agent_, e, chunk, &pass_.sessions[e.session_id()]);
  CheckCheckpointEvent(chunk, e);
  if (visit_) visit_(agent_, e, linked);
}

bool Verifier::LinkedByResume(const v1::AuditEvent& e) {
  // An agent whose spool lost its tail goes on from an older record of its own: accepted only
  // under a signed resume naming exactly this place (after the record before it, from the stored
  // record whose hash this one names).
  for (Resume& r : resumes_[agent_]) {
    const ChainResume& x = r.stored.resume;
    if (r.used || x.held_through_sequence != previous_ || x.held_through_hash != head_ ||
        x.resumed_after_hash != e.prev_hash() || e.sequence() <= previous_) {
      continue;
    }
    auto from = hashes_.find(x.resumed_after_sequence);
    if (from == hashes_.end() || from->second != x.resumed_after_hash) continue;
    if (!signer_.Verify(ChainResumeMessage(x), r.stored.signature)) {
      Problem(absl::StrCat("agent ", agent_, ": the chain resume recorded after sequence ",
                           x.resumed_after_sequence, " (where sequence ", e.sequence(),
                           " goes on from) does not carry a valid signature of this control "
                           "plane's trail key (it was changed or added)"));
      return false;
    }
    r.used = true;
    out_.set_chain_resumes(out_.chain_resumes() + 1);
    findings_.Note(absl::StrCat(
        "agent ", agent_, ": its chain resumed after sequence ", x.resumed_after_sequence,
        ": its spool lost the records after it (a crash before they were durable there), and the "
        "control plane holds the records after it through sequence ",
        x.held_through_sequence, " (", x.held_records, " record(s)); sequence ", e.sequence(),
        " goes on from sequence ", x.resumed_after_sequence, " (resume recorded ",
        FormatMs(x.time_ms), ")"));
    return true;
  }
  return false;
}

void Verifier::CheckCheckpointEvent(int64_t chunk, const v1::AuditEvent& e) {
  auto c = ParseCheckpoint(e);
  if (!c) return;
  const std::string& key = keys_[agent_];
  auto claimed = hashes_.find(c->sequence);
  if (key.empty() || !CheckpointSignatureValid(key, *c)) {
    Problem(absl::StrCat("agent ", agent_, ": the checkpoint at sequence ", e.sequence(),
                         " (chunk ", chunk, ") ",
                         key.empty() ? "cannot be checked: the agent has no registered key"
                                     : "does not carry a valid signature of the agent's key"));
  } else if (claimed == hashes_.end() || claimed->second != c->hash) {
    Problem(absl::StrCat(
        "agent ", agent_, ": the checkpoint at sequence ", e.sequence(),
        " signed the hash of sequence ", c->sequence, ", and the stored record ",
        claimed == hashes_.end() ? "is missing" : "no longer has that hash (it was changed)"));
  } else {
    out_.set_checkpoints(out_.checkpoints() + 1);
    out_.set_signed_through(std::max<uint64_t>(out_.signed_through(), c->sequence));
  }
}

absl::Status Verifier::FinishAgent() {
  if (agent_.empty()) return absl::OkStatus();
  const std::string who = absl::StrCat("agent ", agent_, ": ");
  auto found = heads_.find(agent_);
  Head* head = found == heads_.end() ? nullptr : &found->second;
  if (head != nullptr) head->seen = true;
  const bool head_valid = CheckHead(who, head);
  CheckHeadCheckpoint(who, head);
  CheckTombstones(who, head, head_valid);
  CheckUnusedResumes(who);
  return CheckSessionIndex();
}

bool Verifier::CheckHead(const std::string& who, const Head* head) {
  if (head == nullptr) {
    Problem(absl::StrCat(who, pass_.records, " record(s) are stored (sequences ",
                         pass_.first_sequence, " to ", pass_.last_sequence,
                         ") and its signed trail head is missing (it was removed): neither the "
                         "start nor the end of its trail can be proven"));
    return false;
  }
  if (!signer_.Verify(TrailHeadMessage(head->stored.head), head->stored.signature)) {
    Problem(absl::StrCat(
        who,
        "its trail head does not carry a valid signature of this control plane's trail key "
        "(it was changed)"));
    return false;
  }
  const TrailHead& h = head->stored.head;
  bool complete = true;
  if (h.origin == TrailOrigin::kLost) {
    complete = false;
    Problem(absl::StrCat(
        who,
        "its signed trail head was missing (removed) when the control plane stored records after "
        "sequence ",
        h.anchored_through, ": the trail through that sequence is not proven complete"));
  } else if (h.origin == TrailOrigin::kUpgrade) {
    findings_.Note(absl::StrCat(who,
                                "its trail was stored before this control plane anchored trails; "
                                "it was anchored as found at the upgrade (sequences ",
                                h.genesis_sequence, " to ", h.anchored_through,
                                "), and is proven complete from there on"));
  }
  if (!pass_.any) {
    Problem(absl::StrCat(who, "none of its stored records can be read; its signed head names ",
                         h.records, " record(s), sequences ", h.genesis_sequence, " to ",
                         h.last_sequence));
    return true;
  }
  const bool start_differs =
      h.origin != TrailOrigin::kLost && pass_.first_sequence != h.genesis_sequence;
  if (start_differs) {
    complete = false;
    Problem(pass_.first_sequence > h.genesis_sequence
                ? absl::StrCat(who,
                               "the start of its trail is missing: its signed genesis is sequence ",
                               h.genesis_sequence, ", and the oldest stored record is sequence ",
                               pass_.first_sequence, ": the records from sequence ",
                               h.genesis_sequence, " up to it were removed")
                : absl::StrCat(who, "records before its signed genesis (sequence ",
                               h.genesis_sequence, ") are stored, from sequence ",
                               pass_.first_sequence, ": the control plane did not store them"));
  } else if (h.origin != TrailOrigin::kLost && !h.genesis_hash.empty() &&
             pass_.first_hash != h.genesis_hash) {
    complete = false;
    Problem(absl::StrCat(who, "the oldest stored record (sequence ", pass_.first_sequence,
                         ") is not its signed genesis: its hash differs (it was replaced)"));
  }
  if (pass_.last_sequence != h.last_sequence || (pass_.records != h.records && !start_differs)) {
    complete = false;
    if (pass_.last_sequence < h.last_sequence) {
      Problem(absl::StrCat(who, "the end of its trail is missing: its signed head (",
                           FormatMs(h.time_ms), ") ends at sequence ", h.last_sequence, " with ",
                           h.records, " record(s), and the newest stored record is sequence ",
                           pass_.last_sequence, " with ", pass_.records,
                           " record(s) stored: the records after sequence ", pass_.last_sequence,
                           " through ", h.last_sequence, " were removed"));
    } else if (pass_.last_sequence > h.last_sequence) {
      Problem(absl::StrCat(who, "records after its signed head (sequence ", h.last_sequence,
                           ") are stored, up to sequence ", pass_.last_sequence,
                           ": the control plane did not store them"));
    } else {
      Problem(absl::StrCat(
          who, pass_.records, " record(s) are stored and its signed head counts ", h.records, ": ",
          pass_.records < h.records ? "records were removed" : "records were added",
          " between sequences ", h.genesis_sequence, " and ", h.last_sequence));
    }
  } else if (!h.last_hash.empty() && pass_.last_hash != h.last_hash) {
    complete = false;
    Problem(absl::StrCat(who, "the newest stored record (sequence ", pass_.last_sequence,
                         ") no longer has the hash its signed head names (it was changed)"));
  }
  if (complete) out_.set_anchored_agents(out_.anchored_agents() + 1);
  return true;
}

void Verifier::CheckHeadCheckpoint(const std::string& who, const Head* head) {
  // The agent's latest checkpoint, kept with the head: signed with the agent's own key, so it
  // holds even against someone who could sign heads.
  if (head == nullptr || head->stored.checkpoint.sequence == 0) return;
  const AgentCheckpoint& c = head->stored.checkpoint;
  const std::string& key = keys_[agent_];
  auto claimed = hashes_.find(c.sequence);
  if (key.empty() || !CheckpointSignatureValid(key, c)) {
    Problem(absl::StrCat(who,
                         "the latest checkpoint kept with its trail head does not carry a valid "
                         "signature of the agent's key"));
  } else if (claimed == hashes_.end() || claimed->second != c.hash) {
    Problem(absl::StrCat(
        who, "its latest signed checkpoint (kept with its trail head) covers sequence ", c.sequence,
        ", and the stored record ",
        claimed == hashes_.end() ? absl::StrCat("is missing (the newest stored record is sequence ",
                                                pass_.last_sequence, ")")
                                 : std::string("no longer has that hash (it was changed)")));
  }
}

void Verifier::CheckTombstones(const std::string& who, const Head* head, bool head_valid) {
  // Purged records: each purge's must be exactly what its signed tombstone says.
  auto& mine = tombstones_[agent_];
  uint64_t legacy = 0;
  for (const auto& [audit_id, fold] : pass_.purges) {
    auto t = mine.find(audit_id);
    if (t == mine.end()) {
      if (head_valid && head->stored.head.origin == TrailOrigin::kUpgrade &&
          fold.last <= head->stored.head.anchored_through) {
        legacy += fold.events;  // purged before tombstones existed: taken as found with the trail
        continue;
      }
      Problem(absl::StrCat(
          who, fold.events, " purged record(s) (sequences ", fold.first, " to ", fold.last,
          ") name ", audit_id == 0 ? std::string("no purge") : absl::StrCat("purge ", audit_id),
          ", and no signed tombstone of it exists: retention did not purge them (their content "
          "was removed)"));
      continue;
    }
    const PurgeTombstone& signed_one = t->second.tombstone;
    if (!signer_.Verify(PurgeTombstoneMessage(signed_one), t->second.signature)) {
      Problem(absl::StrCat(who, "the tombstone of purge ", audit_id,
                           " does not carry a valid signature of this "
                           "control plane's trail key (it was changed)"));
    } else if (signed_one.events != fold.events || signed_one.first_sequence != fold.first ||
               signed_one.last_sequence != fold.last || signed_one.digest != fold.digest) {
      Problem(absl::StrCat(
          who, "the purged records naming purge ", audit_id, " (", fold.events, ", sequences ",
          fold.first, " to ", fold.last, ") are not those its signed tombstone names (",
          signed_one.events, ", sequences ", signed_one.first_sequence, " to ",
          signed_one.last_sequence, "): purged records were added, removed or changed"));
    } else {
      out_.set_tombstones(out_.tombstones() + 1);
    }
  }
  for (const auto& [audit_id, t] : mine) {
    if (pass_.purges.contains(audit_id)) continue;
    Problem(absl::StrCat(who, "the signed tombstone of purge ", audit_id, " names ",
                         t.tombstone.events, " purged record(s) (sequences ",
                         t.tombstone.first_sequence, " to ", t.tombstone.last_sequence,
                         "), and none is stored: they were removed"));
  }
  if (legacy > 0) {
    findings_.Note(absl::StrCat(who, legacy,
                                " purged record(s) from purges before trails were anchored (no "
                                "tombstone) are taken as found"));
  }
}

void Verifier::CheckUnusedResumes(const std::string& who) {
  // Resumes no stored record goes on from (yet): the agent has sent nothing since, or lost its
  // spool again and went on from another record. Nothing of the chain rests on them.
  for (const Resume& r : resumes_[agent_]) {
    if (r.used) continue;
    const ChainResume& x = r.stored.resume;
    if (!signer_.Verify(ChainResumeMessage(x), r.stored.signature)) {
      Problem(absl::StrCat(who, "the chain resume recorded after sequence ",
                           x.resumed_after_sequence,
                           " does not carry a valid signature of this control plane's trail key "
                           "(it was changed)"));
      continue;
    }
    findings_.Note(absl::StrCat(
        who, "its spool lost its tail: its chain resumes after sequence ", x.resumed_after_sequence,
        " (recorded ", FormatMs(x.time_ms), ", the control plane holding it through sequence ",
        x.held_through_sequence, "), and no stored record goes on from there yet"));
  }
}

absl::Status Verifier::CheckSessionIndex() {
  // The session index, derived again from the events.
  for (const auto& [session, d] : pass_.sessions) {
    ASSIGN_OR_RETURN(std::optional<SessionIndexRow> row, rows_.SessionRow(session));
    if (d.purged) {
      if (row) indexed_.insert(id_hash_(session));  // named here, not again as unaccounted for
      if (row && InWindow(row->started_ms)) {
        Problem(absl::StrCat("session ", session, " (agent ", agent_,
                             "): the session index holds it, and "
                             "retention purged it (its events are purged records)"));
      }
      continue;
    }
    if (!d.started) continue;  // no start event: ingest indexed nothing
    indexed_.insert(id_hash_(session));
    out_.set_sessions_checked(out_.sessions_checked() + 1);
    if (!InWindow(d.summary.started_unix_ms())) continue;
    const std::string named = absl::StrCat(
        "session ", session, " (agent ", agent_, ", connection ", d.summary.connection(),
        ", identity ", d.summary.subject().empty() ? "-" : d.summary.subject(), ", started ",
        FormatMs(d.summary.started_unix_ms()), ")");
    if (!row) {
      Problem(absl::StrCat(named,
                           ": its row in the session index is missing (`sessions list` and "
                           "`sessions show` do not show it)"));
      continue;
    }
    if (std::string diffs = IndexDifferences(*row, agent_, d, tags_since_ms_, summaries_since_ms_);
        !diffs.empty()) {
      Problem(
          absl::StrCat(named, ": its row in the session index differs from its events: ", diffs));
    }
    ASSIGN_OR_RETURN(const std::set<int64_t> linked, rows_.SessionChunks(session));
    std::vector<int64_t> unlinked;
    for (int64_t chunk : d.chunks) {
      if (!linked.contains(chunk)) unlinked.push_back(chunk);
    }
    if (!unlinked.empty()) {
      Problem(absl::StrCat(named, ": the session index does not link it to chunk(s) ",
                           absl::StrJoin(unlinked, ", "),
                           " that hold its events (`sessions show` leaves them out)"));
    }
  }
  return absl::OkStatus();
}

void Verifier::CheckTrailsRemovedWhole() {
  // A head whose agent has nothing stored.
  for (const auto& [id, h] : heads_) {
    if (h.seen) continue;
    const TrailHead& head = h.stored.head;
    if (!signer_.Verify(TrailHeadMessage(head), h.stored.signature)) {
      Problem(absl::StrCat("agent ", id,
                           ": its trail head does not carry a valid signature of this control "
                           "plane's trail key (it was changed)"));
      continue;
    }
    Problem(absl::StrCat("agent ", id, ": its signed trail head (", FormatMs(head.time_ms),
                         ") names ", head.records, " record(s), sequences ", head.genesis_sequence,
                         " to ", head.last_sequence,
                         ", and none is stored: its whole trail was removed"));
  }
}

void Verifier::CheckTotals() {
  if (!totals_) {
    if (!heads_.empty() || out_.records() > 0) {
      Problem(
          "the signed totals of the trails are missing (they were removed): a trail removed "
          "whole, with its head, would not show");
    }
    return;
  }
  if (!signer_.Verify(TrailTotalsMessage(totals_->totals), totals_->signature)) {
    Problem(
        "the totals of the trails do not carry a valid signature of this control plane's trail "
        "key (they were changed)");
    return;
  }
  const TrailTotals& t = totals_->totals;
  if (t.origin == TrailOrigin::kLost) {
    Problem(
        "the signed totals of the trails were missing (removed) when records were stored, and "
        "were counted again from the trail heads then: a trail removed whole before then would "
        "not show");
  }
  if (t.agents != heads_.size()) {
    Problem(absl::StrCat(
        "the signed totals (", FormatMs(t.time_ms), ") count ", t.agents,
        " trail(s), and the store holds ", heads_.size(), " trail head(s): ",
        t.agents > heads_.size()
            ? "trail heads were removed (a trail removed whole, with its head, shows only here)"
            : "trail heads were added"));
  }
}

absl::Status Verifier::CheckUnaccountedRows() {
  // Index rows that no stored event accounts for.
  return rows_.VisitSessionRows([this](const std::string& session, const std::string& agent,
                                       int64_t started_ms) {
    if (indexed_.contains(id_hash_(session)) || !InWindow(started_ms)) return;
    Problem(absl::StrCat("session ", session, " (agent ", agent, ", started ", FormatMs(started_ms),
                         "): the session index holds it, and no stored event starts it (the "
                         "row was added, or its events were removed)"));
  });
}

}  // namespace

absl::StatusOr<v1::VerifyAuditResponse> AuditTrail::Verify(TrailStorage& rows,
                                                           const v1::VerifyAuditRequest& request,
                                                           const EventVisitor& visit) const {
  return Verifier(signer_, rows, request, visit).Run();
}

}  // namespace sluice::controlplane
