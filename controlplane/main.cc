// sluice-controlplane: stores policy in SQLite, streams per-agent snapshots to agents over gRPC,
// serves the admin API, and a small HTTP port for health and metrics.
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/daemon.h"
#include "common/files.h"
#include "common/html.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "controlplane/approvals/desk.h"
#include "controlplane/approvals/webhooks.h"
#include "controlplane/service/admin_service.h"
#include "controlplane/service/agent_hub.h"
#include "controlplane/service/agent_service.h"
#include "controlplane/service/dev_issuer.h"
#include "controlplane/service/jwks_fetcher.h"
#include "controlplane/service/master_keys.h"
#include "controlplane/service/metrics.h"
#include "controlplane/service/policy_manager.h"
#include "controlplane/service/retention.h"
#include "controlplane/service/worker.h"
#include "controlplane/store/backup.h"
#include "controlplane/store/disk_fault.h"
#include "controlplane/store/guarded_store.h"
#include "controlplane/store/sqlite_store.h"

ABSL_FLAG(std::string, data_dir, "./sluice-data",
          "directory for the SQLite database, keys, certificates and tokens (created 0700)");
ABSL_FLAG(std::string, grpc_listen, "0.0.0.0:7443",
          "address of the TLS gRPC port (AgentService and AdminService); port 0 = any free port");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:7080",
          "address of the HTTP port (/healthz, /readyz, /metrics); port 0 = any free port");
ABSL_FLAG(std::string, tls_cert, "",
          "server certificate chain (PEM); without it a private CA and a server certificate are "
          "created in the data dir");
ABSL_FLAG(std::string, tls_key, "", "server private key (PEM), with --tls-cert");
ABSL_FLAG(std::string, agent_ca_cert, "",
          "CA certificate (PEM) that signs agents' data-path certificates at enrollment; default: "
          "the control plane's own CA when it made one in <data-dir>/tls");
ABSL_FLAG(std::string, agent_ca_key, "", "private key (PEM) of --agent-ca-cert");
ABSL_FLAG(std::string, tls_hosts, "",
          "extra comma-separated host names or IPs for the generated server certificate");
ABSL_FLAG(std::string, master_key_file, "",
          "32-byte key (64 hex chars) that encrypts secrets at rest; created 0600 if absent "
          "(default: <data-dir>/master.key)");
ABSL_FLAG(std::string, backup_to, "",
          "back up the store of --data-dir (the database as of one instant, then the recordings) "
          "into this new or empty directory, and exit; the control plane may be running. Keys "
          "are not copied (docs/deploy.md, \"Back up\")");
ABSL_FLAG(std::string, previous_master_key_file, "",
          "the master key this data dir used until now, to change keys: everything sealed under "
          "it is sealed again under --master-key-file at start, in one transaction (keep giving "
          "it until the start has logged the change; docs/deploy.md)");
ABSL_FLAG(
    std::string, trail_key_file, "",
    "Ed25519 private key (PEM) that signs each agent's audit trail head, the trails' totals and "
    "retention's purge tombstones, so that `audit verify` can prove the stored trails complete; "
    "created 0600 if absent (default: <data-dir>/trail-key.pem)");
ABSL_FLAG(std::string, admin_token_file, "",
          "bootstrap admin token; created 0600 if absent (default: <data-dir>/admin.token)");
ABSL_FLAG(bool, dev_issuer, false,
          "run a development token issuer (Issuer 'sluice-dev'; `sluicectl token` mints tokens). "
          "For quickstarts and tests only");
ABSL_FLAG(absl::Duration, jwks_refresh, absl::Minutes(10),
          "how often Issuer JWKS URLs are fetched again (also after every policy change)");
ABSL_FLAG(
    std::string, admin_groups, "",
    "comma-separated groups whose OIDC callers (tokens from the policy's Issuers) hold the admin "
    "role on the admin API");
ABSL_FLAG(std::string, auditor_groups, "",
          "comma-separated groups whose OIDC callers hold the auditor role (reads)");
