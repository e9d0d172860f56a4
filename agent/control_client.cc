#include "agent/control_client.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/log.h"
#include "common/policy/validation.h"
#include "common/tls.h"
#include "sluice/v1/agent.grpc.pb.h"

namespace sluice::agent {
ControlClient::ControlClient(ControlClientOptions options, PolicyHolder* policy)
    : options_(std::move(options)), policy_(policy) {}

ControlClient::~ControlClient() { Stop(); }

uint64_t ControlClient::LoadFromDisk() {
  auto snap = LoadSnapshot(options_.data_dir);
  if (!snap.ok()) {
    if (!absl::IsNotFound(snap.status())) {
      LogError("ignoring the snapshot on disk: ", snap.status().message());
    }
    return 0;
  }
  if (absl::Status applied = Apply(*snap, "disk"); !applied.ok()) {
    LogError("the snapshot on disk is no longer valid here, not enforcing it: ", applied.message());
    return 0;
  }
  return snap->version();
}

absl::Status ControlClient::Apply(const v1::PolicySnapshot& snapshot, const std::string& source) {
  absl::Status valid = policy::ValidateSnapshot(snapshot, options_.capabilities);
  auto compiled = std::make_shared<AgentPolicy>();
  if (valid.ok()) {
    // The issuers' keys must be usable here: a key this agent cannot load is a NACK, not a
    // silent hole in authentication.
    std::vector<v1::Issuer> issuers(snapshot.issuers().begin(), snapshot.issuers().end());
    auto verifier = jwt::Verifier::FromIssuers(issuers);
    if (!verifier.ok()) {
      valid = absl::InvalidArgumentError(verifier.status().message());
    } else {
      compiled->verifier = std::make_shared<const jwt::Verifier>(*std::move(verifier));
      compiled->snapshot = snapshot;
    }
  }
  // A valid snapshot is enforced even when it cannot be saved (a full disk): the agent must not
  // keep enforcing an older policy, a revoked access or a loosened guardrail, because of its disk.
  // Only a restart before the disk recovers would start from the older snapshot on disk (and
  // take the new one again from the control plane).
  std::string persist_error;
  if (valid.ok() && source != "disk") {
    absl::Status st = SaveSnapshot(options_.data_dir, snapshot);
    if (!st.ok()) {
      persist_error = absl::StrCat("snapshot version ", snapshot.version(),
                                   " is enforced but could not be saved: ", st.message());
      LogError(persist_error);
    }
  }
  absl::MutexLock lock(&mu_);
  snapshot_persist_error_ = persist_error;
  if (!valid.ok()) {
    last_nack_version_ = snapshot.version();
    last_nack_error_ = std::string(valid.message());
    return valid;
  }
  policy_->Set(std::move(compiled));
  applied_version_ = snapshot.version();
  snapshot_source_ = source;
  LogInfo("applied snapshot version ", snapshot.version(), " from ", source, ": ",
          snapshot.connections_size(), " connection(s)");
  return absl::OkStatus();
}

void ControlClient::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ControlClient::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (active_context_ != nullptr) static_cast<grpc::ClientContext*>(active_context_)->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

std::string ControlClient::fatal_error() const {
  absl::MutexLock lock(&mu_);
  return fatal_error_;
}

void ControlClient::SetState(const std::string& state, const std::string& error) {
  absl::MutexLock lock(&mu_);
  if (state_ != state) state_since_ms_ = NowUnixMs();
  state_ = state;
  if (!error.empty()) last_error_ = error;
}

bool ControlClient::SleepFor(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  return !stopping_;
}

bool ControlClient::enrolled() const {
  absl::MutexLock lock(&mu_);
  return identity_.has_value();
}

std::optional<IssuedTlsFiles> FindIssuedTls(const std::string& data_dir) {
  IssuedTlsFiles f{data_dir + "/tls/listener.crt", data_dir + "/tls/listener.key",
                   data_dir + "/tls/agent-ca.crt"};
  for (const std::string* path : {&f.cert, &f.key, &f.ca}) {
    if (access(path->c_str(), R_OK) != 0) return std::nullopt;
  }
  return f;
}

std::string ControlClient::StatusJson() const {
  absl::MutexLock lock(&mu_);
  nlohmann::json connections = nlohmann::json::array();
  if (auto current = policy_->Get()) {
    for (const auto& c : current->snapshot.connections()) connections.push_back(c.name());
  }
  nlohmann::json j = {
      {"agent_id", identity_ ? identity_->agent_id : ""},
      {"state", state_},
      {"state_since_unix_ms", state_since_ms_},
      {"control_plane", options_.address},
      {"applied_version", applied_version_},
      {"snapshot_source", snapshot_source_},
      {"connections", connections},
      {"capabilities", options_.capabilities},
      {"last_error", last_error_},
      {"snapshot_persist_error", snapshot_persist_error_},
      {"last_nack_version", last_nack_version_},
      {"last_nack_error", last_nack_error_},
      {"reconnects", reconnects_},
      {"held_for_approval", options_.approvals != nullptr ? options_.approvals->held() : 0},
      {"fatal_error", fatal_error_}};
  if (options_.events != nullptr) {
    EventSink::Stats st = options_.events->stats();
    j["audit"] = {{"emitted", st.emitted},
                  {"queued", st.queued_events},
                  {"in_flight", st.in_flight_events},
                  {"buffer_bytes", st.bytes},
                  {"unspooled", st.unspooled_events},
                  {"unwritten", st.unwritten_events},
                  {"evicted", st.evicted_events},
                  {"spool_bytes", st.spool_bytes},
                  {"spool_segments", st.spool_segments},
                  {"spool_error", st.spool_error},
                  {"spool_error_since_unix_ms", st.spool_error_since_ms},
                  {"accepting_sessions", st.refusing.empty()},
                  {"refusing", st.refusing},
                  {"journal_overflows", st.journal_overflows},
                  {"inflight_uncovered", st.inflight_uncovered}};
  }
  return j.dump(2) + "\n";
}

ControlClient::LinkState ControlClient::link_state() const {
  absl::MutexLock lock(&mu_);
  return LinkState{applied_version_, state_ == "connected", reconnects_};
}

void ControlClient::Loop() {
  absl::BitGen rng;
  int attempt = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || !fatal_error_.empty()) return;
    }
    bool synced = ConnectOnce();
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || !fatal_error_.empty()) return;
      ++reconnects_;
    }
    if (synced) attempt = 0;
    absl::Duration cap = options_.initial_backoff * (1 << std::min(attempt, 16));
    if (cap > options_.max_backoff) cap = options_.max_backoff;
    ++attempt;
    // Full jitter: a fleet of agents does not reconnect in lock step after an outage.
    absl::Duration wait =
        absl::Milliseconds(absl::Uniform<double>(rng, 0.0, absl::ToDoubleMilliseconds(cap)));
    LogInfo("reconnecting to the control plane in ", absl::FormatDuration(wait));
    if (!SleepFor(wait)) return;
  }
}

