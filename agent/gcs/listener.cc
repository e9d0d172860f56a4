#include "agent/gcs/listener.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <asio/experimental/as_tuple.hpp>
#include <atomic>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/auth/authorizer.h"
#include "agent/gcs/batch.h"
#include "agent/gcs/bigquery_classify.h"
#include "agent/gcs/bigquery_masking.h"
#include "agent/gcs/body_masking.h"
#include "agent/gcs/classify.h"
#include "agent/gcs/recorder.h"
#include "agent/masking/policy.h"
#include "agent/session/admission.h"
#include "agent/session/approval_hold.h"
#include "agent/session/gate.h"
#include "agent/session/guardrails.h"
#include "agent/session/session_audit.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/policy/selectors.h"

namespace sluice::agent::gcs {

namespace {

using audit::RefusalKind;

constexpr size_t kMaxTarget = 8192;
// A streamed answer's bytes read from the service ahead of the caller, at most.
constexpr size_t kStreamWindow = 1 << 20;

// One answer on its way from the service's thread to the caller's. Every field is read and
// written under `mu` (not annotated: absl::Condition's predicates run with it held, which the
// analysis cannot see), but for `released`.
struct Pipe {
  absl::Mutex mu;
  bool have_head = false;  // status and headers are set
  bool whole = false;      // the body is taken whole (JSON, unknown length), not streamed
  bool finished = false;   // the service's thread is done
  bool abandoned = false;  // the caller's side is gone: stop reading
  int status = 0;
  httplib::Headers headers;
  std::string error;  // why the answer failed (for the caller and the event)
  std::deque<std::string> chunks;
  size_t queued = 0;    // bytes in `chunks`
  size_t received = 0;  // from the service
  size_t sent = 0;      // to the caller (streamed)
  std::atomic<bool> released{false};
  // Waits until the service's side is done: its worker no longer touches the pipe (but to let go
  // of it).
  void Join() {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&finished));
  }
  // A streamed upload: the caller's body on its way to the service, read by the caller's thread
  // into a window of kStreamWindow bytes and sent from the service's.
  std::deque<std::string> up_chunks;
  size_t up_queued = 0;
  bool up_done = false;    // the caller's body was read to its end
  bool up_failed = false;  // the caller's body broke off
};

// A request's session: its recording and its audit, which sends the recording with its events
// (together: a streamed answer ends after Handle returns).
struct SessionRecord {
  SessionRecord(const ListenerOptions& o, absl::Time started, const char* protocol)
      : recorder(o.recording, started),
        audit(o.events, o.inflight, RandomHex(8), protocol, &recorder) {}
  HttpRecorder recorder;
  session::SessionAudit audit;
};

// Cloud Storage's largest object: the most a streamed upload may declare.
constexpr size_t kMaxObjectBytes = size_t{5} << 40;
// What the agent reads and drops of a body it refused without reading, so that the caller gets
// its answer on a connection that stays usable; beyond this, the connection is closed instead.
constexpr size_t kDrainBytes = 16 << 20;

// Whether a request's body is an object's bytes that stream to the service as they arrive: a
// media upload, or a resumable upload's step. (Other bodies — JSON metadata, multipart uploads,
// batches — are read whole first: what they say is part of the decision.)
bool StreamsObjectBytes(const std::string& method, absl::string_view path,
                        const std::multimap<std::string, std::string>& query) {
  if (!absl::StartsWith(path, "/upload/storage/v1/")) return false;
  if (query.count("upload_id") > 0) return method == "PUT" || method == "POST";
  auto type = query.find("uploadType");
  return method == "POST" && type != query.end() && type->second == "media";
}

int StatusOf(RefusalKind kind) {
  switch (kind) {
    case RefusalKind::kTokenRejected:
      return 401;
    case RefusalKind::kUnknownConnection:
      return 404;
    case RefusalKind::kSessionLimit:
      return 429;
    case RefusalKind::kAuditUnavailable:
      return 503;
    case RefusalKind::kUpstreamUnavailable:
      return 502;
    case RefusalKind::kProtocolError:
      return 400;
    default:
      return 403;
  }
}

const char* ReasonOf(int status) {
  switch (status) {
    case 400:
      return "invalid";
    case 401:
      return "required";
    case 404:
      return "notFound";
    case 413:
      return "uploadTooLarge";
    case 429:
      return "rateLimitExceeded";
    case 502:
    case 503:
      return "backendError";
    default:
      return "forbidden";
  }
}

constexpr char kJsonType[] = "application/json; charset=UTF-8";

// Google's JSON error shape, which the client libraries and gcloud show.
std::string ErrorBody(int status, const std::string& message) {
  nlohmann::json e = {
      {"code", status},
      {"message", message},
      {"errors",
       nlohmann::json::array(
           {{{"message", message}, {"domain", "global"}, {"reason", ReasonOf(status)}}})}};
  return nlohmann::json({{"error", e}}).dump();
}

void SendError(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  if (status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"sluice\"");
  res.set_content(ErrorBody(status, message), kJsonType);
}

// Request headers the upstream gets from the caller; everything else (Authorization, cookies,
// hop-by-hop headers, method overrides) stays at the agent.
bool ForwardedRequestHeader(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  static const char* const kKept[] = {"content-type",
                                      "content-md5",
                                      "content-encoding",
                                      "content-disposition",
                                      "content-language",
                                      "cache-control",
                                      "if-match",
                                      "if-none-match",
                                      "if-modified-since",
                                      "if-unmodified-since",
                                      "range",
                                      "content-range",  // a resumable upload's step
                                      "user-agent",
                                      "accept",
                                      "x-upload-content-type",
                                      "x-upload-content-length"};
  for (const char* k : kKept) {
    if (n == k) return true;
  }
  return absl::StartsWith(n, "x-goog-") && !absl::StrContains(n, "override");
}

// Response headers the caller gets; capability URLs (Location, upload ids) and cookies do not.
bool ForwardedResponseHeader(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  static const char* const kKept[] = {"content-disposition",
                                      "content-language",
                                      "content-encoding",
                                      "cache-control",
                                      "etag",
                                      "last-modified",
                                      "expires",
                                      "vary",
                                      "accept-ranges",
                                      "content-range",
                                      "range",  // what a resumable upload's service holds (308)
                                      "x-goog-generation",
                                      "x-goog-metageneration",
                                      "x-goog-stored-content-length",
                                      "x-goog-stored-content-encoding",
                                      "x-goog-hash",
                                      "x-goog-storage-class"};
  for (const char* k : kKept) {
    if (n == k) return true;
  }
  return false;
}

// The upstream's error message (Google's JSON shape), for the event.
std::string UpstreamMessage(const std::string& body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].contains("message") && j["error"]["message"].is_string()) {
    return j["error"]["message"].get<std::string>().substr(0, 512);
  }
  return "";
}

// The links a JSON answer carries (selfLink, mediaLink) name the service's host: they are made to
// name the agent as the caller reached it (its Host header, and the Connection's path segment
// when the caller used one), so that a client that follows them stays behind the gate. Nothing
// is rewritten when the Host header is not a plain host[:port].
bool PlainHost(absl::string_view host) {
  return !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
           c == '[' || c == ']';
  });
}

// The origins (scheme://host[:port]) the service's links and session URIs name.
std::vector<std::string> ServiceOrigins(const v1::Upstream& up) {
  const bool tls = up.tls() != v1::UPSTREAM_TLS_DISABLE;
  std::vector<std::string> origins = {
      absl::StrCat(tls ? "https://" : "http://", up.host(), ":", up.port())};
  if ((tls && up.port() == 443) || (!tls && up.port() == 80)) {
    origins.push_back(absl::StrCat(tls ? "https://" : "http://", up.host()));
  }
  if (absl::EndsWith(up.host(), ".googleapis.com")) {
    // Google's selfLinks name www.googleapis.com, its mediaLinks storage.googleapis.com.
    origins.push_back("https://www.googleapis.com");
    origins.push_back("https://storage.googleapis.com");
  }
  return origins;
}

void RewriteLinks(const v1::Upstream& up, absl::string_view host, absl::string_view prefix,
                  std::string* body) {
  if (!PlainHost(host)) return;
  const std::string agent = absl::StrCat("https://", host, prefix);
  for (const std::string& origin : ServiceOrigins(up)) {
    // Only as a JSON string's start, followed by a path: "https://host/...
    absl::StrReplaceAll({{absl::StrCat("\"", origin, "/"), absl::StrCat("\"", agent, "/")}}, body);
  }
}

