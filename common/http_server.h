// A small HTTP server for operational endpoints: /healthz (the process is up), /readyz (ready
// to serve), and any extra GET routes (/metrics, /status). Used by the control plane and the agent.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace sluice {

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();

  // Adds `GET path`; `render` returns the body, served with `content_type`. Call before Start.
  void AddGet(const std::string& path, const std::string& content_type,
              std::function<std::string()> render);

  // A route with a regular-expression path: `matches` are its groups, `params` the query string
  // (and, for a form POST, the form fields).
  struct Request {
    std::vector<std::string> matches;
    std::map<std::string, std::string> params;
  };
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  using Handler = std::function<Response(const Request&)>;
  void AddGet(const std::string& pattern, Handler handler);
  void AddPost(const std::string& pattern, Handler handler);

  // Binds `host:port` (port 0 = any free port) and serves on a background thread. Returns the
  // bound port.
  absl::StatusOr<int> Start(const std::string& listen);
  void SetReady(bool ready) { ready_.store(ready); }
  // While ready, /readyz also asks `check` (before Start; called on the server's threads): a
  // non-empty answer says why the process is not ready now (503, "not ready: <why>").
  void SetReadyCheck(std::function<std::string()> check) { ready_check_ = std::move(check); }
  void Stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> ready_{false};
  std::function<std::string()> ready_check_;
};

// Splits "scheme://host[:port]/path?query" into the origin ("scheme://host[:port]") and the
// path with its query ("/" when there is none), as an HTTP client takes them. InvalidArgument
// when there is no "://".
absl::Status SplitUrl(const std::string& url, std::string* origin, std::string* path);

// Splits "host:port" ("[::1]:80" too). InvalidArgument when malformed.
absl::Status SplitHostPort(const std::string& listen, std::string* host, int* port);

}  // namespace sluice
