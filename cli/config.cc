#include "cli/config.h"

#include <grpcpp/grpcpp.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace sluice::cli {
namespace {

void FromEnv(std::string* field, const char* name) {
  if (!field->empty()) return;
  if (const char* v = std::getenv(name)) *field = v;
}

}  // namespace

absl::StatusOr<ClientConfig> ResolveConfig(ClientConfig c) {
  FromEnv(&c.server, "SLUICE_SERVER");
  FromEnv(&c.ca_file, "SLUICE_CA_FILE");
  FromEnv(&c.token, "SLUICE_TOKEN");
  FromEnv(&c.token_file, "SLUICE_TOKEN_FILE");
  FromEnv(&c.config_file, "SLUICE_CONFIG");
  bool explicit_config = !c.config_file.empty();
  if (c.config_file.empty()) {
    if (const char* home = std::getenv("HOME")) c.config_file = absl::StrCat(home, "/.config/sluice/config.yaml");
  }
  if (!c.config_file.empty() && FileExists(c.config_file)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(c.config_file, 1 << 20));
    YAML::Node node;
    try {
      node = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(c.config_file, ": YAML syntax error at line ",
                                                     e.mark.line + 1, ": ", e.msg));
    }
    if (!node.IsMap()) return absl::InvalidArgumentError(c.config_file + ": expected a mapping");
    auto take = [&](std::string* field, const char* key) {
      if (field->empty() && node[key] && node[key].IsScalar()) *field = node[key].Scalar();
    };
    take(&c.server, "server");
    take(&c.ca_file, "ca_file");
    take(&c.token, "token");
    take(&c.token_file, "token_file");
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
