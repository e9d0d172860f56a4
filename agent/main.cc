// sluice-agent: runs inside a VPC next to the targets. Dials out to the control plane, receives
// the policy snapshot computed for it, validates, applies and keeps it on disk, and (from the
// next issues on) proxies PostgreSQL, MySQL and HTTP callers under that policy.
#include <unistd.h>

#include <algorithm>
#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/agent_metrics.h"
#include "agent/audit/spool.h"
#include "agent/control_client.h"
#include "agent/gcs/listener.h"
#include "agent/memory_trimmer.h"
#include "agent/mysql/listener.h"
#include "agent/net/worker_pool.h"
#include "agent/policy_holder.h"
#include "agent/postgres/listener.h"
#include "agent/session/limits.h"
#include "agent/session/metrics.h"
#include "agent/test_faults.h"
#include "common/crypto.h"
#include "common/daemon.h"
#include "common/files.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "common/tls.h"

ABSL_FLAG(std::string, control_plane, "127.0.0.1:7443", "control plane gRPC address host:port");
ABSL_FLAG(std::string, ca_file, "",
          "CA certificate (PEM) the control plane's certificate chains to");
ABSL_FLAG(std::string, enroll_token, "",
          "one-time enrollment token from `sluicectl agents enroll` (needed on first start only)");
ABSL_FLAG(std::string, enroll_token_file, "",
          "file holding the enrollment token (keeps it out of the process list)");
ABSL_FLAG(std::string, labels, "",
          "comma-separated k=v labels; must agree with the labels granted at enrollment "
          "(empty = the granted labels)");
ABSL_FLAG(std::string, data_dir, "./sluice-agent-data",
          "directory for the agent identity and the last good snapshot (created 0700)");
ABSL_FLAG(
    std::string, spool_max_bytes, "1073741824",
    "cap of the on-disk audit spool (<data-dir>/spool) in bytes; when it is full, new sessions "
    "are refused until the control plane has acknowledged what it holds");
ABSL_FLAG(std::string, protocols, "postgres,mysql,gcs",
          "protocols this agent serves; a snapshot with a connection of another protocol is NACKed "
          "(gcs and bigquery share the Google APIs port: either names both)");
ABSL_FLAG(
    std::string, status_listen, "127.0.0.1:7081",
    "address of the HTTP status port (/healthz, /readyz, /status, /metrics); empty = off; port "
    "0 = any");
ABSL_FLAG(absl::Duration, reconnect_max_backoff, absl::Seconds(30),
          "upper bound of the reconnect backoff (exponential with full jitter)");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(10), "heartbeat period on the stream");
ABSL_FLAG(std::string, postgres_listen, "127.0.0.1:6432",
          "address of the PostgreSQL port (host:port; port 0 = any free port; empty = off)");
ABSL_FLAG(std::string, postgres_tls_cert, "",
          "certificate chain (PEM) of the PostgreSQL port; without it the agent creates a private "
          "CA and certificate in <data-dir>/tls");
ABSL_FLAG(std::string, postgres_tls_key, "", "private key (PEM) of --postgres-tls-cert");
ABSL_FLAG(bool, postgres_allow_plaintext, false,
          "accept PostgreSQL sessions without TLS (tokens then cross the network in clear: only "
          "for loopback and tests)");
ABSL_FLAG(std::string, mysql_listen, "127.0.0.1:3307",
          "address of the MySQL port (host:port; port 0 = any free port; empty = off)");
ABSL_FLAG(std::string, mysql_tls_cert, "",
          "certificate chain (PEM) of the MySQL port; without it the port uses the PostgreSQL "
          "port's certificate (the one given, issued or created)");
ABSL_FLAG(std::string, mysql_tls_key, "", "private key (PEM) of --mysql-tls-cert");
ABSL_FLAG(std::string, gcs_listen, "127.0.0.1:8443",
          "HTTPS address of the Cloud Storage port (host:port, port 0 = any free port; empty = "
          "off); its certificate is the MySQL port's");
ABSL_FLAG(absl::Duration, mysql_login_timeout, absl::Seconds(30),
          "a MySQL client must finish TLS and authentication within this time");
ABSL_FLAG(std::string, tls_names, "",
          "host names and IP addresses clients use to reach this agent, a,b: put in the listener "
          "certificate the control plane issues at enrollment (they must be granted with "
          "`sluicectl agents enroll --tls-names`)");
