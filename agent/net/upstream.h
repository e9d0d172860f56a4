// The agent's leg to a real server, for any protocol: where it is (from the Connection), a TCP
// connection to it, and the client side of TLS as the Connection says (disable / require: no
// certificate check / verify-full: chain and host name). How TLS is asked for on the wire
// (PostgreSQL's SSLRequest, MySQL's CLIENT_SSL) is the protocol's.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/net/stream.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::net {

struct UpstreamTarget {
  std::string host;
  uint16_t port = 0;
  v1::UpstreamTls tls = v1::UPSTREAM_TLS_REQUIRE;
  std::string ca_file;  // for verify-full; empty = system CAs
};

// The Connection's upstream (TLS defaults to require).
UpstreamTarget TargetOf(const v1::Connection& connection);

// A connected socket (TCP_NODELAY) and the TLS client context for the target; the context must
// outlive the stream made over the socket.
struct Dialed {
  asio::ip::tcp::socket socket;
  std::unique_ptr<asio::ssl::context> tls_context;
};
asio::awaitable<absl::StatusOr<Dialed>> Dial(asio::any_io_executor executor,
                                             const UpstreamTarget& target);

// Sets `stream`'s certificate checks and server name as the target's TLS mode says (before its
// ClientHandshake). A CA file that cannot be loaded is FailedPrecondition.
absl::Status PrepareClientTls(const UpstreamTarget& target, asio::ssl::context* ctx,
                              Stream* stream);

}  // namespace sluice::agent::net
