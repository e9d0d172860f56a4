// The agent's leg to the real database: TCP, TLS as the Connection says (disable / require /
// verify-full), StartupMessage with the injected user, and password authentication (trust,
// cleartext, MD5, SCRAM-SHA-256). The caller's token never goes upstream, and the upstream
// password never reaches the caller.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/net/upstream.h"
#include "agent/postgres/stream.h"
#include "common/wire/postgres/messages.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::postgres {

using net::TargetOf;
using net::UpstreamTarget;

struct UpstreamLogin {
  std::string user;
  std::string password;
  std::string database;
  // Passed through from the client's startup (application_name, client_encoding, DateStyle,
  // TimeZone, extra_float_digits, options, ...), with the agent's own additions.
  std::vector<std::pair<std::string, std::string>> parameters;
};

struct UpstreamSession {
  std::unique_ptr<Stream> stream;
  std::unique_ptr<asio::ssl::context> tls_context;  // owns what the stream's TLS refers to
  std::vector<wire::postgres::ParameterStatus> parameters;
  wire::postgres::BackendKeyData key;
  std::vector<std::string> notices;  // NoticeResponse messages (encoded) sent during login
  char transaction_status = 'I';
};

// Opens a TCP connection to the target and negotiates TLS per its mode.
asio::awaitable<
    absl::StatusOr<std::pair<std::unique_ptr<Stream>, std::unique_ptr<asio::ssl::context>>>>
OpenUpstream(asio::any_io_executor executor, const UpstreamTarget& target);

// Opens, logs in, and reads up to the first ReadyForQuery. Errors are fit to show the caller:
// they never contain the password.
asio::awaitable<absl::StatusOr<UpstreamSession>> ConnectUpstream(
    asio::any_io_executor executor, const UpstreamTarget& target, const UpstreamLogin& login,
    const wire::postgres::DecodeLimits& limits);

// Sends a CancelRequest for `key` to the target (new connection, TLS as configured).
asio::awaitable<absl::Status> SendUpstreamCancel(asio::any_io_executor executor,
                                                 const UpstreamTarget& target,
                                                 const wire::postgres::BackendKeyData& key);

}  // namespace sluice::agent::postgres
