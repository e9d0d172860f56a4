#include "cli/config.h"

#include <grpcpp/grpcpp.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace sluice::cli {

absl::StatusOr<ClientConfig> ResolveConfig(ClientConfig c) {
  // Flags beat the environment, which beats the config file. A token and a token file are one
  // setting: the first level that gives either wins.
  auto take_token = [&c](const std::string& token, const std::string& token_file) {
    if (!c.token.empty() || !c.token_file.empty()) return;
    c.token = token;
    c.token_file = token_file;
  };
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? "" : v;
  };
  if (c.server.empty()) c.server = env("SLUICE_SERVER");
  if (c.ca_file.empty()) c.ca_file = env("SLUICE_CA_FILE");
  if (c.config_file.empty()) c.config_file = env("SLUICE_CONFIG");
  take_token(env("SLUICE_TOKEN"), env("SLUICE_TOKEN_FILE"));
  bool explicit_config = !c.config_file.empty();
  if (c.config_file.empty()) {
    if (const char* home = std::getenv("HOME"))
      c.config_file = absl::StrCat(home, "/.config/sluice/config.yaml");
  }
  if (!c.config_file.empty() && FileExists(c.config_file)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(c.config_file, 1 << 20));
    YAML::Node node;
    try {
      node = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      // yaml-cpp reports syntax errors by exception; they stop here.
      return absl::InvalidArgumentError(absl::StrCat(c.config_file, ": YAML syntax error at line ",
                                                     e.mark.line + 1, ": ", e.msg));
    }
    if (!node.IsMap()) return absl::InvalidArgumentError(c.config_file + ": expected a mapping");
    auto get = [&node](const char* key) -> std::string {
      return node[key] && node[key].IsScalar() ? node[key].Scalar() : "";
    };
    if (c.server.empty()) c.server = get("server");
    if (c.ca_file.empty()) c.ca_file = get("ca_file");
    take_token(get("token"), get("token_file"));
  } else if (explicit_config) {
    return absl::NotFoundError(absl::StrCat("config file ", c.config_file, " does not exist"));
  }
  if (c.server.empty()) c.server = "127.0.0.1:7443";
  if (c.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "no CA file: give --ca-file, SLUICE_CA_FILE, or ca_file in the config file (the control "
        "plane's own CA is <data-dir>/tls/ca.crt)");
  }
  if (c.token.empty() && !c.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(c.token_file, 4096));
    c.token = std::string(absl::StripAsciiWhitespace(text));
  }
  if (c.token.empty()) {
    return absl::InvalidArgumentError(
        "no admin token: give --token-file, SLUICE_TOKEN_FILE, --token, SLUICE_TOKEN, or "
        "token_file in the config file (the bootstrap token is <data-dir>/admin.token)");
  }
  return c;
}

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(const ClientConfig& config) {
  ASSIGN_OR_RETURN(std::string ca, ReadFile(config.ca_file, 1 << 20));
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto client = std::unique_ptr<AdminClient>(new AdminClient());
  client->stub_ = v1::AdminService::NewStub(
      grpc::CreateCustomChannel(config.server, grpc::SslCredentials(ssl), args));
  client->token_ = config.token;
  return client;
}

std::unique_ptr<grpc::ClientContext> AdminClient::Context(int timeout_seconds) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + token_);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_seconds));
  return ctx;
}

}  // namespace sluice::cli