ABSL_FLAG(
    std::string, approver_groups, "",
    "comma-separated groups whose OIDC callers hold the approver role (anyone an ApprovalPolicy "
    "lists as an approver has it too)");
ABSL_FLAG(std::string, public_url, "",
          "the HTTP port's URL as approvers reach it, for approval callback links in webhooks "
          "(default: http://<the HTTP listen address>)");
ABSL_FLAG(absl::Duration, retention_interval, absl::Hours(1),
          "how often the retention purge runs (RetentionPolicy resources say what it purges); 0 = "
          "only on `sluicectl retention purge`");
ABSL_FLAG(bool, verbose, false, "log debug messages");

namespace sluice::controlplane {
namespace {

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty()))
    out.emplace_back(absl::StripAsciiWhitespace(p));
  return out;
}

HttpServer::Response Page(int status, const std::string& title, const std::string& body_html) {
  HttpServer::Response r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = absl::StrCat("<!doctype html><html><head><meta charset=\"utf-8\"><title>",
                        HtmlEscape(title), "</title></head><body><h1>", HtmlEscape(title), "</h1>",
                        body_html, "</body></html>\n");
  return r;
}

// Runs `fn` on the store worker and waits for its answer (HTTP handlers run on their own thread).
template <typename Fn>
auto OnWorker(Worker& worker, Fn fn) -> decltype(fn()) {
  std::promise<decltype(fn())> done;
  auto answer = done.get_future();
  worker.Post([&done, &fn] { done.set_value(fn()); });
  return answer.get();
}

// The approval callback link pages: GET shows the request and a button (link previewers fetch
// GET, so it never decides); POST decides, once.
void AddApprovalLinks(HttpServer& http, Worker& worker, ApprovalDesk& desk, PolicyManager& policy,
                      Store& store) {
  auto check = [&desk](const HttpServer::Request& req, uint64_t* id, bool* approve,
                       std::string* webhook, int64_t* exp) -> absl::Status {
    if (req.matches.size() != 2 || !absl::SimpleAtoi(req.matches[0], id))
      return absl::InvalidArgumentError("bad link");
    *approve = req.matches[1] == "approve";
    auto get = [&req](const char* k) {
      auto it = req.params.find(k);
      return it == req.params.end() ? std::string() : it->second;
    };
    *webhook = get("webhook");
    if (!absl::SimpleAtoi(get("exp"), exp)) return absl::InvalidArgumentError("bad link");
    return desk.CheckLink(*id, *approve, *webhook, *exp, get("sig"), NowUnixMs());
  };
  http.AddGet(R"(/approvals/(\d+)/(approve|deny))", [&, check](const HttpServer::Request& req) {
    uint64_t id = 0;
    bool approve = false;
    std::string webhook;
    int64_t exp = 0;
    absl::Status ok = check(req, &id, &approve, &webhook, &exp);
    if (!ok.ok())
      return Page(403, "Sluice approval", "<p>" + HtmlEscape(std::string(ok.message())) + "</p>");
    auto record = OnWorker(worker, [&] { return store.GetApproval(id); });
    if (!record.ok())
      return Page(404, "Sluice approval",
                  "<p>" + HtmlEscape(std::string(record.status().message())) + "</p>");
    const v1::Approval& a = record->approval;
    std::string query =
        absl::StrCat("webhook=", webhook, "&exp=", exp, "&sig=", req.params.at("sig"));
    std::string body =
        absl::StrCat("<p>Request ", id, " (", HtmlEscape(a.status()), "): <b>",
                     HtmlEscape(a.subject()), "</b> on connection <b>", HtmlEscape(a.connection()),
                     "</b>, guardrail ", HtmlEscape(a.guardrail()), " (", HtmlEscape(a.rule()),
                     ").</p><pre>", HtmlEscape(a.statement()), "</pre>");
    if (a.status() == kPending) {
      absl::StrAppend(&body, "<form method=\"post\" action=\"/approvals/", id, "/",
                      approve ? "approve" : "deny", "?", HtmlEscape(query),
                      "\"><label>Reason <input name=\"reason\" maxlength=\"1000\"></label> ",
                      "<button type=\"submit\">", approve ? "Approve" : "Deny", " request ", id,
                      "</button></form>");
    }
    return Page(200, absl::StrCat("Sluice approval request ", id), body);
  });
  http.AddPost(R"(/approvals/(\d+)/(approve|deny))", [&, check](const HttpServer::Request& req) {
    uint64_t id = 0;
    bool approve = false;
    std::string webhook;
    int64_t exp = 0;
    absl::Status ok = check(req, &id, &approve, &webhook, &exp);
    if (!ok.ok())
      return Page(403, "Sluice approval", "<p>" + HtmlEscape(std::string(ok.message())) + "</p>");
    auto it = req.params.find("reason");
    std::string reason = it == req.params.end() ? "" : it->second.substr(0, 1000);
    Approver who;
    who.link_webhook = webhook;
    auto decided = OnWorker(worker, [&] {
      return desk.Decide(id, who, approve, reason, *policy.state(), NowUnixMs());
    });
    if (!decided.ok())
      return Page(409, "Sluice approval",
                  "<p>" + HtmlEscape(std::string(decided.status().message())) + "</p>");
    return Page(
        200, absl::StrCat("Sluice approval request ", id),
        absl::StrCat("<p>Recorded: ", approve ? "approved" : "denied", ". The request is now <b>",
                     HtmlEscape(decided->status()), "</b>.</p>"));
  });
}

