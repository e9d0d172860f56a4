#include "controlplane/audit/trail.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/audit/events.h"
#include "common/audit/records.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace sluice::controlplane {

std::optional<AgentCheckpoint> ParseCheckpoint(const v1::AuditEvent& e) {
  if (e.type() != audit::CheckpointEvent::kType) return std::nullopt;
  auto read = audit::CheckpointEvent::Read(e.json());
  if (!read.ok()) return AgentCheckpoint{};  // malformed: sequence 0, never verifies
  AgentCheckpoint c;
  c.sequence = read->sequence;
  c.hash = std::move(read->hash);
  c.signature = std::move(read->signature);
  return c;
}

bool CheckpointSignatureValid(const std::string& key, const AgentCheckpoint& c) {
  return c.sequence != 0 &&
         Ed25519Verify(key, audit::CheckpointMessage(c.sequence, c.hash), c.signature);
}

std::string HashPrefix(absl::string_view hash) {
  return hash.empty() ? std::string("nothing") : absl::StrCat(HexEncode(hash.substr(0, 8)), "...");
}

std::string ResumeDetail(const ChainResume& resume) {
  return absl::StrCat("the agent's spool ended at sequence ", resume.resumed_after_sequence,
                      " (chain hash ", HashPrefix(resume.resumed_after_hash),
                      ") and the control plane holds its trail through sequence ",
                      resume.held_through_sequence, ": the ", resume.held_records,
                      " record(s) after it were stored, then lost from "
                      "the agent's spool (a crash before they were durable there); its chain goes "
                      "on from sequence ",
                      resume.resumed_after_sequence);
}

absl::StatusOr<std::string> StoredRecordHash(TrailStorage& rows, const v1::AuditEvent& e,
                                             absl::string_view payload) {
  if (!e.purged_hash().empty()) return e.purged_hash();
  if (e.recording_bytes() == 0) return audit::ChainHash(payload);
  ASSIGN_OR_RETURN(const auto recording, rows.Recordings(e.session_id(), e.sequence() - 1));
  auto slice = recording.find(e.sequence());
  if (slice == recording.end() || slice->second.size() != e.recording_bytes()) {
    return absl::DataLossError(
        absl::StrCat("the recording slice of sequence ", e.sequence(), " is missing"));
  }
  return audit::ChainHash(audit::JoinRecording(payload, slice->second));
}

