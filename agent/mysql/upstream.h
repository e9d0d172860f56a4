// The agent's leg to the real MySQL / MariaDB server: TCP, TLS as the Connection says (the
// SSLRequest, then TLS disable / require / verify-full), the HandshakeResponse with the injected
// user, and the server's authentication methods: mysql_native_password, caching_sha2_password
// (fast path; full authentication over TLS, or under the server's RSA key without it) and a
// cleartext password over TLS only. MariaDB's client_ed25519 is refused with a clear error (not
// built yet). The caller's token never goes upstream, and the upstream password never reaches the
// caller or an error message.
//
// Then the session is pinned (session_state.h decides what): one COM_QUERY at a time through
// RunQuery, which reads a text result set whole (small results only: the agent's own queries).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/mysql/packet_stream.h"
#include "agent/net/upstream.h"
#include "common/wire/mysql/packets.h"

namespace sluice::agent::mysql {

using net::TargetOf;
using net::UpstreamTarget;

// Capabilities the agent relays between client and server: the client's choice of these goes
// upstream as it is. Everything else a client asks for is not negotiated (compression, LOCAL
// INFILE, session tracking, query attributes, optional metadata, ...).
inline constexpr uint32_t kRelayedCapabilities =
    wire::mysql::kClientFoundRows | wire::mysql::kClientInteractive |
    wire::mysql::kClientMultiStatements | wire::mysql::kClientDeprecateEof;
// Capabilities the agent always uses on both legs.
inline constexpr uint32_t kBaseCapabilities =
    wire::mysql::kClientLongPassword | wire::mysql::kClientLongFlag |
    wire::mysql::kClientProtocol41 | wire::mysql::kClientTransactions |
    wire::mysql::kClientSecureConnection | wire::mysql::kClientMultiResults |
    wire::mysql::kClientPsMultiResults | wire::mysql::kClientPluginAuth |
    wire::mysql::kClientPluginAuthLenencClientData;

struct UpstreamLogin {
  std::string user;
  std::string password;
  std::string database;          // empty: none
  uint32_t relayed = 0;          // the client's choice of kRelayedCapabilities
  uint32_t mariadb_relayed = 0;  // and of MariaDB's extended ones (COM_STMT_BULK_EXECUTE)
  uint8_t charset = 45;          // utf8mb4_general_ci
};

struct UpstreamSession {
  std::unique_ptr<asio::ssl::context> tls_context;  // what the stream's TLS refers to
  std::unique_ptr<PacketStream> stream;
  uint32_t connection_id = 0;         // the server's thread id (KILL QUERY)
  uint32_t capabilities = 0;          // as negotiated
  uint32_t mariadb_capabilities = 0;  // MariaDB's extended ones, as negotiated
  std::string server_version;
  std::string auth_plugin;  // the method that logged in
};

// Opens and logs in. Errors are fit to show the caller: they never contain the password.
asio::awaitable<absl::StatusOr<UpstreamSession>> ConnectUpstream(
    asio::any_io_executor executor, const UpstreamTarget& target, const UpstreamLogin& login,
    const wire::mysql::DecodeLimits& limits);

// A text result set read whole (NULL values are nullopt).
struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;
  uint64_t affected_rows = 0;
};

// Runs `sql` with COM_QUERY on an idle session (one statement). The server's error is
// FailedPrecondition with its message and number. `deprecate_eof`: as negotiated.
asio::awaitable<absl::StatusOr<QueryResult>> RunQuery(PacketStream* stream, absl::string_view sql,
                                                      bool deprecate_eof,
                                                      const wire::mysql::DecodeLimits& limits);

// The server's ERR payload, as an error message ("<message> (error N, SQLSTATE S)").
std::string ServerError(absl::string_view payload);

}  // namespace sluice::agent::mysql