// The headers of a request or an answer as recorded: those that cross the agent.
std::vector<std::pair<std::string, std::string>> RecordedHeaders(const httplib::Headers& headers,
                                                                 bool request) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, value] : headers) {
    if (request ? ForwardedRequestHeader(name) : ForwardedResponseHeader(name)) {
      out.emplace_back(name, value);
    }
  }
  return out;
}

std::string ContentTypeOf(const httplib::Headers& headers) {
  for (const auto& [name, value] : headers) {
    if (absl::EqualsIgnoreCase(name, "Content-Type")) return value;
  }
  return "application/octet-stream";
}

// The headers that describe the service's bytes, which a masked answer no longer matches.
constexpr const char* kHashHeaders[] = {"x-goog-hash", "x-goog-stored-content-length",
                                        "content-md5"};
bool IsHashHeader(absl::string_view name) {
  return std::any_of(std::begin(kHashHeaders), std::end(kHashHeaders),
                     [name](const char* h) { return absl::EqualsIgnoreCase(name, h); });
}
// The longest line of an object the detectors search at once.
constexpr size_t kMaxMaskedLine = 1 << 20;

bool HasContentEncoding(const httplib::Headers& headers) {
  for (const auto& [name, value] : headers) {
    if (absl::EqualsIgnoreCase(name, "Content-Encoding") && !value.empty() &&
        !absl::EqualsIgnoreCase(value, "identity")) {
      return true;
    }
  }
  return false;
}

// Why an object's bytes of this answer cannot be searched by detectors; empty when they can.
std::string Unsearchable(const std::string& content_type, const httplib::Headers& headers) {
  if (!SearchableContentType(content_type)) {
    return absl::StrCat("an object of type \"", content_type.substr(0, 100),
                        "\" cannot be searched for what the rules' detectors find");
  }
  if (HasContentEncoding(headers))
    return "a compressed answer (Content-Encoding) cannot be searched";
  return "";
}

// A whole answer masked by the detectors: an API's JSON (metadata, lists; their object hashes
// dropped), or an object's bytes (`media`: JSON as a document, other text line by line).
absl::Status MaskWhole(const masking::MaskingPolicy& masking, bool media,
                       const std::string& content_type, const httplib::Headers& headers,
                       std::string* body, audit::StatementEvent* event) {
  int64_t changed = 0;
  if (absl::StartsWith(content_type, "application/json") && !HasContentEncoding(headers)) {
    auto n = MaskJsonAnswer(masking, body, /*drop_hashes=*/!media);
    if (!n.ok()) return n.status();
    changed = *n;
  } else {
    const std::string why = Unsearchable(content_type, headers);
    if (!why.empty()) return absl::FailedPreconditionError(why);
    LineMasker lines(&masking, kMaxMaskedLine);
    std::string out;
    absl::Status st = lines.Feed(*body, &out);
    if (st.ok()) st = lines.Finish(&out);
    if (!st.ok()) return st;
    *body = std::move(out);
    changed = lines.masked_lines();
  }
  if (changed > 0) {
    event->masked_by = absl::StrJoin(masking.detector_rules(), ",");
    event->masked_rows = changed;
  }
  return absl::OkStatus();
}

// The service's side of a streamed answer stopped (a receiver waiting for room stops too) and
// its thread joined; the answer's event, with its statement and duration.
audit::StatementEvent& EndPipe(Pipe* pipe, session::SessionAudit* audit,
                               const audit::StatementText& text, absl::Time started) {
  {
    absl::MutexLock lock(&pipe->mu);
    pipe->abandoned = true;
  }
  pipe->Join();
  audit::StatementEvent& event = audit->Answer();
  event.text = text;
  event.duration_us = absl::ToInt64Microseconds(absl::Now() - started);
  return event;
}

// An object's bytes streamed to the caller masked, line by line (chunked: its length changes);
// or, when they cannot be searched, a 403 and nothing of them. The event and the session's end
// are written when the last byte left, or the transfer broke (the response's releaser).
void StreamMasked(std::shared_ptr<const masking::MaskingPolicy> masking,
                  const std::string& content_type, std::shared_ptr<Pipe> pipe,
                  std::shared_ptr<session::SessionAudit> audit,
                  std::shared_ptr<HttpRecorder> recorder,
                  std::shared_ptr<session::Admitted> admitted, const audit::StatementText& text,
                  absl::Time started, const std::string& connection, int64_t bytes_in,
                  httplib::Response& res) {
  const std::string why = Unsearchable(content_type, pipe->headers);
  if (!why.empty()) {
    audit::StatementEvent& event = EndPipe(pipe.get(), audit.get(), text, started);
    event.command_tags = "HTTP 403";
    event.error = absl::StrCat("unmaskable: ", why);
    SendError(res, 403,
              absl::StrCat("Sluice: answers are masked for you on connection \"", connection,
                           "\": ", why));
    recorder->Answer(403, {});
    recorder->AnswerBody(res.body);
    recorder->AnswerEnd(res.body.size());
    audit->Answered();
    audit->Ended("closed", absl::Now() - started, bytes_in, 0);
    return;
  }
  res.status = pipe->status;
  for (const auto& [name, value] : pipe->headers) {
    if (!ForwardedResponseHeader(name)) continue;
    if (!IsHashHeader(name)) res.set_header(name, value);
  }
  auto lines = std::make_shared<LineMasker>(masking.get(), kMaxMaskedLine);
  std::vector<std::pair<std::string, std::string>> recorded(res.headers.begin(), res.headers.end());
  recorded.emplace_back("Content-Type", content_type);
  recorder->Answer(pipe->status, recorded);
  auto provider = [pipe, masking, lines, recorder](size_t, httplib::DataSink& sink) {
    std::string chunk;
    bool last = false;
    {
      absl::MutexLock lock(&pipe->mu);
      pipe->mu.Await(absl::Condition(
          +[](Pipe* p) { return !p->chunks.empty() || p->finished; }, pipe.get()));
      if (pipe->chunks.empty()) {
        if (!pipe->error.empty()) return false;  // the service's answer broke off
        last = true;
      } else {
        chunk = std::move(pipe->chunks.front());
        pipe->chunks.pop_front();
        pipe->queued -= chunk.size();
      }
    }
    std::string out;
    absl::Status st = last ? lines->Finish(&out) : lines->Feed(chunk, &out);
    if (!st.ok()) {
      absl::MutexLock lock(&pipe->mu);
      pipe->error = absl::StrCat("unmaskable: ", st.message());
      return false;
    }
    recorder->AnswerBody(out);
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;
    {
      absl::MutexLock lock(&pipe->mu);
      pipe->sent += out.size();
    }
    if (last) sink.done();
    return true;
  };
  auto release = [pipe, masking, lines, audit, admitted, recorder, text, started,
                  bytes_in](bool success) {
    if (pipe->released.exchange(true)) return;
    audit::StatementEvent& event = EndPipe(pipe.get(), audit.get(), text, started);
    event.command_tags = absl::StrCat("HTTP ", pipe->status);
    event.bytes = static_cast<int64_t>(pipe->sent);
    if (lines->masked_lines() > 0) {
      event.masked_by = absl::StrJoin(masking->detector_rules(), ",");
      event.masked_rows = lines->masked_lines();
    }
    if (!success || !pipe->error.empty()) {
      event.error = pipe->error.empty()
                        ? std::string("the transfer to the caller ended before the last byte")
                        : pipe->error;
    }
    recorder->AnswerEnd(pipe->sent);
    audit->Answered();
    audit->Ended("closed", absl::Now() - started, bytes_in, static_cast<int64_t>(pipe->sent));
  };
  res.set_chunked_content_provider(content_type, provider, release);
}

// The query parameters of the target as sent (decoded). Not the server's `params`, which also
// holds the fields of a form-encoded body: those are not query parameters to the service.
std::multimap<std::string, std::string> QueryOf(const std::string& query_string) {
  httplib::Params params;
  if (query_string.size() > 1) httplib::detail::parse_query_text(query_string.substr(1), params);
  return {params.begin(), params.end()};
}

}  // namespace

