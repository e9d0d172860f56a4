// The agent's Cloud Storage port: HTTPS (HTTP/1.1, keep-alive, chunked bodies; cpp-httplib's
// server on its own thread pool — the data-path event loops serve the database protocols), the
// Cloud Storage JSON API as Google serves it, under an optional first path segment naming the
// Connection (`https://agent:port/<connection>/storage/v1/...`; without it, the agent's only
// `gcs` Connection).
//
// Each request is a session of one statement for the audit trail: the caller's OIDC JWT as the
// bearer token is admitted by the session core (token, access rule, session limits), the request
// is classified (agent/gcs/classify.h) and decided by the statement gate and the Connection's
// guardrails, its Authorization replaced by an access token of the Connection's service account
// (agent/gcs/access_tokens.h), and it is forwarded; the answer goes back with the upstream's
// status and its content headers. Refusals are Google's JSON error shape with the reason, and an
// event.
//
// A require_approval guardrail holds the request on its server thread until approvers decide
// (the caller just waits), then forwards it or answers 403 with the decision.
//
// A batch (POST /batch/storage/v1, multipart/mixed) is split into its requests (batch.h), each
// decided on its own like a request of its own and sent to the service alone; their answers go
// back as one multipart/mixed answer, in order, by Content-ID. A batch carries JSON API calls
// only, as at the service (no uploads, object bytes or nested batches).
//
// Resumable uploads: the start is decided like any upload; the service's session URI stays at the
// agent (upload_sessions.h), and the caller gets the agent's, bound to it. Each later step is
// that caller's only, re-decided as a write of the same object, and forwarded to the kept URI.
//
// Each request is recorded (recorder.h): its head and body, and the answer as the caller got it
// (masked), bodies capped by `recording`.
//
// A held request whose caller goes away (its connection closed) is withdrawn, as a cancel would:
// its approval request is cancelled and nothing is sent to the service.
//
// Bodies: an object's bytes (a media upload, a resumable upload's step) stream to the service as
// the caller sends them, through a window of 1 MiB, once the request is decided; other bodies
// (JSON metadata, multipart uploads, batches) are read whole first, up to `max_body_bytes` (413
// beyond), since what they say is part of the decision. Answers of declared length that are not
// JSON (an object's bytes) are streamed through a window of 1 MiB; JSON answers (whose links are
// rewritten) and answers of unknown length are held whole up to `max_body_bytes` (502 beyond).
#pragma once

#include <httplib.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/approvals/broker.h"
#include "agent/audit/event_sink.h"
#include "agent/audit/inflight.h"
#include "agent/gcs/access_tokens.h"
#include "agent/gcs/bigquery_jobs.h"
#include "agent/gcs/classify.h"
#include "agent/gcs/service_clients.h"
#include "agent/gcs/upload_sessions.h"
#include "agent/policy_holder.h"
#include "agent/session/admission.h"
#include "agent/session/limits.h"
#include "agent/session/recorder.h"
#include "agent/session/session_audit.h"
#include "common/cloud/service_account.h"

namespace sluice::agent::gcs {

struct ListenerOptions {
  std::string listen = "127.0.0.1:8443";
  std::string tls_cert_file;
  std::string tls_key_file;
  size_t max_body_bytes = 32 << 20;
  EventSink* events = nullptr;
  InflightTable* inflight = nullptr;    // may be null
  SessionLimiter* limiter = nullptr;    // may be null
  ApprovalBroker* approvals = nullptr;  // requests held for approval; null = none can be held
  session::RecordingLimits recording;   // what of each body the recording keeps (recorder.h)
};

class Listener {
 public:
  Listener(ListenerOptions options, PolicyHolder* policy);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds and serves on background threads; returns the bound port.
  absl::StatusOr<int> Start();
  void Stop();

 private:
  struct Exchange;
  struct Call;
  struct Verdict;
  struct Reply;

  // `reader`: the caller's body, unread (POST, PUT, PATCH, DELETE); null when there is none.
  void Handle(const httplib::Request& req, httplib::Response& res,
              const httplib::ContentReader* reader);
  // One call of an admitted caller: classified, its ownership and masking checked, decided by
  // the gate and the guardrails (held for approval when they say so), every refusal on record.
  Verdict Decide(Exchange& x, const Call& c);
  // The request for the service: the call with an allow-list of its headers and the service
  // account's token.
  httplib::Request Outbound(const Exchange& x, const Call& c, const Verdict& v) const;
  // A whole answer from the service made the caller's: its event, links rewritten, masked, a
  // resumable upload's session URI kept and replaced; a 502 when there was none.
  Reply Conclude(Exchange& x, const Call& c, const Verdict& v, bool answered, int status,
                 const httplib::Headers& headers, std::string body, const std::string& error,
                 absl::Time started);
  // A BigQuery answer (200) made the caller's: a job it created bound to it, query results
  // masked (`*rows_masked`: rows were, detectors included). An error when they cannot be.
  absl::Status BigQueryAnswer(const Exchange& x, const Verdict& v, std::string* body,
                              audit::StatementEvent* event, bool* rows_masked);
  // A batch (POST /batch/storage/v1): each request in it decided and sent on its own, the
  // answers gathered into one multipart/mixed answer.
  Reply Batch(Exchange& x, const Call& batch);
  // A request a guardrail holds: its approval request, the wait, the approval event; the
  // decision (Allow when approved).
  // The caller going away while it waits withdraws the request (refused as cancelled).
  session::Decision Hold(const Exchange& x, const audit::StatementText& text,
                         const session::GuardrailDecision& d);
  // A resumable upload the service started: its session URI (`service_location`) is kept, bound
  // to the caller; returns the agent's URI for it, as the caller reached the agent (`host`,
  // `prefix`, the upload's `path`).
  absl::StatusOr<std::string> OpenUpload(const GcsRequest& request, const audit::Who& who,
                                         uint64_t policy_version, const v1::Upstream& up,
                                         absl::string_view service_location, absl::string_view host,
                                         absl::string_view prefix, absl::string_view path);

  ListenerOptions options_;
  PolicyHolder* policy_;
  AccessTokens tokens_;
  UploadSessions uploads_;
  BigQueryJobs jobs_;
  // The Connection's service-account key, parsed (and checked) once per key.
  absl::StatusOr<cloud::ServiceAccountKey> KeyOf(const std::string& json);
  static int CallerSocket(const std::string& peer_addr, int peer_port, int local_port);
  static bool CallerGone(int socket);

  static constexpr size_t kMaxKeys = 256;
  absl::Mutex keys_mu_;
  absl::flat_hash_map<std::string, cloud::ServiceAccountKey> keys_ ABSL_GUARDED_BY(keys_mu_);
  int port_ = 0;  // bound
  std::shared_ptr<ServiceClients> clients_ = std::make_shared<ServiceClients>();
  std::unique_ptr<httplib::SSLServer> server_;
  std::unique_ptr<httplib::ThreadPool> pipes_;  // the service's side of each answer
  std::thread thread_;
};

}  // namespace sluice::agent::gcs