absl::StatusOr<std::string> LoadOrCreateToken(const std::string& path, bool* created) {
  *created = false;
  if (!FileExists(path)) {
    std::string token = "sluice-admin-" + RandomHex(24);
    RETURN_IF_ERROR(WriteFileAtomic(path, token + "\n", 0600));
    *created = true;
    return token;
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4096));
  std::string token(absl::StripAsciiWhitespace(text));
  if (token.size() < 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin token in ", path, " is shorter than 16 characters"));
  }
  return token;
}

// The data directory's volume holds the store: the SQLite database and its write-ahead log, and
// the session recordings, which grow with every agent's audit events. A volume smaller than this
// cannot serve, and one with less free than kMinFreeBytes would fill up at once: the control
// plane says so and does not start.
constexpr uint64_t kMinVolumeBytes = 32 << 20;
constexpr uint64_t kMinFreeBytes = 16 << 20;

absl::Status CheckDataVolume(const std::string& dir) {
  ASSIGN_OR_RETURN(VolumeSpace v, VolumeSpaceOf(dir));
  if (v.read_only) {
    return absl::FailedPreconditionError(
        absl::StrCat("the volume holding ", dir,
                     " is mounted read-only; the control plane writes its store "
                     "there: give --data-dir a writable volume"));
  }
  if (v.total_bytes < kMinVolumeBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("the volume holding ", dir, " is ", FormatBytes(v.total_bytes),
                     "; the control plane needs at least ", FormatBytes(kMinVolumeBytes),
                     " for its store (the SQLite database, its write-ahead log and the session "
                     "recordings): give --data-dir a larger volume"));
  }
  if (v.free_bytes < kMinFreeBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the volume holding ", dir, " has ", FormatBytes(v.free_bytes), " free of ",
        FormatBytes(v.total_bytes), "; the control plane needs at least ",
        FormatBytes(kMinFreeBytes),
        " free to start (its store grows there "
        "with the agents' audit events): free space on it or give --data-dir a larger volume"));
  }
  return absl::OkStatus();
}