absl::StatusOr<BatchChain> CheckBatchChain(const std::string& agent_id, const EventBatch& batch,
                                           size_t first_new, std::string head,
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
    // A checkpoint must carry the agent's signature (the claim itself is checked by Verify, which
    // follows the whole chain).
    if (auto c = ParseCheckpoint(e); c && !key.empty()) {
      if (!CheckpointSignatureValid(key, *c)) {
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

absl::Status SplitRecordings(const std::string& agent_id, const EventBatch& batch, size_t first_new,
                             std::string* stripped_records,
                             std::map<std::string, std::vector<RecordingSlice>>* slices) {
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

absl::Status AuditTrail::PutTrailHead(TrailStorage& rows, const TrailHead& head) const {
  ASSIGN_OR_RETURN(std::string signature, signer_.Sign(TrailHeadMessage(head)));
  return rows.PutTrailHead(head, signature);
}

absl::Status AuditTrail::PutTotals(TrailStorage& rows, const TrailTotals& totals) const {
  ASSIGN_OR_RETURN(std::string signature, signer_.Sign(TrailTotalsMessage(totals)));
  return rows.PutTotals(totals, signature);
}

absl::StatusOr<uint64_t> AuditTrail::Append(TrailStorage& rows, const std::string& agent_id,
                                            const EventBatch& batch) const {
  if (batch.offsets.size() != batch.events.size()) {
    return absl::InvalidArgumentError("event batch: one record offset per event is required");
  }
  // Agents send in sequence order and resend from their first unacknowledged event, so whatever
  // is at or below the agent's committed sequence is a duplicate.
  ASSIGN_OR_RETURN(const AgentChainRow agent, rows.AgentChain(agent_id));
  const uint64_t committed = agent.committed;
  size_t first_new = 0;
  while (first_new < batch.events.size() && batch.events[first_new].sequence() <= committed)
    ++first_new;
  if (first_new == batch.events.size()) return committed;  // all resent: stored already
  auto checked = CheckBatchChain(agent_id, batch, first_new, agent.head, agent.audit_key);
  const v1::AuditEvent& next = batch.events[first_new];
  if (absl::IsDataLoss(checked.status()) && next.sequence() > committed + 1) {
    // The agent goes on past records this store does not hold: after a restore of the store from
    // an older copy, the ones this control plane acknowledged after the copy was made.
    return absl::DataLossError(absl::StrCat(
        checked.status().message(),
        ". The control plane holds this agent's trail only through "
        "sequence ",
        committed, " and the agent goes on from sequence ", next.sequence(),
        ": if the store was restored from an older copy, the records in between are missing from "
        "it, and the agent no longer has them. Its audit batches are refused (the agent keeps "
        "them, and refuses new sessions once its buffers fill); docs/deploy.md, \"Restore\", "
        "says how to go on"));
  }
  ASSIGN_OR_RETURN(const BatchChain chain, std::move(checked));

  // Recordings leave the events here: each slice goes to its session's recording, and the event
  // is stored without it (audit::StripRecording); Verify joins them again.
  absl::string_view stored = absl::string_view(batch.records).substr(batch.offsets[first_new]);
  std::string stripped_records;
  std::map<std::string, std::vector<RecordingSlice>> slices;  // by session
  RETURN_IF_ERROR(SplitRecordings(agent_id, batch, first_new, &stripped_records, &slices));
  if (!slices.empty()) stored = stripped_records;

  // The new events are a suffix of the batch: stored as they came (without recordings), as one
  // chunk.
  const v1::AuditEvent& first = batch.events[first_new];
  const v1::AuditEvent& last = batch.events.back();
  const uint64_t added = batch.events.size() - first_new;
  ASSIGN_OR_RETURN(const int64_t chunk,
                   rows.PutChunk(agent_id,
                                 ChunkSpan{first.sequence(), last.sequence(), first.time_unix_ms(),
                                           last.time_unix_ms(), added},
                                 stored));
  if (!slices.empty()) RETURN_IF_ERROR(rows.PutRecordings(agent_id, slices));
  RETURN_IF_ERROR(
      rows.PutSessionIndex(agent_id, IndexBatch(agent_id, batch.events, first_new), chunk));
  RETURN_IF_ERROR(rows.SetAgentChain(agent_id, last.sequence(), chain.head));
  RETURN_IF_ERROR(AdvanceTrail(rows, agent_id, committed, added,
                               {first.sequence(), chain.first_hash}, {last.sequence(), chain.head},
                               last.time_unix_ms(),
                               chain.last_checkpoint ? &*chain.last_checkpoint : nullptr));
  return last.sequence();
}

absl::Status AuditTrail::AdvanceTrail(TrailStorage& rows, const std::string& agent_id,
                                      uint64_t committed, uint64_t added, const SequenceHash& first,
                                      const SequenceHash& last, int64_t time_ms,
                                      const AgentCheckpoint* checkpoint) const {
  TrailHead h;
  h.agent_id = agent_id;
  h.last_sequence = last.sequence;
  h.last_hash = last.hash;
  h.time_ms = time_ms;
  ASSIGN_OR_RETURN(std::optional<StoredTrailHead> stored, rows.TrailHeadOf(agent_id));
  const bool new_head = !stored.has_value();
  if (stored) {
    h.genesis_sequence = stored->head.genesis_sequence;
    h.genesis_hash = stored->head.genesis_hash;
    h.records = stored->head.records + added;
    h.origin = stored->head.origin;
    h.anchored_through = stored->head.anchored_through;
  } else {
    h.genesis_sequence = first.sequence;
    h.genesis_hash = first.hash;
    h.records = added;
  }
  if (new_head && committed != 0) {
    // Events were stored for this agent, and their head is gone: someone removed it. A new head
    // is signed from what is stored (so that ingest goes on), marked lost: verify reports it.
    ASSIGN_OR_RETURN(auto extent, rows.StoredExtent(agent_id));
    h.genesis_sequence = extent.first;
    h.records = extent.second;
    h.genesis_hash.clear();
    h.origin = TrailOrigin::kLost;
    h.anchored_through = committed;
    LogWarning("audit trail of agent ", agent_id,
               ": its signed head was missing (removed from the store); a new one "
               "marks the trail through sequence ",
               committed, " as not proven");
  }
  RETURN_IF_ERROR(PutTrailHead(rows, h));
  if (checkpoint != nullptr) RETURN_IF_ERROR(rows.PutCheckpoint(agent_id, *checkpoint));
  // The count of trails changes when one starts (a lost head's agent was counted already).
  return AdvanceTotals(rows, new_head && committed == 0, time_ms);
}

absl::Status AuditTrail::AdvanceTotals(TrailStorage& rows, bool new_trail, int64_t time_ms) const {
  TrailTotals totals;
  totals.time_ms = time_ms;
  ASSIGN_OR_RETURN(std::optional<StoredTotals> stored, rows.Totals());
  if (stored) {
    if (!new_trail) return absl::OkStatus();
    totals.agents = stored->totals.agents + 1;
    totals.origin = stored->totals.origin;
    return PutTotals(rows, totals);
  }
  // No totals yet: a new store, whose first trail this is; otherwise someone removed them, and
  // they are counted again from the heads, marked lost.
  ASSIGN_OR_RETURN(totals.agents, rows.TrailHeadCount());
  if (!(new_trail && totals.agents == 1)) {
    totals.origin = TrailOrigin::kLost;
    LogWarning(
        "audit trails: the signed totals were missing (removed from the store); new ones are "
        "marked lost");
  }
  return PutTotals(rows, totals);
}

absl::StatusOr<std::optional<std::string>> AuditTrail::StoredHashAt(
    TrailStorage& rows, const std::string& agent_id, uint64_t sequence,
    uint64_t* after_in_chunk) const {
  ASSIGN_OR_RETURN(std::optional<TrailStorage::Chunk> chunk, rows.ChunkHolding(agent_id, sequence));
  if (!chunk || chunk->first_sequence > sequence) return std::nullopt;
  audit::RecordReader reader(chunk->records);
  std::optional<std::string> hash;
  uint64_t after = 0;
  while (!reader.done()) {
    auto payload = reader.Next();
    v1::AuditEvent e;
    if (!payload.ok() || !e.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
      return absl::DataLossError(absl::StrCat("stored events (chunk ", chunk->id, ") are damaged"));
    }
    if (hash) {
      ++after;
    } else if (e.sequence() == sequence) {
      ASSIGN_OR_RETURN(std::string h, StoredRecordHash(rows, e, *payload));
      hash = std::move(h);
    }
  }
  if (after_in_chunk != nullptr) *after_in_chunk = after;
  return hash;
}

absl::StatusOr<AgentChainState> AuditTrail::Resume(TrailStorage& rows, const std::string& agent_id,
                                                   const AgentChainStart& start,
                                                   int64_t now_ms) const {
  AgentChainState state;
  {
    ASSIGN_OR_RETURN(AgentChainRow agent, rows.AgentChain(agent_id));
    state.committed = agent.committed;
    state.head = std::move(agent.head);
  }
  const uint64_t held = state.committed;
  // In step: nothing stored yet, an agent that says nothing (from before this), or a spool that
  // holds the last stored record or more (what the control plane holds is dropped when resent).
  if (held == 0 || start.hash.empty() || start.own_from == 0 || start.sequence >= held)
    return state;
  if (start.own_from <= held) {
    // Records of this very process are stored: its stream broke and started again. A resume
    // recorded for its start is told again, in case the agent did not hear of it.
    ASSIGN_OR_RETURN(state.resume, rows.FindResume(agent_id, start.sequence, start.hash,
                                                   start.own_from, /*below=*/true));
    return state;
  }
  // The control plane holds records after the last one the agent's spool held, and they are not
  // this process's own: the spool lost them. Recorded once for this start.
  ASSIGN_OR_RETURN(state.resume,
                   rows.FindResume(agent_id, start.sequence, start.hash, held, /*below=*/false));
  if (!state.resume) {
    ASSIGN_OR_RETURN(state.resume, RecordResume(rows, agent_id, start, held, now_ms));
    state.resumed_now = true;
  }
  // Its next new event names the head its spool held (and is numbered above `held`: what is at or
  // below is dropped as resent).
  if (state.head != start.hash) {
    RETURN_IF_ERROR(rows.SetAgentChain(agent_id, std::nullopt, start.hash));
    state.head = start.hash;
  }
  return state;
}

absl::StatusOr<ChainResume> AuditTrail::RecordResume(TrailStorage& rows,
                                                     const std::string& agent_id,
                                                     const AgentChainStart& start, uint64_t held,
                                                     int64_t now_ms) const {
  // Only on the stored chain: the stored record at the agent's head must have its hash.
  uint64_t after_in_chunk = 0;
  ASSIGN_OR_RETURN(std::optional<std::string> stored,
                   StoredHashAt(rows, agent_id, start.sequence, &after_in_chunk));
  if (!stored || *stored != start.hash) {
    return absl::FailedPreconditionError(absl::StrCat(
        "agent ", agent_id,
        ": its audit chain is not on the chain the control plane holds: its spool ended at "
        "sequence ",
        start.sequence, " with chain hash ", HashPrefix(start.hash),
        " when it started, and the control plane holds its trail through sequence ", held,
        ", where ",
        stored ? absl::StrCat("the stored record at sequence ", start.sequence, " has chain hash ",
                              HashPrefix(*stored))
               : absl::StrCat("no stored record has sequence ", start.sequence),
        "; its audit batches are refused (the agent keeps them, and refuses new sessions once "
        "its buffers fill). Its data directory may have been replaced or copied from another "
        "agent's, or the control plane's store restored from an older copy. To go on with a new "
        "chain: stop the agent and move <data-dir>/spool aside (keep it: it holds the events not "
        "stored yet); its next events start a new chain, which `audit verify` reports as a "
        "break"));
  }
  ChainResume resume;
  resume.agent_id = agent_id;
  resume.resumed_after_sequence = start.sequence;
  resume.resumed_after_hash = start.hash;
  resume.held_through_sequence = held;
  ASSIGN_OR_RETURN(std::optional<std::string> held_hash,
                   StoredHashAt(rows, agent_id, held, nullptr));
  resume.held_through_hash = held_hash.value_or("");
  ASSIGN_OR_RETURN(uint64_t later, rows.RecordsInChunksAfter(agent_id, start.sequence));
  resume.held_records = after_in_chunk + later;
  resume.time_ms = now_ms;
  ASSIGN_OR_RETURN(std::string signature, signer_.Sign(ChainResumeMessage(resume)));
  RETURN_IF_ERROR(rows.PutResume(resume, signature));
  RETURN_IF_ERROR(rows.AppendOperatorRecord(now_ms, "agent:" + agent_id, "Audit.chain_resumed",
                                            "Agent/" + agent_id, ResumeDetail(resume)));
  return resume;
}

absl::Status AuditTrail::AnchorStored(TrailStorage& rows) const {
  ASSIGN_OR_RETURN(const std::vector<AgentChunks> found, rows.ChunksByAgent());
  // The first and the last record of a chunk, as stored. What cannot be read (a damaged chunk, a
  // recording slice gone) leaves the hash empty: the trail is taken as found, and verify names
  // the damage itself.
  struct Edge {
    uint64_t sequence = 0;
    std::string hash;
    int64_t time_ms = 0;
  };
  auto edge = [&rows](int64_t chunk, bool first) -> std::optional<Edge> {
    auto records = rows.ChunkRecords(chunk);
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
    auto hash = StoredRecordHash(rows, e, *payload);
    return Edge{e.sequence(), hash.ok() ? *hash : std::string(), e.time_unix_ms()};
  };
  TrailTotals totals;
  uint64_t records = 0;
  for (const AgentChunks& f : found) {
    TrailHead h;
    h.agent_id = f.agent_id;
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
    RETURN_IF_ERROR(PutTrailHead(rows, h));
    ++totals.agents;
    records += h.records;
    totals.time_ms = std::max(totals.time_ms, h.time_ms);
  }
  if (found.empty()) return absl::OkStatus();
  LogInfo("audit trails: anchored the trails of ", found.size(), " agent(s) as stored (", records,
          " records); `audit verify` proves them complete from here on");
  return PutTotals(rows, totals);
}

}  // namespace sluice::controlplane