bool ControlClient::EnsureIdentity() {
  {
    absl::MutexLock lock(&mu_);
    if (identity_) return true;
  }
  auto loaded = LoadIdentity(options_.data_dir);
  if (loaded.ok()) {
    absl::MutexLock lock(&mu_);
    identity_ = *std::move(loaded);
    return true;
  }
  if (!absl::IsNotFound(loaded.status())) {
    absl::MutexLock lock(&mu_);
    fatal_error_ = std::string(loaded.status().message());
    return false;
  }
  if (options_.enroll_token.empty()) {
    absl::MutexLock lock(&mu_);
    fatal_error_ =
        "this agent is not enrolled: start it once with --enroll-token (from "
        "`sluicectl agents enroll`)";
    return false;
  }
  return false;
}

// One connection: the channel's stub, the stream, and what the stream's writer thread shares
// with the reader.
struct ControlClient::Link {
  std::unique_ptr<v1::AgentService::Stub> stub;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControlMessage>> stream;
  absl::Mutex write_mu;
  bool done ABSL_GUARDED_BY(write_mu) = false;  // no more writes
  std::atomic<bool> stream_done{false};         // the writer stops
  std::string audit_reported;  // the audit state the control plane last heard (writer thread)
  bool write_failed = false;   // the reader's own write (an ACK/NACK) failed
};