// Twice a second on the store worker: approval expiry; while the store refuses writes (a disk
// fault of the data directory), an attempt to take them again instead (expiry waits: it could
// not be stored). Once writes resume, the agents whose batches were refused reconnect and send
// everything not acknowledged.
void StoreDuties(GuardedStore& store, ApprovalDesk& desk, AgentHub& hub) {
  const int64_t now_ms = NowUnixMs();
  if (!store.WriteFault()) {
    desk.ExpireDue(now_ms);
    if (auto pending = store.ListApprovals(kPending, 1000); pending.ok())
      ControlPlaneMetrics::Default().SetApprovalsPending(pending->size());
    return;
  }
  if (!store.TryResume(now_ms)) return;
  int closed = hub.ClosePaused(
      "the control plane's store takes writes again: send what it did not acknowledge");
  if (closed > 0)
    LogInfo(closed, " agent stream(s) closed, so that their agents send what was not stored");
}

// The server's TLS identity: --tls-cert and --tls-key, or a private CA and server certificate
// made in <data-dir>/tls (then `ca_path` names the CA that agents and sluicectl trust).
struct ServerIdentity {
  std::string cert_pem, key_pem;
  std::string ca_path;  // empty with --tls-cert
};

absl::StatusOr<std::string> LoadMasterKey(const std::string& data_dir) {
  std::string key_path = absl::GetFlag(FLAGS_master_key_file);
  if (key_path.empty()) key_path = data_dir + "/master.key";
  bool created = false;
  ASSIGN_OR_RETURN(std::string master_key, LoadOrCreateMasterKey(key_path, &created));
  if (created)
    LogInfo("created master key ", key_path, " (0600); back it up: secrets at rest need it");
  return master_key;
}

// --previous-master-key-file's key (empty without the flag); never created.
absl::StatusOr<std::string> LoadPreviousMasterKey() {
  const std::string path = absl::GetFlag(FLAGS_previous_master_key_file);
  if (path.empty()) return std::string();
  if (!FileExists(path)) {
    return absl::NotFoundError(
        absl::StrCat("--previous-master-key-file: ", path, " does not exist"));
  }
  bool created = false;
  return LoadOrCreateMasterKey(path, &created);
}

// The bootstrap admin token; `*token_path` is where it is kept.
absl::StatusOr<std::string> LoadAdminToken(const std::string& data_dir, std::string* token_path) {
  *token_path = absl::GetFlag(FLAGS_admin_token_file);
  if (token_path->empty()) *token_path = data_dir + "/admin.token";
  bool created = false;
  ASSIGN_OR_RETURN(std::string admin_token, LoadOrCreateToken(*token_path, &created));
  if (created) LogInfo("created bootstrap admin token ", *token_path, " (0600)");
  return admin_token;
}

