// How sluicectl finds the control plane: flags, then environment variables, then a config file.
//
//   --server / SLUICE_SERVER / server:        host:port of the control plane's gRPC port
//   --ca-file / SLUICE_CA_FILE / ca_file:     CA certificate to trust (PEM)
//   --token / SLUICE_TOKEN / token:           admin token
//   --token-file / SLUICE_TOKEN_FILE / token_file: file holding the admin token
//   --config / SLUICE_CONFIG:                 config file (default ~/.config/sluice/config.yaml)
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "sluice/v1/admin.grpc.pb.h"

namespace sluice::cli {

struct ClientConfig {
  std::string server;
  std::string ca_file;
  std::string token;
  std::string token_file;
  std::string config_file;
};

// Fills what flags left empty from the environment and the config file, then checks that a
// server, a CA file and a token are known. Errors say where each can be given.
absl::StatusOr<ClientConfig> ResolveConfig(ClientConfig flags);

// An authenticated AdminService client.
class AdminClient {
 public:
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(const ClientConfig& config);
  v1::AdminService::Stub* stub() { return stub_.get(); }
  // A context carrying the token, with a deadline.
  std::unique_ptr<grpc::ClientContext> Context(int timeout_seconds = 30) const;

 private:
  std::unique_ptr<v1::AdminService::Stub> stub_;
  std::string token_;
};

}  // namespace sluice::cli
