// The agent's link to the control plane. Dials out over TLS, enrolls once with the one-time
// token, then keeps one stream open: Hello, then for each pushed snapshot validate it whole,
// apply and persist it, and answer ACK or NACK with the reason. When the stream breaks it keeps
// enforcing the last good snapshot and reconnects with exponential backoff and full jitter.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/approvals/broker.h"
#include "agent/audit/event_sink.h"
#include "agent/policy_holder.h"
#include "agent/state_files.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::agent {

struct ControlClientOptions {
  std::string address;                        // control plane host:port
  std::string ca_pem;                         // CA the control plane's certificate chains to
  std::string enroll_token;                   // used once, when the data dir holds no identity
  std::map<std::string, std::string> labels;  // sent in Hello; must match the enrollment
  std::string data_dir;
  std::vector<std::string> capabilities;  // protocols this agent serves
  std::string agent_version;
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(30);
  absl::Duration heartbeat_interval = absl::Seconds(10);
  EventSink* events = nullptr;          // audit events to stream (not owned); may be null
  ApprovalBroker* approvals = nullptr;  // held statements (not owned); may be null
  std::string audit_public_key;  // Ed25519 (raw) of the audit checkpoint key, sent at enrollment
                                 // and in Hello
  // Ask the control plane at enrollment for a certificate for the data-path listeners, for these
  // names (loopback names are always asked for too). Stored as <data_dir>/tls/listener.*.
  bool request_certificate = false;
  std::vector<std::string> tls_names;
};

// The listener certificate from enrollment, when the control plane issued one.
struct IssuedTlsFiles {
  std::string cert;  // <data_dir>/tls/listener.crt
  std::string key;   // <data_dir>/tls/listener.key (0600)
  std::string ca;    // <data_dir>/tls/agent-ca.crt: what clients trust
};
// The files, when all three exist.
std::optional<IssuedTlsFiles> FindIssuedTls(const std::string& data_dir);

class ControlClient {
 public:
  ControlClient(ControlClientOptions options, PolicyHolder* policy);
  ~ControlClient();

  // Starts from the snapshot on disk, if there is a valid one. Returns its version (0 = none).
  uint64_t LoadFromDisk();
  // Validates `snapshot` whole against this agent; applies and persists it when valid. An
  // InvalidArgument error says why it was rejected.
  absl::Status Apply(const v1::PolicySnapshot& snapshot, const std::string& source);

  void Start();
  void Stop();

  // A permanent error (e.g. enrollment refused): the agent cannot go on.
  std::string fatal_error() const;
  // The agent has its identity (enrolled now or earlier).
  bool enrolled() const;
  // The agent's status as JSON, for /status.
  std::string StatusJson() const;
  // What /metrics shows of the link (agent/agent_metrics.h).
  struct LinkState {
    uint64_t applied_version = 0;  // of the snapshot enforced now (0: none)
    bool connected = false;        // a stream is up and has sent a snapshot
    uint64_t reconnects = 0;
  };
  LinkState link_state() const;

 private:
  struct Link;  // one connection (control_client.cc)

  void Loop();
  // One connection attempt; returns true when the stream got as far as a snapshot.
  bool ConnectOnce();
  bool EnsureIdentity();
  bool Enroll(Link* link);
  bool Fatal(std::string why);  // sets fatal_error_; false
  v1::AgentMessage Hello(const AgentIdentity& id, std::string* audit_reported);
  void WriteLoop(Link* link);
  bool ReadLoop(Link* link);
  v1::AgentMessage AnswerSnapshot(const v1::SnapshotPush& push);
  void OnAuditAck(const v1::AuditAck& ack);
  void EndStream(Link* link);
  void SetState(const std::string& state, const std::string& error);
  bool SleepFor(absl::Duration d);  // false when stopping

  ControlClientOptions options_;
  PolicyHolder* policy_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  void* active_context_ ABSL_GUARDED_BY(mu_) = nullptr;  // grpc::ClientContext of the live stream
  std::optional<AgentIdentity> identity_ ABSL_GUARDED_BY(mu_);
  std::string state_ ABSL_GUARDED_BY(mu_) = "starting";
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::string fatal_error_ ABSL_GUARDED_BY(mu_);
  std::string snapshot_source_ ABSL_GUARDED_BY(mu_);
  uint64_t applied_version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_nack_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_nack_error_ ABSL_GUARDED_BY(mu_);
  std::string snapshot_persist_error_
      ABSL_GUARDED_BY(mu_);  // the last snapshot was enforced, not saved
  uint64_t reconnects_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t state_since_ms_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::agent