absl::StatusOr<ServerIdentity> LoadServerIdentity(const std::string& data_dir) {
  std::string cert_path = absl::GetFlag(FLAGS_tls_cert), key_file = absl::GetFlag(FLAGS_tls_key);
  ServerIdentity id;
  if (cert_path.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (cert_path.empty()) {
    std::vector<std::string> hosts;
    for (absl::string_view h :
         absl::StrSplit(absl::GetFlag(FLAGS_tls_hosts), ',', absl::SkipEmpty())) {
      hosts.emplace_back(h);
    }
    ASSIGN_OR_RETURN(ServerTlsFiles tls, EnsureServerTls(data_dir + "/tls", hosts));
    cert_path = tls.server_cert;
    key_file = tls.server_key;
    id.ca_path = tls.ca_cert;
    if (tls.created) {
      LogInfo("created a private CA and server certificate in ", data_dir,
              "/tls; agents and sluicectl trust ", id.ca_path);
    }
  }
  ASSIGN_OR_RETURN(id.cert_pem, ReadFile(cert_path));
  ASSIGN_OR_RETURN(id.key_pem, ReadFile(key_file));
  return id;
}

// The CA that signs agents' listener certificates at enrollment: --agent-ca-cert, else the
// control plane's own CA when it made one (`own_ca_path`), else none.
absl::StatusOr<std::optional<PemKeyPair>> LoadAgentCa(const std::string& data_dir,
                                                      const std::string& own_ca_path) {
  std::string agent_ca_cert = absl::GetFlag(FLAGS_agent_ca_cert);
  std::string agent_ca_key = absl::GetFlag(FLAGS_agent_ca_key);
  if (agent_ca_cert.empty() != agent_ca_key.empty()) {
    return absl::InvalidArgumentError("--agent-ca-cert and --agent-ca-key go together");
  }
  if (agent_ca_cert.empty() && !own_ca_path.empty()) {
    agent_ca_cert = own_ca_path;
    agent_ca_key = data_dir + "/tls/ca.key";
  }
  std::optional<PemKeyPair> agent_ca;
  if (!agent_ca_cert.empty()) {
    PemKeyPair ca;
    ASSIGN_OR_RETURN(ca.cert_pem, ReadFile(agent_ca_cert, 1 << 20));
    ASSIGN_OR_RETURN(ca.key_pem, ReadFile(agent_ca_key, 1 << 20));
    agent_ca = std::move(ca);
    LogInfo("agents' certificates are signed by ", agent_ca_cert);
  } else {
    LogInfo("no agent CA (--agent-ca-cert): agents keep certificates of their own");
  }
  return agent_ca;
}

absl::StatusOr<std::string> LoadTrailKey(const std::string& data_dir) {
  std::string trail_key_path = absl::GetFlag(FLAGS_trail_key_file);
  if (trail_key_path.empty()) trail_key_path = data_dir + "/trail-key.pem";
  bool created = false;
  ASSIGN_OR_RETURN(std::string trail_key, LoadOrCreateEd25519Key(trail_key_path, &created));
  if (created)
    LogInfo("created the audit trail key ", trail_key_path,
            " (0600); back it up: `audit verify` needs it");
  return trail_key;
}

// With --dev-issuer: the development issuer, its Issuer resource applied to the policy. Without
// it: null.
absl::StatusOr<std::unique_ptr<DevIssuer>> StartDevIssuer(const std::string& data_dir,
                                                          PolicyManager& policy) {
  std::unique_ptr<DevIssuer> dev_issuer;
  if (!absl::GetFlag(FLAGS_dev_issuer)) return dev_issuer;
  ASSIGN_OR_RETURN(dev_issuer, DevIssuer::LoadOrCreate(data_dir + "/dev-issuer.key"));
  v1::ApplyRequest publish;
  publish.set_source("--dev-issuer");
  *publish.add_resources() = dev_issuer->resource();
  v1::ApplyResponse published;
  RETURN_IF_ERROR(policy.Apply(publish, "controlplane", &published));
  LogInfo("dev issuer on: Issuer '", DevIssuer::kName, "' (", DevIssuer::kIss,
          "); mint tokens with `sluicectl token --subject NAME --groups G`");
  return dev_issuer;
}

// Issuer keys from JWKS URLs: fetched by the JwksFetcher, applied on the store worker and shipped
// inline in the snapshots.
std::vector<std::string> JwksUrls(const AgentHub& hub) {
  std::vector<std::string> urls;
  std::shared_ptr<const PolicyState> state = hub.state();
  // While a staged rollout is in progress, the agents outside its canary are served the previous
  // version's issuers: their keys are fetched too.
  for (const PolicyState* s : {state.get(), state->previous.get()}) {
    if (s == nullptr) continue;
    for (const auto& i : s->issuers) {
      const std::string& url = i.jwks().url();
      if (!url.empty() && std::find(urls.begin(), urls.end(), url) == urls.end())
        urls.push_back(url);
    }
  }
  return urls;
}

void ApplyFetchedJwks(Worker& worker, PolicyManager& policy, AgentHub& hub, const std::string& url,
                      const std::string& doc) {
  worker.Post([&policy, &hub, url, doc] {
    absl::Status st = policy.SetFetchedJwks(url, doc);
    if (!st.ok()) {
      LogError("cannot apply the keys fetched from ", url, ": ", st.message());
      return;
    }
    hub.PushState(policy.state());
  });
}

// The retention purge, on the store worker.
void RetentionPurge(GuardedStore& store, const PolicyManager& policy) {
  if (store.WriteFault()) return;  // a purge is a write: the next interval's run does it
  auto purged = RunRetention(&store, *policy.state(), "retention", false, NowUnixMs());
  if (!purged.ok()) {
    LogError("retention purge failed: ", purged.status().message());
  } else if (purged->sessions() > 0) {
    LogInfo("retention purged ", purged->sessions(), " sessions (", purged->events(), " events, ",
            purged->recording_bytes(), " recording bytes); ", purged->held(), " held");
  }
}

// Background duties posted to the store worker until `stopping`: StoreDuties twice a second and
// the retention purge every --retention-interval (the first within a minute).
void RunBackgroundDuties(const std::atomic<bool>& stopping, Worker& worker, GuardedStore& store,
                         ApprovalDesk& desk, AgentHub& hub, PolicyManager& policy) {
  const int64_t retention_every_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_retention_interval));
  int64_t next_purge = NowUnixMs() + std::min<int64_t>(retention_every_ms, 60000);
  while (!stopping.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    worker.Post([&store, &desk, &hub] { StoreDuties(store, desk, hub); });
    if (retention_every_ms > 0 && NowUnixMs() >= next_purge) {
      next_purge = NowUnixMs() + retention_every_ms;
      worker.Post([&store, &policy] { RetentionPurge(store, policy); });
    }
  }
}