ABSL_FLAG(int, workers, 2, "data-path event loops (threads); one per core is right");
ABSL_FLAG(bool, worker_cpu_affinity, true,
          "when --workers equals the number of CPUs the agent may run on, pin each worker to one "
          "of them and give each new connection to the worker on the CPU it arrives on (balanced); "
          "false = workers float and connections go round robin");
ABSL_FLAG(absl::Duration, postgres_login_timeout, absl::Seconds(30),
          "a PostgreSQL client must finish TLS, startup and authentication within this time");
ABSL_FLAG(bool, record_sessions, true,
          "record each session's messages (after masking) with its audit events, for `sluicectl "
          "sessions replay`");
ABSL_FLAG(uint64_t, test_kill_after_answers, 0,
          "tests only: kill the agent (SIGKILL) right after the answers of this many statements "
          "were written "
          "to their clients (agent/test_faults.h); 0: never");
ABSL_FLAG(int64_t, record_max_rows, 100,
          "rows (data messages) of each result kept in a session recording; the rest are counted");
ABSL_FLAG(
    int64_t, record_max_bytes, 64 << 10,
    "bytes of data messages of each result kept in a session recording; the rest are counted");
ABSL_FLAG(bool, verbose, false, "log debug messages");

namespace sluice::agent {
namespace {

constexpr char kAgentVersion[] = "0.1.0";

absl::StatusOr<std::map<std::string, std::string>> ParseLabels(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (kv.first.empty() || part.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--labels: '", part, "' is not k=v"));
    }
    out[kv.first] = kv.second;
  }
  return out;
}

// The control client's options from the flags; an error names the flag that is wrong.
absl::StatusOr<ControlClientOptions> ControlOptionsFromFlags() {
  ControlClientOptions opts;
  opts.address = absl::GetFlag(FLAGS_control_plane);
  opts.data_dir = absl::GetFlag(FLAGS_data_dir);
  opts.enroll_token = absl::GetFlag(FLAGS_enroll_token);
  if (!absl::GetFlag(FLAGS_enroll_token_file).empty()) {
    if (!opts.enroll_token.empty()) {
      return absl::InvalidArgumentError("give --enroll-token or --enroll-token-file, not both");
    }
    ASSIGN_OR_RETURN(std::string text, ReadFile(absl::GetFlag(FLAGS_enroll_token_file), 4096));
    opts.enroll_token = std::string(absl::StripAsciiWhitespace(text));
  }
  opts.agent_version = kAgentVersion;
  opts.max_backoff = absl::GetFlag(FLAGS_reconnect_max_backoff);
  opts.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  if (opts.max_backoff < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("--reconnect-max-backoff must be at least 100ms");
  }
  ASSIGN_OR_RETURN(opts.labels, ParseLabels(absl::GetFlag(FLAGS_labels)));
  for (absl::string_view p :
       absl::StrSplit(absl::GetFlag(FLAGS_protocols), ',', absl::SkipEmpty())) {
    // "http", the name before the HTTP APIs had their own: every one of them. Cloud Storage and
    // BigQuery are served on one port (the Google APIs listener): either names both.
    if (p == "http" || p == "gcs" || p == "bigquery") {
      for (const char* api : {"gcs", "bigquery"}) {
        if (std::find(opts.capabilities.begin(), opts.capabilities.end(), api) ==
            opts.capabilities.end()) {
          opts.capabilities.emplace_back(api);
        }
      }
      continue;
    }
    if (p != "postgres" && p != "mysql") {
      return absl::InvalidArgumentError(
          absl::StrCat("--protocols: unknown protocol '", p, "' (postgres, mysql, gcs, bigquery)"));
    }
    opts.capabilities.emplace_back(p);
  }
  if (absl::GetFlag(FLAGS_ca_file).empty()) {
    return absl::InvalidArgumentError(
        "--ca-file is required: the CA certificate of the control plane (its data dir holds "
        "tls/ca.crt when it made its own)");
  }
  ASSIGN_OR_RETURN(opts.ca_pem, ReadFile(absl::GetFlag(FLAGS_ca_file), 1 << 20));
  RETURN_IF_ERROR(EnsureDir(opts.data_dir, 0700));

  const bool postgres_on = !absl::GetFlag(FLAGS_postgres_listen).empty();
  const bool mysql_on = !absl::GetFlag(FLAGS_mysql_listen).empty();
  // Without a certificate of their own, the listeners use one issued by the control plane's
  // agent CA at enrollment, for --tls-names and the loopback names.
  opts.request_certificate = (postgres_on && absl::GetFlag(FLAGS_postgres_tls_cert).empty()) ||
                             (mysql_on && absl::GetFlag(FLAGS_mysql_tls_cert).empty());
  for (absl::string_view n :
       absl::StrSplit(absl::GetFlag(FLAGS_tls_names), ',', absl::SkipEmpty())) {
    std::string name(absl::StripAsciiWhitespace(n));
    absl::Status ok = CheckTlsName(name);
    if (!ok.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-names: ", ok.message()));
    opts.tls_names.push_back(name);
  }

  return opts;
}

struct ListenerTls {
  std::string cert;
  std::string key;
};

// A listener's certificate: the one given (--<flag>-tls-cert/-key), else the one the control
// plane issued at enrollment, else one of the agent's own private CA.
absl::StatusOr<ListenerTls> ListenerTlsFromFlags(const ControlClientOptions& opts,
                                                 const std::string& cert, const std::string& key,
                                                 const char* flag, const char* what) {
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "-tls-cert and --", flag, "-tls-key go together"));
  }
  if (!cert.empty()) return ListenerTls{cert, key};
  if (auto issued = FindIssuedTls(opts.data_dir)) {
    LogInfo(what, " TLS: certificate from the control plane's agent CA; clients verify with ",
            issued->ca);
    return ListenerTls{issued->cert, issued->key};
  }
  ASSIGN_OR_RETURN(ServerTlsFiles tls, EnsureServerTls(opts.data_dir + "/tls", opts.tls_names));
  LogInfo(what, " TLS: the agent's own private CA (", tls.ca_cert,
          "); the control plane issued no certificate");
  return ListenerTls{tls.server_cert, tls.server_key};
}