absl::StatusOr<std::string> Listener::OpenUpload(const GcsRequest& request, const audit::Who& who,
                                                 uint64_t policy_version, const v1::Upstream& up,
                                                 absl::string_view service_location,
                                                 absl::string_view host, absl::string_view prefix,
                                                 absl::string_view path) {
  if (service_location.empty()) {
    return absl::UnavailableError("the service started the upload without a session URI");
  }
  std::string target;
  for (const std::string& origin : ServiceOrigins(up)) {
    if (absl::StartsWith(service_location, absl::StrCat(origin, "/"))) {
      target = std::string(service_location.substr(origin.size()));
      break;
    }
  }
  if (target.empty() || target.size() > kMaxTarget) {
    return absl::UnavailableError("the service's session URI names another host, or is too long");
  }
  if (!PlainHost(host)) {
    return absl::InvalidArgumentError(
        "the request's Host header is not a plain host[:port], so the agent cannot name itself in "
        "the upload's session URI");
  }
  UploadSession s;
  s.upstream_target = std::move(target);
  s.connection = who.connection;
  s.issuer = who.issuer;
  s.subject = who.subject;
  s.bucket = request.bucket;
  s.object = request.object;
  s.cls = request.cls;
  s.policy_version = policy_version;
  auto id = uploads_.Open(std::move(s), absl::Now());
  if (!id.ok()) return id.status();
  return absl::StrCat("https://", host, prefix, path, "?uploadType=resumable&upload_id=", *id);
}

Listener::Listener(ListenerOptions options, PolicyHolder* policy)
    : options_(std::move(options)), policy_(policy) {}

Listener::~Listener() { Stop(); }

namespace {

constexpr auto kNoThrow = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto kCallerCheck = std::chrono::milliseconds(250);
constexpr size_t kServerThreads = 64;
constexpr size_t kKeepAliveRequests = 1000;

// The address and port of a socket's end, as text and number; false when it has none.
bool EndOf(int fd, bool peer, std::string* addr, int* port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return false;
  char text[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    *port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    *port = ntohs(in6->sin6_port);
  } else {
    return false;
  }
  *addr = text;
  return true;
}

}  // namespace

// The server's socket of a caller's connection, found by its two ends (cpp-httplib 0.11 gives a
// handler no access to it); -1 when none matches. The handler runs on the connection's own
// thread, so the socket stays open for as long as the handler looks at it.
int Listener::CallerSocket(const std::string& peer_addr, int peer_port, int local_port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* entry = ::readdir(dir)) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == ::dirfd(dir)) continue;
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    std::string addr;
    int port = 0;
    if (!EndOf(fd, /*peer=*/true, &addr, &port) || port != peer_port || addr != peer_addr) continue;
    if (!EndOf(fd, /*peer=*/false, &addr, &port) || port != local_port) continue;
    found = fd;
    break;
  }
  ::closedir(dir);
  return found;
}

// The caller closed its end (or the connection broke). Data it sends (a pipelined request) is not
// a leave.
bool Listener::CallerGone(int socket) {
  pollfd p{socket, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

absl::StatusOr<cloud::ServiceAccountKey> Listener::KeyOf(const std::string& json) {
  // Parsing checks the key by signing with it (milliseconds of CPU): once per key, not per
  // request.
  const std::string digest = Sha256(json);
  {
    absl::MutexLock lock(&keys_mu_);
    auto it = keys_.find(digest);
    if (it != keys_.end()) return it->second;
  }
  auto key = cloud::ParseServiceAccountKey(json);
  if (!key.ok()) return key.status();
  absl::MutexLock lock(&keys_mu_);
  if (keys_.size() >= kMaxKeys) keys_.clear();  // keys of Connections long gone
  keys_.emplace(digest, *key);
  return key;
}

absl::StatusOr<int> Listener::Start() {
  server_ = std::make_unique<httplib::SSLServer>(options_.tls_cert_file.c_str(),
                                                 options_.tls_key_file.c_str());
  if (!server_->is_valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Cloud Storage port: cannot load the TLS "
                     "certificate ",
                     options_.tls_cert_file, " and its key"));
  }
  // Bodies are read by Handle (whole, up to max_body_bytes, or streamed); the server's own limit
  // is the largest object a streamed upload may declare.
  server_->set_payload_max_length(kMaxObjectBytes);
  // A request without a body (GET, HEAD, OPTIONS) that comes with one is refused before it is
  // read: nothing would bound it.
  server_->set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    const bool bodiless = req.method == "GET" || req.method == "HEAD" || req.method == "OPTIONS";
    const bool has_body =
        req.has_header("Transfer-Encoding") ||
        (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
    if (!bodiless || !has_body) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("Connection", "close");
    SendError(res, 400, absl::StrCat("Sluice: a ", req.method, " request with a body"));
    return httplib::Server::HandlerResponse::Handled;
  });
  server_->set_read_timeout(60);
  server_->set_write_timeout(60);
  server_->set_keep_alive_timeout(30);
  // The server gives each connection a thread of its pool for as long as the connection lasts
  // (kept alive between requests): the pool bounds the callers served at once, the others wait for
  // a thread. A connection serves up to kKeepAliveRequests requests, then the caller reconnects
  // (the library's default, 5, made every fifth request pay a TLS handshake).
  server_->new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
  server_->set_keep_alive_max_count(kKeepAliveRequests);
  // An answer's head and body go out in separate writes: with Nagle's algorithm the body would
  // wait for the caller's delayed ACK (40 ms a request).
  server_->set_tcp_nodelay(true);
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    Handle(req, res, nullptr);
  };
  auto with_body = [this](const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& reader) { Handle(req, res, &reader); };
  // Nothing in Handle is meant to throw; if something does, the caller gets a plain 502 (the
  // server's default would put the exception's text in a header) and the log says what.
  server_->set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        LogError("Cloud Storage port: a request (", req.method, ") failed: ", what);
        SendError(res, 502, "Sluice: the agent could not handle this request");
      });
  server_->Get(".*", handler);
  server_->Options(".*", handler);
  // (the server takes a request with a body to the first kind, one without to the second)
  server_->Post(".*", with_body);
  server_->Post(".*", handler);
  server_->Put(".*", with_body);
  server_->Put(".*", handler);
  server_->Patch(".*", with_body);
  server_->Patch(".*", handler);
  server_->Delete(".*", with_body);
  server_->Delete(".*", handler);
  const size_t colon = options_.listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options_.listen.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gcs-listen: ", options_.listen, " is not host:port"));
  }
  const std::string host = options_.listen.substr(0, colon);
  int bound = port == 0 ? server_->bind_to_any_port(host.c_str())
                        : (server_->bind_to_port(host.c_str(), port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("--gcs-listen: cannot listen on ", options_.listen));
  }
  port_ = bound;
  // One worker per request talking to the service at a time (each waits on its caller's thread,
  // which the server's pool bounds), with room for those finishing.
  pipes_ = std::make_unique<httplib::ThreadPool>(2 * kServerThreads);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void Listener::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  if (pipes_) {
    pipes_->shutdown();
    pipes_.reset();
  }
}

// One admitted caller's HTTP request: what each call it makes shares.
struct Listener::Exchange {
  audit::Who who;
  session::Admission* admission = nullptr;
  session::Admitted* caller = nullptr;
  session::SessionAudit* audit = nullptr;
  const v1::Connection* connection = nullptr;
  std::shared_ptr<const masking::MaskingPolicy> masking;
  std::string prefix;  // "/<connection>" when the caller named it in the path
  std::string host;    // the caller's Host header
  HttpRecorder* recorder = nullptr;
  std::string run_as;     // the service account to impersonate; "" = the key's own
  bool bigquery = false;  // BigQuery's API rather than Cloud Storage's
  // The caller's end of the connection, to see it go away while a request is held.
  std::string peer_addr;
  int peer_port = 0;
};

