// One PostgreSQL client session through the agent, from the first byte to the last:
//   pre-startup codes (SSLRequest, GSSENCRequest 'N', direct TLS, CancelRequest), the
//   StartupMessage (3.0 / 3.2, NegotiateProtocolVersion, replication refused), the caller's
//   token as a cleartext password verified against the snapshot's issuers, authorization by
//   AccessRules, the upstream login with the Connection's credentials, then a relay of framed
//   messages in both directions with every length checked. A protocol error closes the session.
#pragma once

#include <chrono>
#include <string>

#include "agent/approvals/broker.h"
#include "agent/audit/event_sink.h"
#include "agent/audit/inflight.h"
#include "agent/policy_holder.h"
#include "agent/postgres/cancel_registry.h"
#include "agent/postgres/recorder.h"
#include "agent/postgres/stream.h"
#include "agent/session/limits.h"
#include "common/wire/postgres/decoder.h"

namespace sluice::agent::postgres {

struct SessionConfig {
  bool tls_available = false;    // a certificate is loaded: SSLRequest is answered 'S'
  bool allow_plaintext = false;  // sessions without TLS are allowed (loopback, tests)
  wire::postgres::DecodeLimits limits;
  std::chrono::steady_clock::duration login_timeout = std::chrono::seconds(30);
  RecordingLimits recording;
};

struct SessionDeps {
  PolicyHolder* policy = nullptr;
  CancelRegistry* cancels = nullptr;
  asio::ssl::context* server_tls = nullptr;
  const SessionConfig* config = nullptr;
  EventSink* events = nullptr;          // audit events of every session and statement
  ApprovalBroker* approvals = nullptr;  // statements held for approval; null = none can be held
  InflightTable* inflight = nullptr;  // requests in flight, for a restart after a kill; null = none
  SessionLimiter* limiter = nullptr;  // sessions per connection and per caller; null = no limits
};

asio::awaitable<void> RunSession(asio::ip::tcp::socket socket, SessionDeps deps);

}  // namespace sluice::agent::postgres