AdminRoles RolesFromFlags() {
  return AdminRoles{SplitList(absl::GetFlag(FLAGS_admin_groups)),
                    SplitList(absl::GetFlag(FLAGS_auditor_groups)),
                    SplitList(absl::GetFlag(FLAGS_approver_groups))};
}

// The TLS gRPC port with AgentService and AdminService; `*port` is the port it listens on.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpc(const ServerIdentity& identity,
                                                        AgentServiceImpl& agent_service,
                                                        AdminServiceImpl& admin_service,
                                                        int* port) {
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({identity.key_pem, identity.cert_pem});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  *port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_grpc_listen), grpc::SslServerCredentials(ssl), port);
  builder.RegisterService(&agent_service);
  builder.RegisterService(&admin_service);
  builder.SetMaxReceiveMessageSize(32 << 20);
  // Agents send keepalive pings; accept them as often as every 10 s even on an idle stream.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // And ping them: a stream whose agent went silent (its network cut, no reset ever coming) ends
  // within about 30 s, so that `agents list` stops calling it connected, instead of after TCP's
  // retransmission timeout (minutes) or gRPC's default of two hours.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || *port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_grpc_listen)));
  }
  return server;
}

// The HTTP port: /metrics, the readiness check and the approval callback links. Returns the port
// it listens on.
absl::StatusOr<int> StartHttp(HttpServer& http, const AgentHub& hub, GuardedStore& store,
                              Worker& worker, ApprovalDesk& desk, PolicyManager& policy) {
  // What is read at scrape time from the hub and the store, after the families updated where
  // things happen (controlplane/service/metrics.h).
  ControlPlaneMetrics::Default();
  AddControlPlaneCollector(&metrics::DefaultRegistry(), &hub, &store);
  http.AddGet("/metrics", metrics::kContentType,
              [] { return metrics::DefaultRegistry().Render(); });
  // Not ready while the store refuses writes: agents' events would not be stored.
  http.SetReadyCheck([&store]() -> std::string {
    auto fault = store.WriteFault();
    return fault ? "the control plane's store refuses writes: " + fault->error : "";
  });
  AddApprovalLinks(http, worker, desk, policy, store);
  ASSIGN_OR_RETURN(int http_port, http.Start(absl::GetFlag(FLAGS_http_listen)));
  http.SetReady(true);
  return http_port;
}