session::Decision Listener::Hold(const Exchange& x, const audit::StatementText& text,
                                 const session::GuardrailDecision& d) {
  const session::Admission& admission = *x.admission;
  const session::Admitted& caller = *x.caller;
  session::SessionAudit* audit = x.audit;
  session::HeldStatement held;
  held.sql = text.statement;
  held.fingerprint = text.fingerprint;
  held.guardrail = d;
  const session::HoldCaller hold_caller{admission.connection()->name(), caller.identity};
  const absl::Duration timeout =
      session::ApprovalHold::Timeout(admission.policy()->snapshot, d.approval);
  // HTTP has no message for "your request waits": the caller just waits.
  const session::ApprovalHold::Notify notify =
      [](const std::string&) -> asio::awaitable<absl::Status> { co_return absl::OkStatus(); };
  session::ApprovalHold hold(options_.approvals, audit->session_id());
  absl::StatusOr<session::ApprovalHold::Waited> waited =
      absl::UnavailableError("the hold did not run");
  // The hold is a coroutine: it runs on a loop of this server thread's own until it ends. The
  // loop is shared with the hold's waiter, which the approval broker may let go of last (on its
  // own thread, after this returns).
  auto loop = std::make_shared<asio::io_context>(1);
  hold.KeepAlive(loop);
  // A caller that goes away withdraws its request, as a cancel does: no approval runs it for
  // nobody. Its connection is looked at every kCallerCheck while the request waits.
  const int socket = CallerSocket(x.peer_addr, x.peer_port, port_);
  asio::steady_timer check(*loop);
  bool waiting = true;
  asio::co_spawn(
      *loop,
      [&]() -> asio::awaitable<void> {
        waited = co_await hold.Wait(held, hold_caller, timeout, notify);
        waiting = false;
        check.cancel();
      },
      asio::detached);
  if (socket >= 0) {
    asio::co_spawn(
        *loop,
        [&]() -> asio::awaitable<void> {
          while (waiting) {
            check.expires_after(kCallerCheck);
            (void)co_await check.async_wait(kNoThrow);
            if (!waiting) co_return;
            if (CallerGone(socket)) {
              hold.Cancel();
              co_return;
            }
          }
        },
        asio::detached);
  }
  loop->run();
  session::StatementGate gate(admission.connection()->name(), caller.identity.subject, caller.grant,
                              true);
  if (!waited.ok()) return gate.Refusal(RefusalKind::kCancelled, waited.status().message());
  const char* decision = audit->Approval(text, d, waited->approval_id, waited->outcome);
  LogInfo("approval request ", waited->approval_id, " for ", caller.identity.subject, " on ",
          admission.connection()->name(), ": ", decision);
  return session::ApprovalHold::Verdict(waited->outcome, d);
}

// ---- One call: decided, sent, concluded ----

// A request the service is asked to run: the HTTP request itself, or a part of a batch.
struct Listener::Call {
  std::string method;
  std::string path;          // as sent (percent-encoded), without the Connection's segment
  std::string query_string;  // "?..." or ""
  std::multimap<std::string, std::string> query;
  httplib::Headers headers;
  std::string body;
};

// What Decide found: the call's record, and either a refusal (already on record; its status and
// message for the caller) or the go-ahead with the service account's access token.
struct Listener::Verdict {
  GcsRequest request;  // for BigQuery: its facts and refusal (and `bigquery` the rest)
  std::optional<BigQueryRequest> bigquery;
  std::shared_ptr<const GoogleSqlAnalysis> query;  // what a query (or a job's results) reads
  audit::StatementText text;
  std::optional<UploadSession> upload;
  bool media = false;  // an object's bytes rather than the API's JSON
  int status = 0;      // non-zero: refused
  std::string message;
  std::string token;
};

// An answer for the caller, whole.
struct Listener::Reply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string content_type = kJsonType;
  std::string body;
};

namespace {

// Why a BigQuery request cannot be let through for a caller whose answers are masked by columns:
// it reads rows with no column names to mask them by, or copies masked columns where the agent
// cannot mask them; "" when it can go.
std::string BigQueryUnmaskable(const masking::MaskingPolicy& masking, const BigQueryRequest& r) {
  if (r.kind == "tabledata.list" && !r.relations.empty()) {
    const session::Relation& t = r.relations.front();
    // Query results land in hidden datasets ("_..."): they are read through the job, masked.
    if (absl::StartsWith(t.schema, "_")) {
      return "query results are read through their job (jobs.getQueryResults), where they are "
             "masked for you, not as a table";
    }
    if (masking.ForAnyColumnOf(t.table)) {
      return absl::StrCat("a MaskingRule masks columns of table ", t.table,
                          " for you, and tabledata.list answers carry no column names to mask "
                          "them by: read the table with a query");
    }
  }
  for (const session::Relation& t : r.relations) {
    // A wildcard table (`crm.cust*`) reads tables the rules cannot be matched against by name.
    if (absl::StrContains(t.table, '*') && (r.kind == "jobs.query" || r.kind == "jobs.insert")) {
      return absl::StrCat("a wildcard table (", t.schema, ".", t.table,
                          ") may read tables whose columns a MaskingRule masks for you: name the "
                          "tables");
    }
  }
  for (const session::Relation& t : r.copied_from) {
    if (masking.ForAnyColumnOf(t.table)) {
      return absl::StrCat(r.kind, " would copy rows of table ", t.table,
                          ", whose columns a MaskingRule masks for you, where the agent cannot "
                          "mask them");
    }
  }
  return "";
}

// A whole answer as the client gets it, in the recording.
void RecordAnswer(HttpRecorder* recorder, int status,
                  std::vector<std::pair<std::string, std::string>> headers,
                  const std::string& content_type, const std::string& body) {
  headers.emplace_back("Content-Type", content_type);
  recorder->Answer(status, headers);
  recorder->AnswerBody(body);
  recorder->AnswerEnd(body.size());
}

}  // namespace

