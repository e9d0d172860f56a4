#include "controlplane/service/agent_service.h"

#include <algorithm>
#include <deque>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/audit/records.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "controlplane/service/metrics.h"
#include "controlplane/store/disk_fault.h"

namespace sluice::controlplane {
namespace {

constexpr size_t kMaxEventsPerBatch = 20000;
constexpr int kAgentCertDays = 365;
constexpr size_t kMaxBatchBytes = 3 << 20;  // under gRPC's default 4 MiB message limit

// Decoded audit batches' event vectors, recycled: a busy agent's ~2,000 events per batch decode
// into strings that already have their capacity instead of allocating and freeing each one
// (audit::DecodeEventsInto). A few are kept, for all agents' streams.
class RecycledEvents {
 public:
  static RecycledEvents& Instance() {
    static RecycledEvents* pool = new RecycledEvents();
    return *pool;
  }
  std::vector<v1::AuditEvent> Get() {
    absl::MutexLock lock(&mu_);
    if (free_.empty()) return {};
    std::vector<v1::AuditEvent> v = std::move(free_.back());
    free_.pop_back();
    return v;
  }
  void Put(std::vector<v1::AuditEvent> v) {
    absl::MutexLock lock(&mu_);
    if (free_.size() < kKept) free_.push_back(std::move(v));
  }

 private:
  static constexpr size_t kKept = 4;
  absl::Mutex mu_;
  std::vector<std::vector<v1::AuditEvent>> free_ ABSL_GUARDED_BY(mu_);
};

// What one stream's writes share on the store worker (touched only there).
struct IngestState {
  // The store refused one of this stream's batches: the later ones cannot link to what is stored
  // (they would be refused as chain breaks) and are dropped too, unacknowledged. The stream is
  // closed — at once, or for a disk fault once the store takes writes again — and the agent sends
  // everything not acknowledged again, in order, on its next stream.
  bool paused = false;
};

// A write of a stream refused for a disk fault: the store says so once (GuardedStore); the
// stream is paused and closed when writes resume.
bool PauseOnDiskFault(const absl::Status& st, AgentHub* hub, const std::string& id,
                      IngestState* ingest) {
  if (!IsDiskFault(st)) return false;
  ingest->paused = true;
  hub->NotePaused(id);
  return true;
}

// On the store worker: stores an agent's audit batch; acknowledged only once committed.
void StoreBatch(Store* store, AgentHub* hub, const std::string& id, IngestState* ingest,
                const EventBatch& batch) {
  if (ingest->paused) return;
  auto committed = store->AppendAgentEvents(id, batch);
  if (committed.ok()) {
    ControlPlaneMetrics::Default().BatchStored(
        id, batch.events.size(), batch.events.empty() ? 0 : batch.events.front().time_unix_ms(),
        NowUnixMs());
    v1::ControlMessage ack;
    ack.mutable_audit_ack()->set_committed_sequence(*committed);
    hub->SendTo(id, std::move(ack));
    return;
  }
  if (PauseOnDiskFault(committed.status(), hub, id, ingest)) return;
  LogError("cannot store audit events of agent ", id, ": ", committed.status().message());
  if (!absl::IsDataLoss(committed.status())) {
    // Not a chain break: the agent sends the batch again on a new stream.
    ingest->paused = true;
    hub->Close(
        id, absl::StrCat("the control plane could not store an audit batch (",
                         committed.status().message(), "); send what is not acknowledged again"));
    return;
  }
  // A broken hash chain is refused, and is an alert in the control plane's own audit trail (once
  // a minute per agent: the agent keeps sending what is refused).
  static absl::flat_hash_map<std::string, int64_t>* alerted =
      new absl::flat_hash_map<std::string, int64_t>();
  int64_t now = NowUnixMs();
  if (now - (*alerted)[id] >= 60000) {
    (*alerted)[id] = now;
    store
        ->AppendAudit({0, now, "agent:" + id, "Audit.refused", "Agent/" + id, "DATA_LOSS",
                       std::string(committed.status().message())})
        .IgnoreError();
  }
}

// On the store worker: a NACK of the version of a rollout in canary halts it (only canary agents
// are sent that version): nothing more is promoted. Refused for a disk fault, the stream is closed
// once the store takes writes again, and the agent NACKs again on its next one.
void HaltRolloutOnNack(Store* store, AgentHub* hub, const std::string& id, IngestState* ingest,
                       uint64_t version, const std::string& error) {
  auto halted = store->HaltRollout(version, id, error, NowUnixMs());
  if (PauseOnDiskFault(halted.status(), hub, id, ingest)) return;
  if (!halted.ok()) {
    LogError("cannot halt the rollout of version ", version, " on agent ", id,
             "'s NACK: ", halted.status().message());
  } else if (*halted) {
    LogWarning("rollout ", (*halted)->id, " of version ", version, " halted: ", (*halted)->reason);
  }
}

// Agents present "Agent <id>:<secret>".
bool ParseAgentAuth(const grpc::CallbackServerContext* ctx, std::string* id, std::string* secret) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return false;
  std::string value(it->second.data(), it->second.size());
  constexpr absl::string_view kPrefix = "Agent ";
  if (value.size() > 512 || !absl::StartsWith(value, kPrefix)) return false;
  std::string rest = value.substr(kPrefix.size());
  size_t colon = rest.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) return false;
  *id = rest.substr(0, colon);
  *secret = rest.substr(colon + 1);
  return true;
}