bool ControlClient::ConnectOnce() {
  {
    absl::MutexLock lock(&mu_);
    std::string state = reconnects_ == 0 ? "connecting" : "reconnecting";
    if (state_ != state) state_since_ms_ = NowUnixMs();
    state_ = state;
  }
  Link link;
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options_.ca_pem;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  link.stub = v1::AgentService::NewStub(
      grpc::CreateCustomChannel(options_.address, grpc::SslCredentials(ssl), args));
  if (!EnsureIdentity() && !Enroll(&link)) return false;

  AgentIdentity id;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    id = *identity_;
    active_context_ = &link.ctx;
  }
  link.ctx.AddMetadata("authorization", absl::StrCat("Agent ", id.agent_id, ":", id.secret));
  link.stream = link.stub->Connect(&link.ctx);
  const bool hello_sent = link.stream->Write(Hello(id, &link.audit_reported));
  std::thread writer([this, &link] { WriteLoop(&link); });
  link.write_failed = !hello_sent;
  const bool synced = hello_sent && ReadLoop(&link);
  {
    absl::MutexLock lock(&link.write_mu);
    link.done = true;
  }
  link.stream_done.store(true);
  // Statements held for approval are denied: nobody can decide them now.
  if (options_.approvals != nullptr) options_.approvals->SetConnected(false);
  writer.join();
  EndStream(&link);
  return synced;
}

// Enrolls with the one-time token: true once the identity is saved; false with fatal_error_ set
// (refused), or to try again (the control plane unreachable).
bool ControlClient::Enroll(Link* link) {
  {
    absl::MutexLock lock(&mu_);
    if (!fatal_error_.empty()) return false;
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  v1::EnrollRequest req;
  req.set_audit_public_key(options_.audit_public_key);
  req.set_token(options_.enroll_token);
  req.set_agent_version(options_.agent_version);
  // The listener's key is made here and never leaves the agent; the control plane signs a
  // request for it.
  std::string listener_key;
  if (options_.request_certificate) {
    std::vector<std::string> names = LoopbackTlsNames();
    for (const auto& n : options_.tls_names) {
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    }
    auto key = GenerateEcPrivateKeyPem();
    auto csr = key.ok() ? CreateCsr(*key, "sluice-agent", names) : key.status();
    if (!csr.ok())
      return Fatal(absl::StrCat("cannot make the certificate request: ", csr.status().message()));
    listener_key = *key;
    req.set_tls_csr_pem(*csr);
  }
  v1::EnrollResponse resp;
  grpc::Status st = link->stub->Enroll(&ctx, req, &resp);
  if (!st.ok()) {
    std::string why = absl::StrCat("enrollment failed: ", st.error_message());
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE &&
        st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return Fatal(why);
    }
    SetState("connecting", why);
    LogWarning(why);
    return false;
  }
  if (!resp.tls_cert_pem().empty()) {
    const std::string dir = options_.data_dir + "/tls";
    absl::Status saved = EnsureDir(dir, 0700);
    if (saved.ok()) saved = WriteFileAtomic(dir + "/listener.key", listener_key, 0600);
    if (saved.ok()) saved = WriteFileAtomic(dir + "/listener.crt", resp.tls_cert_pem(), 0644);
    if (saved.ok()) saved = WriteFileAtomic(dir + "/agent-ca.crt", resp.tls_ca_pem(), 0644);
    if (!saved.ok())
      return Fatal(
          absl::StrCat("enrolled, but cannot save the listener certificate: ", saved.message()));
    LogInfo("listener certificate issued by the control plane's agent CA (", dir, "/agent-ca.crt)");
  } else if (!resp.tls_note().empty()) {
    LogWarning(resp.tls_note());
  }
  AgentIdentity id{
      resp.agent_id(), resp.agent_secret(), {resp.labels().begin(), resp.labels().end()}};
  if (absl::Status saved = SaveIdentity(options_.data_dir, id); !saved.ok()) {
    return Fatal(absl::StrCat("enrolled, but cannot save the identity: ", saved.message()));
  }
  LogInfo("enrolled as agent ", id.agent_id);
  absl::MutexLock lock(&mu_);
  identity_ = std::move(id);
  return true;
}