Listener::Verdict Listener::Decide(Exchange& x, const Call& c) {
  session::Admission& admission = *x.admission;
  session::Admitted& caller = *x.caller;
  session::SessionAudit& audit = *x.audit;
  const std::string content_type =
      c.headers.count("Content-Type") ? c.headers.find("Content-Type")->second : std::string();
  Verdict v;
  if (x.bigquery) {
    // (the project a request names is checked against the key's below)
    v.bigquery = ClassifyBigQuery(c.method, c.path, c.query, c.body, "");
    static_cast<session::StatementFacts&>(v.request) = *v.bigquery;
    v.request.project = v.bigquery->project;
    v.request.refusal = v.bigquery->refusal;
    v.request.refusal_kind = v.bigquery->refusal_kind;
  } else {
    v.request = ClassifyGcs(c.method, c.path, c.query, content_type, c.body);
  }
  GcsRequest& request = v.request;
  audit::StatementText& text = v.text;
  text.SetStatement(absl::StrCat(c.method, " ", c.path.substr(0, 2048)));
  if (v.bigquery && !v.bigquery->sql.empty()) {
    text.SetStatement(absl::StrCat(c.method, " ", c.path.substr(0, 2048), ": ", v.bigquery->sql));
  }
  text.fingerprint = request.kind;
  text.classification = session::ClassName(request.cls);
  text.query_protocol = "json";
  session::StatementGate gate(x.who.connection, x.who.subject, caller.grant,
                              /*can_hold=*/options_.approvals != nullptr);
  auto refuse = [&](const session::Refuse& r, int status = 0) {
    audit.StatementRefused(text, r, "");
    v.status = status != 0 ? status : StatusOf(r.kind);
    v.message = r.message;
    return v;
  };
  if (!request.refusal.empty()) return refuse(gate.Refusal(request.refusal_kind, request.refusal));
  // A resumable upload's later step goes to the session its start opened, and only the caller
  // who started it may take it: it then writes what the start was decided for.
  if (request.upload == UploadStep::kContinue || request.upload == UploadStep::kCancel) {
    v.upload = uploads_.Find(request.upload_id, x.who.connection, request.bucket, x.who.issuer,
                             x.who.subject, absl::Now());
    if (!v.upload) {
      const bool another =
          uploads_.OwnedByAnother(request.upload_id, x.who.issuer, x.who.subject, absl::Now());
      return refuse(gate.Refusal(another ? RefusalKind::kNotOwner : RefusalKind::kNotSupported,
                                 "no such upload session (unknown, expired, not yours, or "
                                 "started through another agent): start the upload again"),
                    404);
    }
    request.object = v.upload->object;
    request.cls = v.upload->cls;
    request.relations = {{request.bucket, request.object}};
    text.SetStatement(absl::StrCat(c.method, " ", c.path.substr(0, 2048), " (resumable upload of ",
                                   request.bucket, "/", request.object, ")"));
    text.classification = session::ClassName(request.cls);
  }
  auto alt = c.query.find("alt");
  v.media = request.kind == "objects.get" && ((alt != c.query.end() && alt->second == "media") ||
                                              absl::StartsWith(c.path, "/download/"));
  if (v.bigquery && !v.bigquery->job_id.empty()) {
    // A job is its creator's: the service account would show anyone's.
    auto job = jobs_.Find(x.who.connection, v.bigquery->project, v.bigquery->job_id, x.who.issuer,
                          x.who.subject, absl::Now());
    if (!job) {
      const bool another =
          jobs_.OwnedByAnother(x.who.connection, v.bigquery->project, v.bigquery->job_id,
                               x.who.issuer, x.who.subject, absl::Now());
      return refuse(gate.Refusal(another ? RefusalKind::kNotOwner : RefusalKind::kNotSupported,
                                 absl::StrCat("Not found: Job ", v.bigquery->project, ":",
                                              v.bigquery->job_id.substr(0, 128),
                                              " (unknown, not yours, or started through another "
                                              "agent)")),
                    404);
    }
    v.query = job->query;
  } else if (v.bigquery && v.bigquery->creates_job && !v.bigquery->sql.empty()) {
    v.query = std::make_shared<const GoogleSqlAnalysis>(v.bigquery->analysis);
  }
  if (v.bigquery && x.masking->has_column_rules()) {
    if (auto why = BigQueryUnmaskable(*x.masking, *v.bigquery); !why.empty())
      return refuse(gate.Refusal(RefusalKind::kUnmaskable, why));
  }
  // Masking: objects have no columns, so a rule's detectors are what applies here (body_masking.h).
  if (!v.bigquery && x.masking->has_column_rules()) {
    return refuse(gate.Refusal(
        RefusalKind::kUnmaskable,
        "a MaskingRule that masks table columns applies to you on this connection; Cloud Storage "
        "objects have no columns to mask it by, so the request is refused (rules with detectors "
        "mask objects)"));
  }
  if (x.masking->has_detectors() && c.headers.count("Range") > 0) {
    return refuse(gate.Refusal(RefusalKind::kUnmaskable,
                               "answers are masked for you on this connection, and a byte range "
                               "of an object cannot be: read the whole object"));
  }
  auto key = KeyOf(caller.credentials.password);
  if (!key.ok()) {
    return refuse(
        gate.Refusal(RefusalKind::kUpstreamUnavailable,
                     absl::StrCat("the connection's credentials: ", key.status().message())));
  }
  if (!request.project.empty() && request.project != key->project_id) {
    return refuse(
        gate.Refusal(RefusalKind::kNotSupported,
                     absl::StrCat("project \"", request.project.substr(0, 64),
                                  "\" is not the connection's project (", key->project_id, ")")));
  }
  if (caller.grant.access == v1::ACCESS_WRITE && (request.cls == session::StatementClass::kDdl ||
                                                  request.cls == session::StatementClass::kDcl)) {
    // The service account may do anything: a write grant's limit is the agent's to keep.
    return refuse(gate.Refusal(
        RefusalKind::kReadOnly,
        absl::StrCat("your access (rule ", caller.grant.rule, ") is write: ", request.kind,
                     request.cls == session::StatementClass::kDcl ? " changes access control"
                     : v.bigquery ? " changes datasets, tables or routines"
                                  : " changes bucket settings",
                     ", which needs admin access")));
  }
  session::GuardrailSet guardrails(admission.policy()->snapshot, *x.connection, nullptr);
  session::GuardrailDecision g = guardrails.Decide(std::vector<GcsRequest>{request}, "");
  session::StatementSummary summary;
  summary.cls = request.cls;
  summary.kind = request.kind;
  summary.guardrail = &g;
  session::Decision d = gate.Decide(summary);
  if (v.upload && std::holds_alternative<session::Hold>(d)) {
    // The start was held and approved under this policy; a policy that changed since then may
    // want it asked for again, which a step in the middle of an upload cannot do.
    if (admission.policy()->snapshot.version() == v.upload->policy_version) {
      d = session::Allow{};
    } else {
      d = gate.Refusal(RefusalKind::kApprovalUnavailable,
                       "the policy changed since this upload started and now holds it for an "
                       "approval: start the upload again to ask for one");
    }
  }
  if (const auto* hold = std::get_if<session::Hold>(&d)) {
    const session::GuardrailDecision held = hold->guardrail;
    d = Hold(x, text, held);
    if (const auto* refused = std::get_if<session::Refuse>(&d)) {
      // (its approval event says so already)
      v.status = StatusOf(refused->kind);
      v.message = refused->message;
      return v;
    }
  }
  if (const auto* refused = std::get_if<session::Refuse>(&d)) return refuse(*refused);
  if (const auto* alert = std::get_if<session::Alert>(&d)) audit.Alerted(text, alert->guardrail);

  // The service account's token in, the caller's out.
  const char* scope = v.bigquery ? kBigQueryScope : kStorageScope;
  auto token = x.run_as.empty()
                   ? tokens_.Get(*key, x.connection->upstream(), scope)
                   : tokens_.Impersonated(*key, x.connection->upstream(),
                                          x.connection->iam_credentials_url(), x.run_as, scope);
  if (!token.ok()) {
    LogWarning("gcs connection ", x.who.connection,
               ": no access token: ", token.status().message());
    return refuse(gate.Refusal(RefusalKind::kUpstreamUnavailable,
                               absl::StrCat("no access token for the connection's service "
                                            "account: ",
                                            token.status().message())));
  }
  v.token = *std::move(token);
  return v;
}

httplib::Request Listener::Outbound(const Exchange& x, const Call& c, const Verdict& v) const {
  const v1::Upstream& up = x.connection->upstream();
  httplib::Request out;
  out.method = c.method;
  out.path =
      v.upload ? v.upload->upstream_target : absl::StrCat(up.database(), c.path, c.query_string);
  for (const auto& [name, value] : c.headers) {
    if (ForwardedRequestHeader(name)) out.headers.emplace(name, value);
  }
  out.headers.emplace("Authorization", absl::StrCat("Bearer ", v.token));
  out.body = c.body;
  return out;
}

Listener::Reply Listener::Conclude(Exchange& x, const Call& c, const Verdict& v, bool answered,
                                   int status, const httplib::Headers& headers, std::string body,
                                   const std::string& error, absl::Time started) {
  session::SessionAudit& audit = *x.audit;
  const GcsRequest& request = v.request;
  const v1::Upstream& up = x.connection->upstream();
  Reply reply;
  audit::StatementEvent& event = audit.Answer();
  event.text = v.text;
  event.duration_us = absl::ToInt64Microseconds(absl::Now() - started);
  auto fail = [&](int code, const std::string& why, absl::string_view event_error = {}) {
    event.error = event_error.empty() ? why : std::string(event_error);
    event.command_tags = absl::StrCat("HTTP ", code);
    reply.status = code;
    reply.headers.clear();
    reply.content_type = kJsonType;
    reply.body = ErrorBody(code, absl::StrCat("Sluice: ", why));
    RecordAnswer(x.recorder, reply.status, reply.headers, reply.content_type, reply.body);
    audit.Answered();
    return reply;
  };
  if (!answered || !error.empty()) {
    return fail(502, error.empty() ? "the service sent no answer" : error);
  }
  reply.status = status;
  reply.content_type = ContentTypeOf(headers);
  for (const auto& [name, value] : headers) {
    if (ForwardedResponseHeader(name)) reply.headers.emplace_back(name, value);
  }
  event.command_tags = absl::StrCat("HTTP ", status);
  if (request.upload == UploadStep::kStart && status == 200) {
    // The service's session URI stays here; the caller gets the agent's, bound to it.
    std::string service_location;
    for (const auto& [name, value] : headers) {
      if (absl::EqualsIgnoreCase(name, "Location")) service_location = value;
    }
    auto location = OpenUpload(request, x.who, x.admission->policy()->snapshot.version(), up,
                               service_location, x.host, x.prefix, c.path);
    if (!location.ok()) {
      return fail(absl::IsResourceExhausted(location.status()) ? 429 : 502,
                  std::string(location.status().message()));
    }
    reply.headers.emplace_back("Location", *location);
  } else if (v.upload &&
             (status == 200 || status == 201 || status == 499 || status == 404 || status == 410)) {
    // Finished (200, 201), cancelled (499) or gone at the service (404, 410): it is over.
    uploads_.Close(request.upload_id);
  }
  if (status >= 400) event.error = absl::StrCat("HTTP ", status, ": ", UpstreamMessage(body));
  bool rows_masked = false;
  if (v.bigquery && status == 200) {
    auto kept = BigQueryAnswer(x, v, &body, &event, &rows_masked);
    if (!kept.ok()) {
      return fail(403,
                  absl::StrCat("answers are masked for you on connection \"", x.who.connection,
                               "\": ", kept.message()),
                  absl::StrCat("unmaskable: ", kept.message()));
    }
  }
  if (absl::StartsWith(reply.content_type, "application/json")) {
    RewriteLinks(up, x.host, x.prefix, &body);
  }
  if (x.masking->has_detectors() && !body.empty() && !rows_masked) {
    absl::Status unmaskable =
        MaskWhole(*x.masking, v.media, reply.content_type, headers, &body, &event);
    if (!unmaskable.ok()) {
      return fail(403,
                  absl::StrCat("answers are masked for you on connection \"", x.who.connection,
                               "\": ", unmaskable.message()),
                  absl::StrCat("unmaskable: ", unmaskable.message()));
    }
    reply.headers.erase(std::remove_if(reply.headers.begin(), reply.headers.end(),
                                       [](const auto& h) { return IsHashHeader(h.first); }),
                        reply.headers.end());
  }
  event.bytes = static_cast<int64_t>(body.size());
  reply.body = std::move(body);
  RecordAnswer(x.recorder, reply.status, reply.headers, reply.content_type, reply.body);
  audit.Answered();
  return reply;
}

