// Client side of PostgreSQL password authentication, for the agent's upstream leg: MD5 and
// SASL SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding. Pure functions over OpenSSL
// primitives (PBKDF2, HMAC, SHA-256, MD5); the caller moves the messages.
// https://www.postgresql.org/docs/current/sasl-authentication.html
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::postgres {

// "md5" + md5(md5(password + user) + salt), as PasswordMessage content.
std::string Md5PasswordResponse(absl::string_view user, absl::string_view password,
                                absl::string_view salt);

// One SCRAM-SHA-256 exchange. Usage: ClientFirst() -> send in SASLInitialResponse; on
// AuthenticationSASLContinue call ClientFinal(server_first) -> send in SASLResponse; on
// AuthenticationSASLFinal call VerifyServerFinal(server_final): the server must prove it knows
// the password too.
class ScramSha256Client {
 public:
  // PostgreSQL ignores the SCRAM user name (it uses the startup user), so `user` is normally "".
  // `nonce` is for tests; empty = 24 random bytes.
  ScramSha256Client(std::string user, std::string password, std::string nonce = "");

  static constexpr absl::string_view kMechanism = "SCRAM-SHA-256";
  // Iteration counts above this are refused, so a hostile upstream cannot burn agent CPU.
  static constexpr int kMaxIterations = 1 << 20;

  std::string ClientFirst() const;
  absl::StatusOr<std::string> ClientFinal(absl::string_view server_first);
  absl::Status VerifyServerFinal(absl::string_view server_final) const;

 private:
  std::string user_;
  std::string password_;
  std::string client_nonce_;
  std::string auth_message_;
  std::string salted_password_;
};

}  // namespace sluice::agent::postgres