bool ControlClient::Fatal(std::string why) {
  absl::MutexLock lock(&mu_);
  fatal_error_ = std::move(why);
  return false;
}

// The stream's first message: who the agent is, what it applied, the audit state the control
// plane shows (`*audit_reported`), and where its audit chain stands.
v1::AgentMessage ControlClient::Hello(const AgentIdentity& id, std::string* audit_reported) {
  v1::AgentMessage hello_msg;
  v1::Hello* hello = hello_msg.mutable_hello();
  hello->set_agent_id(id.agent_id);
  const auto& labels = options_.labels.empty() ? id.labels : options_.labels;
  hello->mutable_labels()->insert(labels.begin(), labels.end());
  hello->set_agent_version(options_.agent_version);
  for (const auto& c : options_.capabilities) hello->add_capabilities(c);
  {
    absl::MutexLock lock(&mu_);
    hello->set_applied_version(applied_version_);
    hello->set_audit_public_key(options_.audit_public_key);
  }
  // Told again at once when it changes (agents list, metrics).
  *audit_reported = options_.events != nullptr ? options_.events->RefusalReason() : "";
  hello->set_audit_error(*audit_reported);
  if (options_.events != nullptr) {
    // Where the chain stands: the control plane compares it with what it holds (an agent whose
    // spool lost its tail in a crash goes on from its older head, and hears so in the first ack).
    EventSink::ChainStart chain = options_.events->chain_start();
    if (!chain.hash.empty()) {
      hello->set_chain_sequence(chain.sequence);
      hello->set_chain_hash(chain.hash);
      hello->set_own_sequences_from(chain.own_from);
    }
  }
  return hello_msg;
}

// The writer thread: messages for held statements, audit chunks as soon as events are queued, a
// heartbeat when idle or when the audit state changed.
void ControlClient::WriteLoop(Link* link) {
  absl::Time last_write = absl::Now();
  auto write = [link, &last_write](const v1::AgentMessage& m) {
    absl::MutexLock lock(&link->write_mu);
    if (link->done || !link->stream->Write(m)) return false;
    last_write = absl::Now();
    return true;
  };
  while (!link->stream_done.load()) {
    const bool have =
        options_.events != nullptr && options_.events->WaitForEvents(absl::Milliseconds(50));
    // Linger briefly so that a busy data path sends a few large chunks, not one per event.
    if (have) options_.events->WaitForChunk(EventSink::kLinger);
    if (link->stream_done.load()) break;
    if (options_.approvals != nullptr) {
      bool failed = false;
      for (auto& held : options_.approvals->TakeOutgoing()) {
        if (!write(held)) {
          failed = true;
          break;
        }
      }
      if (failed) break;
    }
    v1::AgentMessage out;
    if (have) {
      if (auto chunk = options_.events->TakeChunk())
        out.mutable_audit()->set_records(std::move(chunk->records));
    } else if (options_.events == nullptr) {
      absl::MutexLock lock(&link->write_mu);
      link->write_mu.AwaitWithTimeout(absl::Condition(&link->done), absl::Milliseconds(50));
    }
    std::string audit = options_.events != nullptr ? options_.events->RefusalReason() : "";
    if (audit != link->audit_reported &&
        out.has_audit()) {  // a busy agent tells it before its events
      v1::AgentMessage beat;
      beat.mutable_heartbeat()->set_time_unix_ms(NowUnixMs());
      beat.mutable_heartbeat()->set_audit_error(audit);
      if (!write(beat)) break;
      link->audit_reported = audit;
    }
    if (!out.has_audit()) {
      if (absl::Now() - last_write < options_.heartbeat_interval && audit == link->audit_reported)
        continue;
      out.mutable_heartbeat()->set_time_unix_ms(NowUnixMs());
      out.mutable_heartbeat()->set_audit_error(audit);
      link->audit_reported = std::move(audit);
    }
    if (!write(out)) break;
  }
}

