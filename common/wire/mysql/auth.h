// What a MySQL client sends for its password in the two scramble-based methods the agent uses
// toward upstream servers (the caller's token never goes upstream: these carry the Connection's
// credential). https://mariadb.com/kb/en/connection/#authentication-plugins
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::wire::mysql {

// mysql_native_password: SHA1(password) XOR SHA1(scramble || SHA1(SHA1(password))); empty for an
// empty password (the protocol's convention). `scramble`: the server's 20 bytes.
std::string NativePasswordReply(absl::string_view password, absl::string_view scramble);

// caching_sha2_password's fast path: SHA256(password) XOR SHA256(SHA256(SHA256(password)) ||
// scramble); empty for an empty password.
std::string CachingSha2Reply(absl::string_view password, absl::string_view scramble);

// caching_sha2_password's (and sha256_password's) full authentication without TLS: the password
// with its NUL, XORed with the scramble (repeated), RSA-OAEP-encrypted under the server's public
// key (PEM, as the server sends it).
absl::StatusOr<std::string> Sha2RsaReply(absl::string_view password, absl::string_view scramble,
                                         absl::string_view public_key_pem);

}  // namespace sluice::wire::mysql
