// One MySQL / MariaDB client session through the agent, from the greeting to the last packet:
//   the agent's HandshakeV10 (caching_sha2_password, TLS required), the SSLRequest and TLS, the
//   HandshakeResponse (its database names the Connection; without one, the user does), the
//   caller's token by caching_sha2_password full authentication over TLS (an AuthSwitchRequest
//   first when the client started with another method), admission by the session core, the
//   upstream login with the Connection's credentials and the session's pins (read-only for a read
//   grant, checked; the SQL mode the agent lexes with), then commands one at a time: each
//   decided, forwarded, its answer relayed and its event written. A protocol error closes the
//   session.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <chrono>

#include "agent/approvals/broker.h"
#include "agent/audit/event_sink.h"
#include "agent/audit/inflight.h"
#include "agent/mysql/kill_registry.h"
#include "agent/policy_holder.h"
#include "agent/session/limits.h"
#include "agent/session/recorder.h"
#include "common/wire/mysql/packets.h"

namespace sluice::agent::mysql {

struct SessionConfig {
  bool tls_available = false;    // a certificate is loaded: CLIENT_SSL is offered
  bool allow_plaintext = false;  // sessions without TLS are allowed (loopback, tests)
  wire::mysql::DecodeLimits limits;
  std::chrono::steady_clock::duration login_timeout = std::chrono::seconds(30);
  session::RecordingLimits recording;
};

struct SessionDeps {
  PolicyHolder* policy = nullptr;
  asio::ssl::context* server_tls = nullptr;
  const SessionConfig* config = nullptr;
  EventSink* events = nullptr;          // audit events of every session and statement
  ApprovalBroker* approvals = nullptr;  // statements held for approval; null = none can be held
  InflightTable* inflight = nullptr;    // requests in flight; null = none
  SessionLimiter* limiter = nullptr;    // sessions per connection and per caller; null = none
  KillRegistry* kills = nullptr;        // the port's sessions by the agent's connection id
};

asio::awaitable<void> RunSession(asio::ip::tcp::socket socket, SessionDeps deps);

}  // namespace sluice::agent::mysql