absl::Status Listener::BigQueryAnswer(const Exchange& x, const Verdict& v, std::string* body,
                                      audit::StatementEvent* event, bool* rows_masked) {
  const BigQueryRequest& request = *v.bigquery;
  const bool results = request.kind == "jobs.query" || request.kind == "jobs.getQueryResults";
  if (!request.creates_job && !results) return absl::OkStatus();
  nlohmann::json j = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    if (results && !x.masking->empty())
      return absl::FailedPreconditionError("the service's answer is not JSON");
    return absl::OkStatus();
  }
  if (request.creates_job) {
    // The job is the caller's from now on.
    auto ref = j.find("jobReference");
    if (ref != j.end() && ref->is_object() && ref->contains("jobId") &&
        (*ref)["jobId"].is_string()) {
      BigQueryJob job;
      job.connection = x.who.connection;
      job.project = request.project;
      job.job_id = (*ref)["jobId"].get<std::string>();
      job.issuer = x.who.issuer;
      job.subject = x.who.subject;
      job.query = v.query;
      if (!jobs_.Bind(std::move(job), absl::Now())) {
        return absl::FailedPreconditionError("the service named a job another caller owns");
      }
    }
  }
  if (!results || !j.contains("rows")) return absl::OkStatus();
  if (j["rows"].is_array()) event->rows = static_cast<int64_t>(j["rows"].size());
  if (x.masking->empty()) return absl::OkStatus();
  if (v.query == nullptr) return absl::FailedPreconditionError("the job's SQL is not known here");
  auto masked = MaskQueryAnswer(*x.masking, *v.query, &j);
  if (!masked.ok()) return masked.status();
  *rows_masked = true;
  if (masked->rows > 0) {
    event->masked_by = absl::StrJoin(masked->rules, ",");
    event->masked_rows = masked->rows;
    *body = j.dump();
  }
  return absl::OkStatus();
}

Listener::Reply Listener::Batch(Exchange& x, const Call& batch) {
  session::StatementGate gate(x.who.connection, x.who.subject, x.caller->grant, false);
  auto unreadable = [&](const std::string& target, const std::string& why) {
    audit::StatementText text;
    text.SetStatement(target.substr(0, 2048));
    text.fingerprint = "batch";
    text.classification = session::ClassName(session::StatementClass::kUnknown);
    text.query_protocol = "json";
    session::Refuse r = gate.Refusal(RefusalKind::kProtocolError, why);
    x.audit->StatementRefused(text, r, "");
    Reply reply;
    reply.status = 400;
    reply.body = ErrorBody(400, r.message);
    return reply;
  };
  auto parts = ParseBatch(ContentTypeOf(batch.headers), batch.body);
  if (!parts.ok())
    return unreadable("POST /batch/storage/v1", std::string(parts.status().message()));
  const v1::Upstream up = x.connection->upstream();
  size_t budget = options_.max_body_bytes;  // for all the answers together
  std::vector<BatchResponse> answers;
  for (BatchRequest& part : *parts) {
    const absl::Time started = absl::Now();
    Reply r;
    Call c;
    c.method = part.method;
    const size_t q = part.target.find('?');
    c.path = part.target.substr(0, q);
    c.query_string = q == std::string::npos ? "" : part.target.substr(q);
    if (!x.prefix.empty() && absl::StartsWith(c.path, absl::StrCat(x.prefix, "/"))) {
      c.path = c.path.substr(x.prefix.size());
    }
    c.query = QueryOf(c.query_string);
    for (auto& [name, value] : part.headers) c.headers.emplace(name, value);
    c.body = std::move(part.body);
    const std::string what = absl::StrCat(part.method, " ", c.path);
    if (!part.error.empty()) {
      r = unreadable(what.size() > 1 ? what : "(unreadable)",
                     absl::StrCat("a request of the batch cannot be read: ", part.error));
    } else if (!absl::StartsWith(c.path, "/storage/v1/") || c.query.count("alt") > 0) {
      // As at the service: a batch carries JSON API calls, not media, uploads or batches.
      r = unreadable(what,
                     "a batch carries JSON API calls only (no uploads, object bytes or batches): "
                     "send that request on its own");
    } else if (c.headers.count("Content-Type") > 1 || c.headers.count("Authorization") > 1) {
      r = unreadable(what, "a request of the batch gives Content-Type or Authorization twice");
    } else {
      x.recorder->Request(c.method, part.target.substr(0, kMaxTarget),
                          RecordedHeaders(c.headers, true));
      x.recorder->RequestBody(c.body);
      x.recorder->RequestEnd(c.body.size());
      Verdict v = Decide(x, c);
      if (v.status != 0) {
        r.status = v.status;
        r.body = ErrorBody(v.status, v.message);
      } else {
        httplib::Request out = Outbound(x, c, v);
        std::string body;
        std::string error;
        const size_t limit = budget;
        out.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
          if (body.size() + n > limit) {
            error = absl::StrCat("the batch's answers are over the agent's limit of ",
                                 options_.max_body_bytes, " bytes");
            return false;
          }
          body.append(data, n);
          return true;
        };
        x.audit->Forwarding(v.text.statement);
        auto client = clients_->Take(up);
        auto result = client->send(out);
        if (result && error.empty()) clients_->Give(up, std::move(client));
        if (!result && error.empty()) {
          error = absl::StrCat("the service could not be reached (",
                               httplib::to_string(result.error()), ")");
        }
        r = Conclude(x, c, v, static_cast<bool>(result), result ? result->status : 0,
                     result ? result->headers : httplib::Headers{}, std::move(body), error,
                     started);
      }
    }
    budget -= std::min(budget, r.body.size());
    BatchResponse a;
    a.content_id = part.content_id;
    a.status = r.status;
    a.headers = std::move(r.headers);
    a.content_type = std::move(r.content_type);
    a.body = std::move(r.body);
    answers.push_back(std::move(a));
  }
  Reply reply;
  reply.status = 200;
  reply.body = WriteBatchResponse(answers, &reply.content_type);
  return reply;
}

