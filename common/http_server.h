// A small HTTP server for operational endpoints: /healthz (the process is up), /readyz (ready
// to serve), and any extra GET routes (/metrics, /status). Used by the control plane and the agent.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

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

  // Binds `host:port` (port 0 = any free port) and serves on a background thread. Returns the
  // bound port.
  absl::StatusOr<int> Start(const std::string& listen);
  void SetReady(bool ready) { ready_.store(ready); }
  void Stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> ready_{false};
};

// Splits "host:port" ("[::1]:80" too). InvalidArgument when malformed.
absl::Status SplitHostPort(const std::string& listen, std::string* host, int* port);

}  // namespace sluice