class AgentStream final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::ControlMessage>,
                          public AgentStreamHandle {
 public:
  AgentStream(grpc::CallbackServerContext* ctx, Store* store, AgentHub* hub, Worker* worker,
              ApprovalDesk* desk)
      : store_(store), hub_(hub), worker_(worker), desk_(desk) {
    std::string secret;
    std::optional<Labels> labels;
    if (ParseAgentAuth(ctx, &agent_id_, &secret)) labels = hub_->Authenticate(agent_id_, secret);
    if (!labels) {
      LogWarning("agent stream refused: missing or invalid agent credentials");
      absl::MutexLock lock(&mu_);
      FinishLocked(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                "unknown agent or wrong agent secret; enroll the agent again"));
      return;
    }
    enrolled_labels_ = *std::move(labels);
    StartRead(&in_);
  }

  const std::string& agent_id() const override { return agent_id_; }
  const Labels& labels() const override { return enrolled_labels_; }

  void Send(v1::ControlMessage message) override {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    out_.push_back(std::move(message));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void Close(const std::string& reason) override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::ABORTED, reason));
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      FinishLocked(grpc::Status::OK);
      return;
    }
    grpc::Status st = Handle(in_);
    if (!st.ok()) {
      absl::MutexLock lock(&mu_);
      FinishLocked(st);
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    out_.pop_front();
    if (!ok) {
      out_.clear();
      writing_ = false;
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write to agent failed"));
      return;
    }
    if (!out_.empty() && !finishing_) {
      StartWrite(&out_.front());
      return;
    }
    writing_ = false;
    if (finishing_ && !finish_sent_) {
      finish_sent_ = true;
      Finish(finish_status_);
    }
  }

  void OnDone() override {
    if (registered_) {
      hub_->Unregister(this);
      std::string id = agent_id_;
      Store* store = store_;
      worker_->Post([store, id] { store->UpdateAgentSeen(id, NowUnixMs()).IgnoreError(); });
      LogInfo("agent ", agent_id_, " disconnected");
    }
    delete this;
  }

 private:
  // Finishes once; when a write is in flight, after it completes.
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finishing_) return;
    finishing_ = true;
    finish_status_ = std::move(status);
    if (!writing_) {
      finish_sent_ = true;
      Finish(finish_status_);
    }
  }

  grpc::Status Handle(const v1::AgentMessage& msg) {
    if (!registered_) {
      if (!msg.has_hello()) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            "the first message must be Hello");
      }
      return OnHello(msg.hello());
    }
    switch (msg.msg_case()) {
      case v1::AgentMessage::kAck: {
        uint64_t version = msg.ack().version();
        if (!hub_->OnAck(this, version, msg.ack().nonce())) {
          LogInfo("agent ", agent_id_, " acknowledged a superseded snapshot (version ", version,
                  ")");
          return grpc::Status::OK;
        }
        LogInfo("agent ", agent_id_, " ACK version ", version);
        std::string id = agent_id_;
        Store* store = store_;
        AgentHub* hub = hub_;
        // Not stored for a disk fault: the stream is closed once the store takes writes again, and
        // the agent ACKs the snapshot it is sent on its next stream.
        worker_->Post([store, hub, id, version, ingest = ingest_] {
          PauseOnDiskFault(store->RecordAck(id, version, NowUnixMs()), hub, id, ingest.get());
        });
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kNack: {
        uint64_t version = msg.nack().version();
        std::string error = msg.nack().error().substr(0, 4096);
        if (!hub_->OnNack(this, version, msg.nack().nonce())) return grpc::Status::OK;
        LogWarning("agent ", agent_id_, " NACK version ", version, ": ", error);
        std::string id = agent_id_;
        Store* store = store_;
        AgentHub* hub = hub_;
        worker_->Post([store, hub, id, version, error, ingest = ingest_] {
          if (PauseOnDiskFault(store->RecordNack(id, version, error, NowUnixMs()), hub, id,
                               ingest.get()))
            return;
          HaltRolloutOnNack(store, hub, id, ingest.get(), version, error);
        });
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kHeartbeat: {
        NoteAuditState(msg.heartbeat().audit_error());
        std::string id = agent_id_;
        Store* store = store_;
        worker_->Post([store, id] { store->UpdateAgentSeen(id, NowUnixMs()).IgnoreError(); });
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kAudit: {
        if (msg.audit().records().size() > kMaxBatchBytes) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "audit batch too large");
        }
        EventBatch batch;
        batch.events = RecycledEvents::Instance().Get();
        absl::Status decoded = audit::DecodeEventsInto(msg.audit().records(), kMaxEventsPerBatch,
                                                       &batch.events, &batch.offsets);
        if (!decoded.ok()) {
          LogError("agent ", agent_id_,
                   " sent an audit batch that does not decode: ", decoded.message());
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("audit batch refused: ", decoded.message()));
        }
        batch.records = msg.audit().records();
        std::string id = agent_id_;
        Store* store = store_;
        AgentHub* hub = hub_;
        worker_->Post([store, hub, id, ingest = ingest_, batch = std::move(batch)]() mutable {
          StoreBatch(store, hub, id, ingest.get(), batch);
          RecycledEvents::Instance().Put(std::move(batch.events));
        });
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kApprovalRequest: {
        // Stored on the store worker; the agent learns the request's id (or why it was refused).
        std::string id = agent_id_;
        AgentHub* hub = hub_;
        ApprovalDesk* desk = desk_;
        v1::ApprovalRequest request = msg.approval_request();
        worker_->Post([hub, desk, id, request = std::move(request)] {
          v1::ControlMessage answer;
          if (desk == nullptr) {
            answer.mutable_approval_registered()->set_request_id(
                request.request_id().substr(0, 64));
            answer.mutable_approval_registered()->set_error(
                "this control plane does not take approval requests");
          } else {
            *answer.mutable_approval_registered() =
                desk->Register(id, request, *hub->state(), NowUnixMs());
          }
          hub->SendTo(id, std::move(answer));
        });
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kApprovalWithdrawn: {
        std::string id = agent_id_;
        ApprovalDesk* desk = desk_;
        v1::ApprovalWithdrawn withdrawn = msg.approval_withdrawn();
        if (desk != nullptr)
          worker_->Post([desk, id, withdrawn] { desk->Withdraw(id, withdrawn, NowUnixMs()); });
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kHello:
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "Hello was already sent");
      default:
        // Recordings come with a later issue; refusing them loudly is better than dropping
        // them on the floor.
        return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                            "this control plane does not accept recording messages yet");
    }
  }

  grpc::Status OnHello(const v1::Hello& hello) {
    if (hello.agent_id() != agent_id_) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "Hello.agent_id does not match the agent credentials");
    }
    for (const auto& [k, v] : hello.labels()) {
      auto it = enrolled_labels_.find(k);
      if (it == enrolled_labels_.end() || it->second != v) {
        std::vector<std::string> granted;
        for (const auto& [gk, gv] : enrolled_labels_) granted.push_back(absl::StrCat(gk, "=", gv));
        return grpc::Status(
            grpc::StatusCode::PERMISSION_DENIED,
            absl::StrCat("label ", k, "=", v, " was not granted at enrollment (granted: ",
                         absl::StrJoin(granted, ","), ")"));
      }
    }
    std::vector<std::string> caps;
    for (const auto& c : hello.capabilities()) caps.push_back(c.substr(0, 32));
    if (caps.size() > 16) caps.resize(16);
    std::string version = hello.agent_version().substr(0, 64);
    std::string id = agent_id_;
    Store* store = store_;
    std::string audit_key = hello.audit_public_key().substr(0, 64);
    AgentHub* hub = hub_;
    // What Hello stores, refused for a disk fault, is stored at the agent's next Hello: its stream
    // is closed when the store takes writes again.
    worker_->Post([store, hub, id, version, caps, audit_key, ingest = ingest_] {
      if (PauseOnDiskFault(store->UpdateAgentHello(id, version, caps, NowUnixMs()), hub, id,
                           ingest.get()))
        return;
      if (audit_key.empty()) return;
      absl::Status registered = store->RegisterAuditKey(id, audit_key, /*replace=*/false);
      if (PauseOnDiskFault(registered, hub, id, ingest.get())) return;
      if (!registered.ok()) {
        LogWarning("agent ", id, ": ", registered.message());
        store
            ->AppendAudit({0, NowUnixMs(), "agent:" + id, "Audit.key_mismatch", "Agent/" + id,
                           "FAILED_PRECONDITION", std::string(registered.message())})
            .IgnoreError();
      }
    });
    LogInfo("agent ", agent_id_, " connected (applied version ", hello.applied_version(), ")");
    registered_ = true;
    hub_->Register(this);
    NoteAuditState(hello.audit_error());
    if (!hello.chain_hash().empty() && hello.own_sequences_from() != 0) AgreeOnChain(hello);
    return grpc::Status::OK;
  }

  // The agent said where its audit chain stands: compared with what is stored, on the store worker
  // before any batch of this stream (the worker runs tasks in order). An agent whose spool lost
  // records the control plane holds goes on from its older head (the resume is recorded); the
  // agent hears where the control plane's chain stands, and of the resume, in the stream's first
  // acknowledgement. An agent on another chain is named in the log and the control plane's audit
  // trail, and is not acknowledged: its batches are refused as before.
  void AgreeOnChain(const v1::Hello& hello) {
    AgentChainStart start{hello.chain_sequence(), hello.chain_hash().substr(0, 64),
                          hello.own_sequences_from()};
    std::string id = agent_id_;
    Store* store = store_;
    AgentHub* hub = hub_;
    worker_->Post([store, hub, id, start, ingest = ingest_] {
      auto state = store->ResumeAgentChain(id, start, NowUnixMs());
      if (!state.ok()) {
        if (PauseOnDiskFault(state.status(), hub, id, ingest.get())) return;
        if (!absl::IsFailedPrecondition(state.status())) {
          LogError("agent ", id, ": cannot compare its audit chain with the stored one: ",
                   state.status().message());
        } else {
          LogError(state.status().message());  // it names the agent
          store
              ->AppendAudit({0, NowUnixMs(), "agent:" + id, "Audit.chain_mismatch", "Agent/" + id,
                             "FAILED_PRECONDITION", std::string(state.status().message())})
              .IgnoreError();
        }
        return;
      }
      if (state->committed == 0) return;
      v1::ControlMessage ack;
      v1::AuditAck* a = ack.mutable_audit_ack();
      a->set_committed_sequence(state->committed);
      a->set_chain_head(state->head);
      if (state->resume) {
        v1::ChainResume* r = a->mutable_resumed();
        r->set_resumed_after_sequence(state->resume->resumed_after_sequence);
        r->set_resumed_after_hash(state->resume->resumed_after_hash);
        r->set_held_through_sequence(state->resume->held_through_sequence);
        r->set_held_records(state->resume->held_records);
        r->set_time_unix_ms(state->resume->time_ms);
      }
      hub->SendTo(id, std::move(ack));
    });
  }

  // What the agent says of its audit trail: shown by `agents list` and /metrics, and logged when
  // it changes (the agent's own events say it in the trail).
  void NoteAuditState(const std::string& reported) {
    std::string error = reported.substr(0, 1024);
    if (!hub_->SetAuditError(this, error, NowUnixMs())) return;
    if (!error.empty()) {
      LogWarning("agent ", agent_id_, " refuses new sessions: it cannot record audit events (",
                 error, ")");
    } else {
      LogInfo("agent ", agent_id_, " records audit events again");
    }
  }

  Store* store_;
  AgentHub* hub_;
  Worker* worker_;
  ApprovalDesk* desk_;
  std::string agent_id_;
  Labels enrolled_labels_;
  bool registered_ = false;  // touched only by the read path and OnDone, which never overlap
  v1::AgentMessage in_;
  // Shared with this stream's tasks on the store worker (which may run after the stream is gone).
  const std::shared_ptr<IngestState> ingest_ = std::make_shared<IngestState>();

  absl::Mutex mu_;
  std::deque<v1::ControlMessage> out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_sent_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerUnaryReactor* AgentServiceImpl::Enroll(grpc::CallbackServerContext* context,
                                                   const v1::EnrollRequest* request,
                                                   v1::EnrollResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->token().empty() || request->token().size() > 256) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "enrollment token is required"));
    return reactor;
  }
  if (request->tls_csr_pem().size() > 16384) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "tls_csr_pem: over 16 KiB"));
    return reactor;
  }
  std::string token_hash = Sha256Hex(request->token());
  std::string peer = context->peer();
  std::string csr = request->tls_csr_pem();
  std::string audit_key = request->audit_public_key().substr(0, 64);
  worker_->Post([this, reactor, response, token_hash, peer, csr, audit_key] {
    std::string secret = RandomHex(32);
    // The certificate is signed inside the enrollment's transaction: a request for names the
    // enrollment did not grant refuses the enrollment and leaves the token unused.
    std::string cert_pem;
    auto sign = [&](const EnrollmentRecord& e) -> absl::Status {
      if (csr.empty() || !agent_ca_) return absl::OkStatus();
      ASSIGN_OR_RETURN(std::vector<std::string> asked, CsrHosts(csr));
      if (asked.empty() || asked.size() > 40) {
        return absl::InvalidArgumentError("the certificate request must name 1 to 40 hosts");
      }
      std::vector<std::string> refused;
      for (const std::string& h : asked) {
        bool granted = std::find(e.tls_names.begin(), e.tls_names.end(), h) != e.tls_names.end() ||
                       std::find(LoopbackTlsNames().begin(), LoopbackTlsNames().end(), h) !=
                           LoopbackTlsNames().end();
        if (!granted) refused.push_back(h);
      }
      if (!refused.empty()) {
        return absl::PermissionDeniedError(absl::StrCat(
            "the certificate request names ", absl::StrJoin(refused, ", "),
            ", which this enrollment does not grant (sluicectl agents enroll --tls-names ...)"));
      }
      ASSIGN_OR_RETURN(cert_pem, SignCsr(*agent_ca_, csr, e.agent_id, asked, kAgentCertDays));
      return absl::OkStatus();
    };
    auto agent = store_->ConsumeEnrollment(token_hash, Sha256Hex(secret), NowUnixMs(), sign);
    AuditRecord audit{0, NowUnixMs(), "anonymous", "AgentService.Enroll", "", "ok", "from " + peer};
    if (!agent.ok()) {
      audit.outcome = absl::StatusCodeToString(agent.status().code());
      audit.detail = absl::StrCat(agent.status().message(), " (from ", peer, ")");
      store_->AppendAudit(audit).IgnoreError();
      LogWarning("enrollment refused: ", agent.status().message());
      reactor->Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                   absl::StrCat("enrollment refused: ", agent.status().message())));
      return;
    }
    audit.actor = "agent:" + agent->id;
    audit.target = "Agent/" + agent->id;
    store_->AppendAudit(audit).IgnoreError();
    if (!audit_key.empty()) {
      absl::Status registered = store_->RegisterAuditKey(agent->id, audit_key, /*replace=*/true);
      if (!registered.ok())
        LogWarning("agent ", agent->id, ": audit key not registered: ", registered.message());
    }
    hub_->AddCredential(*agent);
    response->set_agent_id(agent->id);
    response->set_agent_secret(secret);
    response->mutable_labels()->insert(agent->labels.begin(), agent->labels.end());
    if (!cert_pem.empty()) {
      response->set_tls_cert_pem(cert_pem);
      response->set_tls_ca_pem(agent_ca_->cert_pem);
    } else if (!csr.empty()) {
      response->set_tls_note(
          "this control plane has no agent CA (give it --agent-ca-cert and --agent-ca-key, or let "
          "it "
          "make its own CA), so the agent keeps its own certificate");
    }
    LogInfo("agent ", agent->id, " enrolled",
            cert_pem.empty() ? "" : " with a certificate from the agent CA");
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerBidiReactor<v1::AgentMessage, v1::ControlMessage>* AgentServiceImpl::Connect(
    grpc::CallbackServerContext* context) {
  return new AgentStream(context, store_, hub_, worker_, desk_);
}

}  // namespace sluice::controlplane