void Listener::Handle(const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader* reader) {
  const absl::Time started = absl::Now();
  // A Range header goes to the service, which answers with the range (206); the server must not
  // cut that answer again by the same range (it would, from the parsed ranges). The request is
  // the server's own object, handed here as const.
  const_cast<httplib::Request&>(req).ranges.clear();
  // Which API the path is for: BigQuery's (bigquery_classify.h) or Cloud Storage's, with or
  // without a Connection's segment before it.
  bool bigquery = false;
  {
    const absl::string_view p = absl::string_view(req.target).substr(0, req.target.find('?'));
    const size_t second = p.find('/', 1);
    bigquery = IsBigQueryPath(p) ||
               (second != absl::string_view::npos && IsBigQueryPath(p.substr(second)));
  }
  // On the heap: a streamed answer's end is recorded after this returns (its releaser).
  auto record = std::make_shared<SessionRecord>(
      options_, started, bigquery ? audit::kProtocolBigquery : audit::kProtocolGcs);
  std::shared_ptr<session::SessionAudit> audit_ptr(record, &record->audit);
  std::shared_ptr<HttpRecorder> recorder(record, &record->recorder);
  session::SessionAudit& audit = *audit_ptr;
  session::Admission admission(policy_, options_.limiter,
                               bigquery ? v1::PROTOCOL_BIGQUERY : v1::PROTOCOL_GCS,
                               bigquery ? "bigquery" : "gcs");
  audit::Who who;
  who.client_addr = absl::StrCat(req.remote_addr, ":", req.remote_port);
  who.tls = true;
  // The caller's body: read whole below, or streamed to the service once the request is decided
  // (an object's bytes). One refused before it was read is drained, or its connection closed.
  std::string body;
  int64_t bytes_in = 0;
  bool body_read = reader == nullptr;
  struct Drain {
    const httplib::ContentReader* reader;
    const bool* read;
    httplib::Response* res;
    ~Drain() {
      if (*read) return;
      size_t seen = 0;
      const bool drained = (*reader)([&seen](const char*, size_t n) {
        seen += n;
        return seen <= kDrainBytes;
      });
      if (!drained) res->set_header("Connection", "close");
    }
  } drain{reader, &body_read, &res};
  auto refuse_login = [&](session::Refuse refusal) {
    who.subject = admission.identity().subject;
    who.issuer = admission.identity().issuer;
    who.groups = admission.identity().groups;
    audit.Refused(who, refusal, "");
    SendError(res, StatusOf(refusal.kind), refusal.message);
  };

  if (req.target.size() > kMaxTarget || req.get_header_value_count("Content-Type") > 1 ||
      req.get_header_value_count("Authorization") > 1) {
    session::Refuse r;
    r.kind = RefusalKind::kProtocolError;
    r.message = req.target.size() > kMaxTarget
                    ? "Sluice: the request's target is over 8 KiB"
                    : "Sluice: a Content-Type or Authorization header given twice";
    return refuse_login(std::move(r));
  }
  // The Connection: the first path segment when it names one, else the agent's only one.
  const std::string& target = req.target;
  const size_t q = target.find('?');
  std::string path = target.substr(0, q);
  const std::string query_string = q == std::string::npos ? "" : target.substr(q);
  std::string prefix;  // "/<connection>" when the caller named it in the path
  {
    auto current = policy_->Get();
    std::vector<std::string> names;
    if (current) {
      for (const auto& c : current->snapshot.connections()) {
        if (c.protocol() == (bigquery ? v1::PROTOCOL_BIGQUERY : v1::PROTOCOL_GCS))
          names.push_back(c.name());
      }
    }
    // The first segment as sent (a Connection's name needs no escaping).
    const size_t begin = path.find_first_not_of('/');
    const std::string first =
        begin == std::string::npos ? "" : path.substr(begin, path.find('/', begin) - begin);
    if (!first.empty() && std::find(names.begin(), names.end(), first) != names.end()) {
      who.connection = first;
      prefix = absl::StrCat("/", first);
      path = path.substr(begin + first.size());
    } else if (names.size() == 1) {
      who.connection = names[0];
    } else {
      session::Refuse r;
      r.kind = RefusalKind::kUnknownConnection;
      r.message = bigquery ? "Sluice: name the connection as the first path segment "
                             "(https://<agent>/<connection>/bigquery/v2/...)"
                           : "Sluice: name the connection as the first path segment "
                             "(https://<agent>/<connection>/storage/v1/...)";
      return refuse_login(std::move(r));
    }
  }
  const bool streamed_upload =
      reader != nullptr && !bigquery && StreamsObjectBytes(req.method, path, QueryOf(query_string));
  if (reader != nullptr && !streamed_upload) {
    bool over = false;
    const bool read = (*reader)([&](const char* data, size_t n) {
      if (body.size() + n > options_.max_body_bytes) {
        over = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    bytes_in = static_cast<int64_t>(body.size());
    if (over || !read) {
      res.set_header("Connection", "close");
      SendError(res, over ? 413 : 400,
                over ? absl::StrCat("Sluice: the request's body is over the agent's limit of ",
                                    options_.max_body_bytes,
                                    " bytes (an object's bytes stream: upload them with "
                                    "uploadType=media or resumable)")
                     : std::string("Sluice: the request's body could not be read"));
      body_read = true;  // (as far as it goes: the connection closes)
      return;
    }
    body_read = true;
  }
  if (auto refused = session::Admission::CheckAudit(options_.events->Full())) {
    return refuse_login(*std::move(refused));
  }
  if (auto refused = admission.Open(who.connection)) return refuse_login(*std::move(refused));
  const std::string authorization = req.get_header_value("Authorization");
  if (!absl::StartsWithIgnoreCase(authorization, "Bearer ")) {
    session::Refuse r;
    r.kind = RefusalKind::kTokenRejected;
    r.message = "Sluice: send the caller's OIDC token as the bearer token (Authorization: Bearer)";
    r.detail = "no bearer token";
    return refuse_login(std::move(r));
  }
  auto admitted =
      admission.Admit(absl::string_view(authorization).substr(7), absl::Now(), who.client_addr);
  if (auto* refused = std::get_if<session::Refuse>(&admitted)) {
    return refuse_login(std::move(*refused));
  }
  // (its place under the session limits is held until the answer's last byte)
  auto admitted_ptr =
      std::make_shared<session::Admitted>(std::move(std::get<session::Admitted>(admitted)));
  session::Admitted& caller = *admitted_ptr;
  who.subject = caller.identity.subject;
  who.issuer = caller.identity.issuer;
  who.groups = caller.identity.groups;
  who.attribution = caller.identity.attribution;
  const v1::Connection& connection = *admission.connection();

  audit::SessionStartEvent start;
  start.who = who;
  start.access = AccessName(caller.grant.access);
  start.rule = caller.grant.rule;
  start.protocol_version = req.version.substr(0, 16);  // "HTTP/1.1"
  start.application_name = req.get_header_value("User-Agent").substr(0, 256);
  if (req.ssl != nullptr) {
    start.tls_version = SSL_get_version(req.ssl);
    start.tls_cipher = SSL_get_cipher_name(req.ssl);
  }
  start.upstream_tls = connection.upstream().tls() != v1::UPSTREAM_TLS_DISABLE;
  // The service account the caller runs as: its group's, or the key's own.
  std::string run_as;
  for (const v1::Impersonation& imp : connection.impersonate()) {
    if (policy::SelectsCaller(imp.callers(), caller.identity.issuer, caller.identity.subject,
                              caller.identity.groups)) {
      run_as = imp.service_account();
      break;
    }
  }
  start.upstream_user = run_as.empty() ? connection.credentials().username() : run_as;
  start.token_alg = caller.identity.algorithm;
  start.token_expires_unix = caller.identity.expires_unix;
  start.token_issued_unix = caller.identity.issued_at_unix;
  audit.Started(std::move(start));
  // What the client sent, as the service gets it (a batch's requests are recorded one by one).
  recorder->Request(req.method, absl::StrCat(path, query_string).substr(0, kMaxTarget),
                    RecordedHeaders(req.headers, true));
  if (body_read && !(path == "/batch/storage/v1" && req.method == "POST")) {
    recorder->RequestBody(body);
    recorder->RequestEnd(body.size());
  }
  int64_t bytes_out = 0;
  auto end = [&](absl::string_view reason) {
    audit.Ended(reason, absl::Now() - started, bytes_in, bytes_out);
  };

  Exchange x;
  x.who = who;
  x.peer_addr = req.remote_addr;
  x.peer_port = req.remote_port;
  x.admission = &admission;
  x.caller = &caller;
  x.audit = &audit;
  x.connection = &connection;
  x.masking = std::make_shared<const masking::MaskingPolicy>(
      admission.policy()->snapshot, connection, caller.identity.issuer, caller.identity.subject,
      caller.identity.groups);
  x.prefix = prefix;
  x.host = req.get_header_value("Host");
  x.recorder = recorder.get();
  x.run_as = run_as;
  x.bigquery = bigquery;

  Call call;
  call.method = req.method;
  call.path = path;
  call.query_string = query_string;
  call.query = QueryOf(query_string);
  call.headers = req.headers;
  call.body = std::move(body);
  if (path == "/batch/storage/v1" && req.method == "POST") {
    Reply reply = Batch(x, call);
    res.status = reply.status;
    bytes_out = static_cast<int64_t>(reply.body.size());
    auto kept = std::make_shared<const std::string>(std::move(reply.body));
    res.set_content_provider(kept->size(), reply.content_type,
                             [kept](size_t offset, size_t length, httplib::DataSink& sink) {
                               return sink.write(kept->data() + offset, length);
                             });
    return end("closed");
  }

  // What the request does, and the decision.
  Verdict v = Decide(x, call);
  if (v.status != 0) {
    SendError(res, v.status, v.message);
    recorder->Answer(v.status, {});
    recorder->AnswerBody(res.body);
    recorder->AnswerEnd(res.body.size());
    return end("closed");
  }
  const GcsRequest& request = v.request;
  const audit::StatementText& text = v.text;
  const bool masked = x.masking->has_detectors();
  auto pipe = std::make_shared<Pipe>();
  const size_t limit = options_.max_body_bytes;
  const bool upload_step = request.upload != UploadStep::kNone;  // short answers, kept whole
  httplib::Request out = Outbound(x, call, v);
  if (streamed_upload) {
    // The object's bytes go to the service as the caller sends them, through the pipe's window.
    size_t length = 0;
    const bool chunked = !absl::SimpleAtoi(req.get_header_value("Content-Length"), &length);
    out.is_chunked_content_provider_ = chunked;
    out.content_length_ = chunked ? 0 : length;
    if (chunked) out.headers.emplace("Transfer-Encoding", "chunked");  // (the client writes it so)
    out.content_provider_ = [pipe, chunked](size_t, size_t room, httplib::DataSink& sink) {
      std::string chunk;
      {
        absl::MutexLock lock(&pipe->mu);
        pipe->mu.Await(absl::Condition(
            +[](Pipe* p) { return !p->up_chunks.empty() || p->up_done || p->up_failed; },
            pipe.get()));
        if (pipe->up_chunks.empty()) {
          // The caller's body ended: the end of a chunked one; short of its declared length, or
          // broken off, the request to the service is abandoned.
          if (pipe->up_failed || !chunked) return false;
          sink.done();
          return true;
        }
        chunk = std::move(pipe->up_chunks.front());
        pipe->up_chunks.pop_front();
        pipe->up_queued -= chunk.size();
      }
      return sink.write(chunk.data(), chunked ? chunk.size() : std::min(chunk.size(), room));
    };
  }
  // The answer comes through a pipe from a thread of its own: its head first, then its body —
  // whole (JSON, whose links are rewritten, and answers of unknown length: up to the limit), or
  // streamed to the caller through a window of kStreamWindow bytes.
  out.response_handler = [pipe, upload_step](const httplib::Response& r) {
    absl::MutexLock lock(&pipe->mu);
    pipe->status = r.status;
    pipe->headers = r.headers;
    pipe->whole = upload_step ||
                  absl::StartsWith(r.get_header_value("Content-Type"), "application/json") ||
                  !r.has_header("Content-Length") || (r.status != 200 && r.status != 206);
    pipe->have_head = true;
    return true;
  };
  out.content_receiver = [pipe, limit](const char* data, size_t n, uint64_t, uint64_t) {
    absl::MutexLock lock(&pipe->mu);
    if (pipe->whole) {
      if (pipe->received + n > limit) {
        pipe->error = absl::StrCat("the answer is over the agent's limit of ", limit, " bytes");
        return false;
      }
    } else {
      pipe->mu.Await(absl::Condition(
          +[](Pipe* p) { return p->queued < kStreamWindow || p->abandoned; }, pipe.get()));
      if (pipe->abandoned) return false;
    }
    pipe->chunks.emplace_back(data, n);
    pipe->queued += n;
    pipe->received += n;
    return true;
  };
  audit.Forwarding(text.statement);
  const v1::Upstream up = connection.upstream();
  pipes_->enqueue([pipe, up, out = std::move(out), clients = clients_]() {
    auto client = clients->Take(up);
    auto result = client->send(out);
    absl::MutexLock lock(&pipe->mu);
    // Read whole (a receiver that stopped early fails the send): the connection is clean for
    // another request, even if the caller's side is done with the pipe already.
    if (result && pipe->error.empty()) clients->Give(up, std::move(client));
    if (result && !pipe->have_head) {
      // No body to read (204, HEAD): the client never called the response handler.
      pipe->status = result->status;
      pipe->headers = result->headers;
      pipe->whole = true;
      pipe->have_head = true;
    }
    if (!result && pipe->error.empty() && !pipe->abandoned) {
      pipe->error = absl::StrCat("the service could not be reached (",
                                 httplib::to_string(result.error()), ")");
    }
    pipe->finished = true;
  });
  if (streamed_upload) {
    // The caller's body, read on this thread into the pipe while the service's thread sends it.
    const bool read = (*reader)([&](const char* data, size_t n) {
      absl::MutexLock lock(&pipe->mu);
      pipe->mu.Await(absl::Condition(
          +[](Pipe* p) { return p->up_queued < kStreamWindow || p->finished; }, pipe.get()));
      if (pipe->finished) return false;  // the service's side ended: read no more
      pipe->up_chunks.emplace_back(data, n);
      pipe->up_queued += n;
      bytes_in += static_cast<int64_t>(n);
      recorder->RequestBody(absl::string_view(data, n));
      return true;
    });
    body_read = true;
    recorder->RequestEnd(static_cast<uint64_t>(bytes_in));
    absl::MutexLock lock(&pipe->mu);
    if (read) {
      pipe->up_done = true;
    } else {
      pipe->up_failed = true;
      if (pipe->error.empty() && !pipe->finished) {
        pipe->error = "the caller's upload broke off before its end";
      }
    }
  }
  bool streamed = false;
  {
    absl::MutexLock lock(&pipe->mu);
    pipe->mu.Await(absl::Condition(
        +[](Pipe* p) { return p->have_head || p->finished; }, pipe.get()));
    streamed = pipe->have_head && !pipe->whole;
    if (!streamed) pipe->mu.Await(absl::Condition(&pipe->finished));
  }
  const std::string content_type = ContentTypeOf(pipe->headers);
  if (!streamed) {
    pipe->Join();
    std::string body;
    body.reserve(pipe->received);
    for (const std::string& c : pipe->chunks) body += c;
    pipe->chunks.clear();
    Reply reply = Conclude(x, call, v, pipe->have_head, pipe->status, pipe->headers,
                           std::move(body), pipe->error, started);
    res.status = reply.status;
    for (const auto& [name, value] : reply.headers) res.set_header(name, value);
    bytes_out = static_cast<int64_t>(reply.body.size());
    if (!reply.body.empty()) {
      // A content provider, which the server does not compress again.
      auto kept = std::make_shared<const std::string>(std::move(reply.body));
      res.set_content_provider(kept->size(), reply.content_type,
                               [kept](size_t offset, size_t length, httplib::DataSink& sink) {
                                 return sink.write(kept->data() + offset, length);
                               });
    } else if (reply.status != 204 && reply.status != 304) {
      res.set_header("Content-Type", reply.content_type);
    }
    return end("closed");
  }

  // Streamed: the object's bytes as the service sends them (a content provider of the declared
  // length, which the server does not compress again). The event and the session's end are
  // written when the last byte left, or the transfer broke (the response's releaser).
  if (masked) {
    return StreamMasked(x.masking, content_type, pipe, std::move(audit_ptr), recorder,
                        std::move(admitted_ptr), text, started, who.connection, bytes_in, res);
  }
  res.status = pipe->status;
  size_t length = 0;
  for (const auto& [name, value] : pipe->headers) {
    if (ForwardedResponseHeader(name)) res.set_header(name, value);
    if (absl::EqualsIgnoreCase(name, "Content-Length")) (void)absl::SimpleAtoi(value, &length);
  }
  recorder->Answer(pipe->status, RecordedHeaders(pipe->headers, false));
  auto provider = [pipe, recorder](size_t, size_t length, httplib::DataSink& sink) {
    std::string chunk;
    {
      absl::MutexLock lock(&pipe->mu);
      pipe->mu.Await(absl::Condition(
          +[](Pipe* p) { return !p->chunks.empty() || p->finished; }, pipe.get()));
      if (pipe->chunks.empty()) return false;  // the service's answer ended short
      chunk = std::move(pipe->chunks.front());
      pipe->chunks.pop_front();
      pipe->queued -= chunk.size();
    }
    const size_t n = std::min(chunk.size(), length);
    recorder->AnswerBody(absl::string_view(chunk.data(), n));
    if (!sink.write(chunk.data(), n)) return false;
    absl::MutexLock lock(&pipe->mu);
    pipe->sent += n;
    return true;
  };
  auto release = [pipe, audit_ptr, admitted_ptr, recorder, text, started, bytes_in](bool success) {
    if (pipe->released.exchange(true)) return;
    audit::StatementEvent& event = EndPipe(pipe.get(), audit_ptr.get(), text, started);
    event.command_tags = absl::StrCat("HTTP ", pipe->status);
    event.bytes = static_cast<int64_t>(pipe->sent);
    if (!success) {
      event.error = pipe->error.empty()
                        ? std::string("the transfer to the caller ended before the last byte")
                        : pipe->error;
    }
    recorder->AnswerEnd(pipe->sent);
    audit_ptr->Answered();
    audit_ptr->Ended("closed", absl::Now() - started, bytes_in, static_cast<int64_t>(pipe->sent));
  };
  res.set_content_provider(length, content_type, provider, release);
}

}  // namespace sluice::agent::gcs
