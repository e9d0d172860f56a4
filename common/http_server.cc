#include "common/http_server.h"

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sluice {

absl::Status SplitUrl(const std::string& url, std::string* origin, std::string* path) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return absl::InvalidArgumentError("not a URL");
  size_t path_start = url.find('/', scheme_end + 3);
  *origin = url.substr(0, path_start);
  *path = path_start == std::string::npos ? "/" : url.substr(path_start);
  return absl::OkStatus();
}

absl::Status SplitHostPort(const std::string& listen, std::string* host, int* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return absl::InvalidArgumentError(absl::StrCat("'", listen, "' is not host:port"));
  }
  *host = listen.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  if (!absl::SimpleAtoi(listen.substr(colon + 1), port) || *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", listen, "' has no valid port"));
  }
  return absl::OkStatus();
}

HttpServer::HttpServer() : server_(std::make_unique<httplib::Server>()) {
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  server_->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    std::string why = ready_.load() && ready_check_ ? ready_check_() : "";
    if (ready_.load() && why.empty()) {
      res.set_content("ready\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content(why.empty() ? "not ready\n" : "not ready: " + why + "\n", "text/plain");
    }
  });
}

void HttpServer::AddGet(const std::string& path, const std::string& content_type,
                        std::function<std::string()> render) {
  server_->Get(path, [content_type, render = std::move(render)](const httplib::Request&,
                                                                httplib::Response& res) {
    res.set_content(render(), content_type);
  });
}

namespace {

httplib::Server::Handler Adapt(HttpServer::Handler handler) {
  return [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    HttpServer::Request r;
    for (size_t i = 1; i < req.matches.size(); ++i) r.matches.push_back(req.matches[i].str());
    for (const auto& [k, v] : req.params) r.params.emplace(k, v);
    HttpServer::Response out = handler(r);
    res.status = out.status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(out.body, out.content_type);
  };
}

}  // namespace

void HttpServer::AddGet(const std::string& pattern, Handler handler) {
  server_->Get(pattern, Adapt(std::move(handler)));
}

void HttpServer::AddPost(const std::string& pattern, Handler handler) {
  server_->Post(pattern, Adapt(std::move(handler)));
}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<int> HttpServer::Start(const std::string& listen) {
  std::string host;
  int port = 0;
  if (absl::Status st = SplitHostPort(listen, &host, &port); !st.ok()) return st;
  if (port == 0) {
    port = server_->bind_to_any_port(host);
    if (port < 0) return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", listen));
  } else if (!server_->bind_to_port(host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", listen));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return port;
}

void HttpServer::Stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace sluice
