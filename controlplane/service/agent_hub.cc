#include "controlplane/service/agent_hub.h"

#include <algorithm>

#include "common/crypto.h"
#include "common/log.h"

namespace sluice::controlplane {

void AgentHub::LoadCredentials(const std::vector<AgentRecord>& agents) {
  for (const auto& a : agents) AddCredential(a);
}

void AgentHub::AddCredential(const AgentRecord& agent) {
  absl::MutexLock lock(&mu_);
  credentials_[agent.id] = Credential{agent.secret_hash, agent.labels};
}

std::optional<Labels> AgentHub::Authenticate(const std::string& agent_id,
                                             const std::string& secret) const {
  std::string hash = Sha256Hex(secret);
  absl::MutexLock lock(&mu_);
  auto it = credentials_.find(agent_id);
  if (it == credentials_.end() || !ConstantTimeEquals(it->second.secret_hash, hash)) {
    return std::nullopt;
  }
  return it->second.labels;
}

void AgentHub::SetState(std::shared_ptr<const PolicyState> state) {
  absl::MutexLock lock(&mu_);
  state_ = std::move(state);
}

void AgentHub::SendSnapshotLocked(Live& live, v1::PolicySnapshot snap, std::string digest) {
  live.digest = std::move(digest);
  live.status.desired_version = snap.version();
  live.status.pending_nonce = RandomHex(8);
  v1::ControlMessage msg;
  *msg.mutable_snapshot()->mutable_snapshot() = std::move(snap);
  msg.mutable_snapshot()->set_nonce(live.status.pending_nonce);
  live.stream->Send(std::move(msg));
}

int AgentHub::PushState(std::shared_ptr<const PolicyState> state) {
  absl::MutexLock lock(&mu_);
  state_ = std::move(state);
  int pushed = 0;
  for (auto& [id, live] : live_) {
    v1::PolicySnapshot snap = BuildSnapshot(*state_, live.stream->labels());
    std::string digest = SnapshotDigest(snap);
    live.status.checked_version = snap.version();
    if (digest == live.digest) continue;
    SendSnapshotLocked(live, std::move(snap), std::move(digest));
    ++pushed;
  }
  return pushed;
}

void AgentHub::Register(AgentStreamHandle* stream) {
  absl::MutexLock lock(&mu_);
  Live& live = live_[stream->agent_id()];
  if (live.stream != nullptr && live.stream != stream) {
    live.stream->Close("replaced by a newer connection of the same agent");
  }
  live = Live{};
  live.stream = stream;
  live.status.connected = true;
  v1::PolicySnapshot snap = BuildSnapshot(*state_, stream->labels());
  std::string digest = SnapshotDigest(snap);
  live.status.checked_version = snap.version();
  SendSnapshotLocked(live, std::move(snap), std::move(digest));
}

void AgentHub::Unregister(AgentStreamHandle* stream) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(stream->agent_id());
  if (it != live_.end() && it->second.stream == stream) live_.erase(it);
}

bool AgentHub::OnAck(AgentStreamHandle* stream, uint64_t version, const std::string& nonce) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(stream->agent_id());
  if (it == live_.end() || it->second.stream != stream ||
      it->second.status.pending_nonce != nonce) {
    return false;
  }
  it->second.status.applied_version = version;
  return true;
}

bool AgentHub::OnNack(AgentStreamHandle* stream, uint64_t /*version*/, const std::string& nonce) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(stream->agent_id());
  return it != live_.end() && it->second.stream == stream &&
         it->second.status.pending_nonce == nonce;
}

bool AgentHub::SetAuditError(AgentStreamHandle* stream, const std::string& error, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(stream->agent_id());
  if (it == live_.end() || it->second.stream != stream || it->second.status.audit_error == error)
    return false;
  if (it->second.status.audit_error.empty()) it->second.status.audit_error_since_ms = now_ms;
  if (error.empty()) it->second.status.audit_error_since_ms = 0;
  it->second.status.audit_error = error;
  return true;
}

size_t AgentHub::audit_refusing_count() const {
  absl::MutexLock lock(&mu_);
  return static_cast<size_t>(std::count_if(live_.begin(), live_.end(), [](const auto& kv) {
    return !kv.second.status.audit_error.empty();
  }));
}

bool AgentHub::SendTo(const std::string& agent_id, v1::ControlMessage message) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(agent_id);
  if (it == live_.end()) return false;
  it->second.stream->Send(std::move(message));
  return true;
}

void AgentHub::NotePaused(const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  paused_.insert(agent_id);
}

void AgentHub::Close(const std::string& agent_id, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(agent_id);
  if (it != live_.end()) it->second.stream->Close(reason);
}

int AgentHub::ClosePaused(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  int closed = 0;
  for (const std::string& id : paused_) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;  // gone already: it sends everything again when it returns
    it->second.stream->Close(reason);
    ++closed;
  }
  paused_.clear();
  return closed;
}

std::map<std::string, LiveAgentStatus> AgentHub::LiveStatus() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, LiveAgentStatus> out;
  for (const auto& [id, live] : live_) out[id] = live.status;
  return out;
}

size_t AgentHub::connected_count() const {
  absl::MutexLock lock(&mu_);
  return live_.size();
}

std::shared_ptr<const PolicyState> AgentHub::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

uint64_t AgentHub::version() const {
  absl::MutexLock lock(&mu_);
  return state_->version;
}

}  // namespace sluice::controlplane