// Reads the control plane's messages until the stream ends; true when a snapshot came.
bool ControlClient::ReadLoop(Link* link) {
  bool synced = false;
  v1::ControlMessage msg;
  while (link->stream->Read(&msg)) {
    if (msg.has_snapshot()) {
      if (!synced) {
        synced = true;
        SetState("connected", "");
        if (options_.approvals != nullptr) options_.approvals->SetConnected(true);
      }
      v1::AgentMessage answer = AnswerSnapshot(msg.snapshot());
      absl::MutexLock lock(&link->write_mu);
      if (!link->stream->Write(answer)) {
        link->write_failed = true;
        break;
      }
    } else if (msg.has_audit_ack()) {
      OnAuditAck(msg.audit_ack());
    } else if (msg.has_approval_registered()) {
      if (options_.approvals != nullptr)
        options_.approvals->OnRegistered(msg.approval_registered());
    } else if (msg.has_approval_decision()) {
      if (options_.approvals != nullptr) options_.approvals->OnDecision(msg.approval_decision());
    } else {
      LogWarning("ignoring a control message this agent does not handle yet (case ",
                 static_cast<int>(msg.msg_case()), ")");
    }
  }
  return synced;
}

// Applies a pushed snapshot; the ACK, or the NACK with why it was rejected.
v1::AgentMessage ControlClient::AnswerSnapshot(const v1::SnapshotPush& push) {
  const v1::PolicySnapshot& snap = push.snapshot();
  v1::AgentMessage answer;
  absl::Status applied = Apply(snap, "control-plane");
  if (applied.ok()) {
    answer.mutable_ack()->set_version(snap.version());
    answer.mutable_ack()->set_nonce(push.nonce());
  } else {
    LogWarning("rejected snapshot version ", snap.version(), ": ", applied.message());
    answer.mutable_nack()->set_version(snap.version());
    answer.mutable_nack()->set_nonce(push.nonce());
    answer.mutable_nack()->set_error(std::string(applied.message()));
  }
  return answer;
}

void ControlClient::OnAuditAck(const v1::AuditAck& ack) {
  if (options_.events == nullptr) return;
  if (ack.has_resumed()) {
    const v1::ChainResume& r = ack.resumed();
    if (!options_.events->ChainResumed(r.resumed_after_sequence(), r.resumed_after_hash(),
                                       r.held_through_sequence(), r.held_records(),
                                       r.time_unix_ms())) {
      LogWarning("the control plane reports a resume of the audit chain after sequence ",
                 r.resumed_after_sequence(),
                 ", which is not where this agent's chain started; ignored");
    }
  }
  options_.events->Ack(ack.committed_sequence());
}

// After the reader and the writer stopped: what was sent but not acknowledged goes again on the
// next stream; the stream's end is logged and shown.
void ControlClient::EndStream(Link* link) {
  if (options_.events != nullptr) options_.events->Requeue();
  if (link->write_failed)
    link->ctx.TryCancel();  // the stream may still be open; make Finish return
  grpc::Status st = link->stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    active_context_ = nullptr;
  }
  std::string why = st.ok() ? "the control plane closed the stream"
                            : absl::StrCat("stream ended: ", st.error_message());
  if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
      st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    LogError(why);
  } else {
    LogWarning(why);
  }
  SetState("reconnecting", why);
}

}  // namespace sluice::agent