// The recording limits from the flags.
absl::StatusOr<session::RecordingLimits> RecordingFromFlags() {
  session::RecordingLimits r;
  r.enabled = absl::GetFlag(FLAGS_record_sessions);
  if (absl::GetFlag(FLAGS_record_max_rows) < 0 || absl::GetFlag(FLAGS_record_max_bytes) < 0 ||
      absl::GetFlag(FLAGS_record_max_bytes) > (16 << 20)) {
    return absl::InvalidArgumentError(
        "--record-max-rows must be at least 0, --record-max-bytes between 0 and 16777216");
  }
  r.max_rows = static_cast<uint64_t>(absl::GetFlag(FLAGS_record_max_rows));
  r.max_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_record_max_bytes));
  return r;
}

// The MySQL listener's options from the flags (its certificate: as the PostgreSQL port's when it
// has none of its own).
absl::StatusOr<mysql::ListenerOptions> MysqlOptionsFromFlags(const ControlClientOptions& opts,
                                                             InflightTable* inflight,
                                                             SessionLimiter* limiter) {
  mysql::ListenerOptions lo;
  lo.listen = absl::GetFlag(FLAGS_mysql_listen);
  lo.login_timeout = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_mysql_login_timeout));
  lo.inflight = inflight;
  lo.limiter = limiter;
  ASSIGN_OR_RETURN(lo.recording, RecordingFromFlags());
  std::string cert = absl::GetFlag(FLAGS_mysql_tls_cert);
  std::string key = absl::GetFlag(FLAGS_mysql_tls_key);
  if (cert.empty() && key.empty()) {
    cert = absl::GetFlag(FLAGS_postgres_tls_cert);
    key = absl::GetFlag(FLAGS_postgres_tls_key);
  }
  ASSIGN_OR_RETURN(ListenerTls tls, ListenerTlsFromFlags(opts, cert, key, "mysql", "MySQL"));
  lo.tls_cert_file = tls.cert;
  lo.tls_key_file = tls.key;
  return lo;
}

// The PostgreSQL listener's options from the flags, its certificate: the one given, else the one
// the control plane issued at enrollment, else one of the agent's own private CA.
absl::StatusOr<postgres::ListenerOptions> PostgresOptionsFromFlags(const ControlClientOptions& opts,
                                                                   InflightTable* inflight,
                                                                   SessionLimiter* limiter) {
  postgres::ListenerOptions lo;
  lo.listen = absl::GetFlag(FLAGS_postgres_listen);
  lo.tls_cert_file = absl::GetFlag(FLAGS_postgres_tls_cert);
  lo.tls_key_file = absl::GetFlag(FLAGS_postgres_tls_key);
  lo.allow_plaintext = absl::GetFlag(FLAGS_postgres_allow_plaintext);
  lo.login_timeout = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_postgres_login_timeout));
  lo.inflight = inflight;
  lo.limiter = limiter;
  ASSIGN_OR_RETURN(lo.recording, RecordingFromFlags());
  ASSIGN_OR_RETURN(ListenerTls tls, ListenerTlsFromFlags(opts, lo.tls_cert_file, lo.tls_key_file,
                                                         "postgres", "PostgreSQL"));
  lo.tls_cert_file = tls.cert;
  lo.tls_key_file = tls.key;
  return lo;
}