// Writes <data-dir>/endpoints.json (where sluicectl and tests find the ports, the CA and the
// admin token) and returns the HTTP address in it.
absl::StatusOr<std::string> WriteEndpoints(const std::string& data_dir, int grpc_port,
                                           int http_port, const std::string& ca_path,
                                           const std::string& token_path) {
  std::string grpc_host, http_host;
  int ignored;
  RETURN_IF_ERROR(SplitHostPort(absl::GetFlag(FLAGS_grpc_listen), &grpc_host, &ignored));
  RETURN_IF_ERROR(SplitHostPort(absl::GetFlag(FLAGS_http_listen), &http_host, &ignored));
  nlohmann::json endpoints = {
      {"grpc", absl::StrCat(grpc_host == "0.0.0.0" ? "127.0.0.1" : grpc_host, ":", grpc_port)},
      {"http", absl::StrCat(http_host == "0.0.0.0" ? "127.0.0.1" : http_host, ":", http_port)},
      {"ca_file", ca_path},
      {"admin_token_file", token_path},
      {"pid", static_cast<int>(getpid())}};
  RETURN_IF_ERROR(WriteFileAtomic(data_dir + "/endpoints.json", endpoints.dump(2) + "\n", 0600));
  return endpoints["http"].get<std::string>();
}

// What the control plane starts from, read (or created) in the data directory and the files its
// flags name.
struct StartupFiles {
  std::string master_key;
  std::string admin_token, token_path;
  ServerIdentity identity;
  std::optional<PemKeyPair> agent_ca;
  std::string trail_key;
};

absl::StatusOr<StartupFiles> PrepareDataDir(const std::string& data_dir) {
  RETURN_IF_ERROR(EnsureDir(data_dir, 0700));
  RETURN_IF_ERROR(CheckDataVolume(data_dir));
  StartupFiles files;
  ASSIGN_OR_RETURN(files.master_key, LoadMasterKey(data_dir));
  ASSIGN_OR_RETURN(files.admin_token, LoadAdminToken(data_dir, &files.token_path));
  ASSIGN_OR_RETURN(files.identity, LoadServerIdentity(data_dir));
  ASSIGN_OR_RETURN(files.agent_ca, LoadAgentCa(data_dir, files.identity.ca_path));
  ASSIGN_OR_RETURN(files.trail_key, LoadTrailKey(data_dir));
  return files;
}

