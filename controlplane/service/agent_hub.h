// The control plane's view of its agents: their credentials (cached from the store), the live
// streams, and the snapshot each one was sent. When the policy changes, PushState cuts a
// snapshot per connected agent and sends it only to the agents whose view changed. While a staged
// rollout is in progress the state carries the previous version's state too, and agents outside
// its canary are served that (StateFor in snapshot_builder.h).
//
// Thread-safe. Lock order: AgentHub::mu_ before any stream's own lock; streams never call into
// the hub while holding their lock.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/snapshot/snapshot_builder.h"
#include "controlplane/store/store.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::controlplane {

// What the hub needs from a live agent stream.
class AgentStreamHandle {
 public:
  virtual ~AgentStreamHandle() = default;
  virtual const std::string& agent_id() const = 0;
  virtual const Labels& labels() const = 0;
  // Queues a message; never blocks.
  virtual void Send(v1::ControlMessage message) = 0;
  // Ends the stream with an error (e.g. replaced by a newer connection of the same agent).
  virtual void Close(const std::string& reason) = 0;
};

// The live part of an agent's status.
struct LiveAgentStatus {
  bool connected = false;
  uint64_t desired_version = 0;  // version of the last snapshot sent
  uint64_t applied_version = 0;  // version of the last ACK on this stream
  // The version of the state the agent's view was last compared at: its last snapshot is that
  // version's view for it, sent (desired_version) or found unchanged (desired_version is older).
  uint64_t checked_version = 0;
  std::string pending_nonce;
  // Why the agent refuses new sessions for its audit trail, as it last said (Hello, Heartbeat);
  // empty while it accepts them.
  std::string audit_error;
  int64_t audit_error_since_ms = 0;  // when it was first heard
};

class AgentHub {
 public:
  void LoadCredentials(const std::vector<AgentRecord>& agents);
  void AddCredential(const AgentRecord& agent);

  // Checks an agent's id and secret; returns its enrolled labels.
  std::optional<Labels> Authenticate(const std::string& agent_id, const std::string& secret) const;

  // Sets the policy state new streams get their first snapshot from.
  void SetState(std::shared_ptr<const PolicyState> state);
  // Sets the state and pushes new snapshots to every connected agent whose view changed.
  // Returns the number of agents a snapshot was sent to.
  int PushState(std::shared_ptr<const PolicyState> state);

  // Registers a stream after its Hello and sends it the current snapshot. A previous stream of
  // the same agent is closed.
  void Register(AgentStreamHandle* stream);
  void Unregister(AgentStreamHandle* stream);

  // Records an ACK; false when the nonce is not the one last sent (a stale answer).
  bool OnAck(AgentStreamHandle* stream, uint64_t version, const std::string& nonce);
  bool OnNack(AgentStreamHandle* stream, uint64_t version, const std::string& nonce);
  // Records what the agent says of its audit trail (Hello.audit_error, Heartbeat.audit_error);
  // true when it changed.
  bool SetAuditError(AgentStreamHandle* stream, const std::string& error, int64_t now_ms);
  // Connected agents refusing new sessions for their audit trail.
  size_t audit_refusing_count() const;

  // Sends a message to the agent's live stream, if it has one.
  bool SendTo(const std::string& agent_id, v1::ControlMessage message);

  // The store refused a write of this agent's stream for a disk fault (an audit batch, or what
  // Hello stores): the batch was not acknowledged, and the stream drops what it sends after it.
  // ClosePaused ends such streams once the store takes writes again: each agent reconnects and
  // sends everything not acknowledged, in order. Returns how many were closed.
  void NotePaused(const std::string& agent_id);
  // Ends the agent's live stream, if it has one, with `reason` (it reconnects).
  void Close(const std::string& agent_id, const std::string& reason);
  int ClosePaused(const std::string& reason);

  std::map<std::string, LiveAgentStatus> LiveStatus() const;
  size_t connected_count() const;
  std::shared_ptr<const PolicyState> state() const;
  uint64_t version() const;

 private:
  struct Live {
    AgentStreamHandle* stream = nullptr;
    std::string digest;  // content digest of the last snapshot sent
    LiveAgentStatus status;
  };
  struct Credential {
    std::string secret_hash;
    Labels labels;
  };
  // Sends `snap` (cut for this agent from state_, with its content digest).
  void SendSnapshotLocked(Live& live, v1::PolicySnapshot snap, std::string digest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Credential> credentials_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Live> live_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> paused_ ABSL_GUARDED_BY(mu_);  // NotePaused
  std::shared_ptr<const PolicyState> state_ ABSL_GUARDED_BY(mu_) = std::make_shared<PolicyState>();
};

}  // namespace sluice::controlplane