// <data-dir>/<name>.port for tests and scripts. Not fatal: an agent restarted on a full disk runs
// (refusing new sessions until its audit spool takes writes again) rather than exits.
void WritePortFile(const std::string& data_dir, const std::string& name, int port) {
  const std::string path = absl::StrCat(data_dir, "/", name, ".port");
  if (absl::Status st = WriteFileAtomic(path, absl::StrCat(port, "\n"), 0600); !st.ok()) {
    LogWarning("cannot write ", path, ": ", st.message());
    ::unlink(path.c_str());  // not a stale port
  }
}

absl::Status Run() {
  if (const uint64_t n = absl::GetFlag(FLAGS_test_kill_after_answers); n > 0) {
    LogWarning("--test-kill-after-answers ", n, ": this agent kills itself after ", n,
               " answers (a test fault)");
    test_faults::KillAfterAnswers(n);
  }
  ASSIGN_OR_RETURN(ControlClientOptions opts, ControlOptionsFromFlags());
  const bool postgres_on = !absl::GetFlag(FLAGS_postgres_listen).empty();
  PolicyHolder policy;
  // Audit events are spooled to disk before they are sent (agent/audit/spool.h).
  Spool::Options spool_options;
  spool_options.dir = opts.data_dir + "/spool";
  if (!absl::SimpleAtoi(absl::GetFlag(FLAGS_spool_max_bytes), &spool_options.max_bytes) ||
      spool_options.max_bytes < (1 << 20)) {
    return absl::InvalidArgumentError("--spool-max-bytes: a number of bytes, at least 1048576");
  }
  // Fails, saying why, on a volume too small or too full for the audit files allocated up front.
  ASSIGN_OR_RETURN(std::unique_ptr<Spool> spool, Spool::Open(spool_options));
  // The agent's own Ed25519 key signs checkpoints of its audit chain; the control plane learns
  // the public half at enrollment.
  bool key_created = false;
  ASSIGN_OR_RETURN(std::string audit_key,
                   LoadOrCreateEd25519Key(opts.data_dir + "/audit-key.pem", &key_created));
  ASSIGN_OR_RETURN(opts.audit_public_key, Ed25519PublicKey(audit_key));
  if (key_created)
    LogInfo("created the audit signing key ", opts.data_dir, "/audit-key.pem (0600)");
  EventSink events;
  events.SetCheckpointSigner(
      [audit_key](absl::string_view message) { return Ed25519Sign(audit_key, message); });
  events.StartSpooling(spool.get());
  events.RecoverInflight(spool->inflight(), spool->TakeJournalRecords());
  opts.events = &events;
  ApprovalBroker approvals;
  opts.approvals = &approvals;
  ControlClient client(opts, &policy);
  uint64_t from_disk = client.LoadFromDisk();
  if (from_disk > 0)
    LogInfo("enforcing snapshot version ", from_disk, " from disk until the control plane answers");

  HttpServer http;
  http.AddGet("/status", "application/json", [&client] { return client.StatusJson(); });
  // Prometheus: the session core's counters (registered now, so that they read 0 before the first
  // session) and the agent's own state, read at each scrape.
  session::SessionMetrics::Default();
  AddAgentMetrics(&metrics::DefaultRegistry(), &client, &events, &approvals);
  http.AddGet("/metrics", metrics::kContentType,
              [] { return metrics::DefaultRegistry().Render(); });
  if (!absl::GetFlag(FLAGS_status_listen).empty()) {
    ASSIGN_OR_RETURN(int port, http.Start(absl::GetFlag(FLAGS_status_listen)));
    LogInfo(
        "status on http://",
        absl::GetFlag(FLAGS_status_listen).substr(0, absl::GetFlag(FLAGS_status_listen).rfind(':')),
        ":", port, "/status");
    WritePortFile(opts.data_dir, "status", port);
  }
  client.Start();
  if (opts.request_certificate && !FindIssuedTls(opts.data_dir) && !client.enrolled()) {
    // First start: the listener's certificate comes with enrollment.
    int sig = WaitForShutdownSignal(
        [&client] { return !client.enrolled() && client.fatal_error().empty(); });
    if (sig != 0) {
      client.Stop();
      http.Stop();
      return absl::OkStatus();
    }
  }
  // Session limits per connection and per caller, shared by every listener's workers; declared
  // before the listener, whose sessions hold its tickets until they end.
  SessionLimiter limiter;
  // The data path's event loops, shared by every listener (agent/net/worker_pool.h); declared
  // after what sessions use and before the listeners.
  net::WorkerPool pool(net::WorkerPool::Options{absl::GetFlag(FLAGS_workers),
                                                absl::GetFlag(FLAGS_worker_cpu_affinity)});
  std::unique_ptr<postgres::Listener> pg;
  if (postgres_on && client.fatal_error().empty()) {
    ASSIGN_OR_RETURN(postgres::ListenerOptions lo,
                     PostgresOptionsFromFlags(opts, spool->inflight(), &limiter));
    pg = std::make_unique<postgres::Listener>(lo, &pool, &policy, &events, &approvals);
    ASSIGN_OR_RETURN(int pg_port, pg->Start());
    WritePortFile(opts.data_dir, "postgres", pg_port);
    LogInfo("PostgreSQL port ", pg_port,
            lo.allow_plaintext ? " (TLS, plaintext allowed)" : " (TLS required)");
  }
  std::unique_ptr<mysql::Listener> my;
  if (!absl::GetFlag(FLAGS_mysql_listen).empty() && client.fatal_error().empty()) {
    ASSIGN_OR_RETURN(mysql::ListenerOptions lo,
                     MysqlOptionsFromFlags(opts, spool->inflight(), &limiter));
    my = std::make_unique<mysql::Listener>(lo, &pool, &policy, &events, &approvals);
    ASSIGN_OR_RETURN(int my_port, my->Start());
    WritePortFile(opts.data_dir, "mysql", my_port);
    LogInfo("MySQL port ", my_port, " (TLS required)");
  }
  std::unique_ptr<gcs::Listener> cloud_storage;
  if (!absl::GetFlag(FLAGS_gcs_listen).empty() && client.fatal_error().empty()) {
    ASSIGN_OR_RETURN(mysql::ListenerOptions my_lo,
                     MysqlOptionsFromFlags(opts, spool->inflight(), &limiter));
    gcs::ListenerOptions lo;
    lo.listen = absl::GetFlag(FLAGS_gcs_listen);
    lo.tls_cert_file = my_lo.tls_cert_file;
    lo.tls_key_file = my_lo.tls_key_file;
    lo.events = &events;
    lo.inflight = spool->inflight();
    lo.limiter = &limiter;
    lo.approvals = &approvals;
    ASSIGN_OR_RETURN(lo.recording, RecordingFromFlags());
    cloud_storage = std::make_unique<gcs::Listener>(lo, &policy);
    ASSIGN_OR_RETURN(int gcs_port, cloud_storage->Start());
    WritePortFile(opts.data_dir, "gcs", gcs_port);
    LogInfo("Cloud Storage port ", gcs_port, " (HTTPS)");
  }
  http.SetReady(true);
  // Memory freed after a load of many sessions goes back to the system (agent/memory_trimmer.h).
  MemoryTrimmer trimmer(MemoryTrimmer::Options{});
  LogInfo("sluice-agent ", kAgentVersion, " running");

  WaitForShutdownSignal([&client] { return client.fatal_error().empty(); });
  std::string fatal = client.fatal_error();
  if (pg) pg->Stop();
  if (my) my->Stop();
  if (cloud_storage) cloud_storage->Stop();
  pool.Stop();  // the sessions end here
  client.Stop();
  http.Stop();
  if (!fatal.empty()) return absl::FailedPreconditionError(fatal);
  return absl::OkStatus();
}

}  // namespace
}  // namespace sluice::agent

int main(int argc, char** argv) {
  sluice::InitDaemon(argc, argv, "agent", "sluice-agent [flags]: the Sluice agent");
  if (absl::GetFlag(FLAGS_verbose)) sluice::SetLogLevel(sluice::LogLevel::kDebug);
  return sluice::ExitCode(sluice::agent::Run());
}