absl::Status Run() {
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  ASSIGN_OR_RETURN(const StartupFiles files, PrepareDataDir(data_dir));
  ASSIGN_OR_RETURN(auto sqlite_store, SqliteStore::Open(data_dir + "/sluice.db", files.trail_key));
  // Everything uses the store through its guard: a disk fault makes it refuse writes, not crash.
  auto store = std::make_unique<GuardedStore>(sqlite_store.get(), data_dir);
  ASSIGN_OR_RETURN(const std::string previous_key, LoadPreviousMasterKey());
  ASSIGN_OR_RETURN(const MasterKeys keys,
                   OpenMasterKeys(sqlite_store.get(), files.master_key, previous_key));
  if (keys.resealed > 0) {
    LogInfo("sealed ", keys.resealed,
            " value(s) again under the new master key; --previous-master-key-file is no longer "
            "needed");
  }
  PolicyManager policy(store.get(), files.master_key, keys.masking_hash_key);
  RETURN_IF_ERROR(policy.Load());
  ASSIGN_OR_RETURN(std::unique_ptr<DevIssuer> dev_issuer, StartDevIssuer(data_dir, policy));
  AgentHub hub;
  ASSIGN_OR_RETURN(auto agents, store->ListAgents());
  hub.LoadCredentials(agents);
  hub.SetState(policy.state());
  Worker worker;
  // `audit verify` and the evidence export read a snapshot through their own read-only connection
  // on their own thread: agents' events go on being stored and acknowledged meanwhile. (Declared
  // after the store worker: it posts there, and stops first.)
  ASSIGN_OR_RETURN(std::unique_ptr<Store> reader, sqlite_store->OpenReader());
  Worker reader_worker;

  JwksFetcher jwks(
      absl::GetFlag(FLAGS_jwks_refresh), [&hub] { return JwksUrls(hub); },
      [&worker, &policy, &hub](const std::string& url, const std::string& doc) {
        ApplyFetchedJwks(worker, policy, hub, url, doc);
      });
  jwks.Start();

  // Approvals: requests from agents, webhooks, callback links signed with a key the store keeps
  // sealed under the master key (master_keys.h).
  std::unique_ptr<ApprovalDesk> desk;
  WebhookSender webhooks([&worker, &desk](uint64_t id, v1::WebhookDelivery delivery) {
    worker.Post([&desk, id, delivery] { desk->RecordDelivery(id, delivery); });
  });
  desk = std::make_unique<ApprovalDesk>(store.get(), &hub, &webhooks, keys.approval_link_key,
                                        absl::GetFlag(FLAGS_public_url));
  std::atomic<bool> stopping{false};
  std::thread expiry([&] { RunBackgroundDuties(stopping, worker, *store, *desk, hub, policy); });
  // However Run returns (a port that cannot be opened, say), the duties thread stops and what is
  // queued for the worker runs before the desk goes: an error is reported, never a terminate.
  absl::Cleanup stop_duties = [&] {
    stopping.store(true);
    expiry.join();
    OnWorker(worker, [] { return 0; });
  };

  AgentServiceImpl agent_service(store.get(), &hub, &worker, files.agent_ca, desk.get());
  AdminServiceImpl admin_service(
      store.get(), &policy, &hub, &worker, files.admin_token, dev_issuer.get(),
      [&jwks] { jwks.Wake(); }, RolesFromFlags(), desk.get());
  admin_service.SetReader(reader.get(), &reader_worker);
  int grpc_port = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<grpc::Server> server,
                   StartGrpc(files.identity, agent_service, admin_service, &grpc_port));
  HttpServer http;
  ASSIGN_OR_RETURN(int http_port, StartHttp(http, hub, *store, worker, *desk, policy));
  ASSIGN_OR_RETURN(
      std::string http_address,
      WriteEndpoints(data_dir, grpc_port, http_port, files.identity.ca_path, files.token_path));
  if (absl::GetFlag(FLAGS_public_url).empty())
    desk->SetPublicUrl(absl::StrCat("http://", http_address));
  LogInfo("sluice-controlplane serving: gRPC (TLS) on port ", grpc_port, ", HTTP on port ",
          http_port, ", policy version ", policy.state()->version, ", ", agents.size(),
          " enrolled agent(s)");

  WaitForShutdownSignal();
  http.SetReady(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  http.Stop();
  jwks.Stop();
  webhooks.Stop();
  std::move(stop_duties).Invoke();
  return absl::OkStatus();
}

// --backup-to: a backup, reported on stdout, and nothing else.
absl::Status RunBackup() {
  const std::string dest = absl::GetFlag(FLAGS_backup_to);
  ASSIGN_OR_RETURN(BackupSummary b, BackUpStore(absl::GetFlag(FLAGS_data_dir), dest));
  std::printf(
      "backed up to %s: the database (%llu bytes, policy version %llu) and %d recording file(s) "
      "(%llu bytes)\nkeys are not in it: keep the master key and the trail key apart\n",
      dest.c_str(), static_cast<unsigned long long>(b.database_bytes),
      static_cast<unsigned long long>(b.policy_version), b.recording_files,
      static_cast<unsigned long long>(b.recording_bytes));
  return absl::OkStatus();
}

}  // namespace
}  // namespace sluice::controlplane

int main(int argc, char** argv) {
  sluice::InitDaemon(argc, argv, "controlplane",
                     "sluice-controlplane [flags]: the Sluice control plane");
  if (absl::GetFlag(FLAGS_verbose)) sluice::SetLogLevel(sluice::LogLevel::kDebug);
  if (!absl::GetFlag(FLAGS_backup_to).empty())
    return sluice::ExitCode(sluice::controlplane::RunBackup());
  return sluice::ExitCode(sluice::controlplane::Run());
}
