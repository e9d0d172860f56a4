// What a MySQL client sends for its password in the scramble-based methods the agent uses toward
// upstream servers (the caller's token never goes upstream: these carry the Connection's
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

// MariaDB's ed25519 (client_ed25519): the 64-byte Ed25519 signature R || S of the server's 32-byte
// `scramble`, made with a key whose secret scalar and nonce prefix come from SHA-512 of the
// password itself (of any length, empty included) where RFC 8032 hashes a 32-byte seed. The
// server, which stores only the public key, checks it as a standard Ed25519 signature.
// InvalidArgument when `scramble` is not 32 bytes (MariaDB's client refuses those too).
// https://mariadb.com/kb/en/authentication-plugin-ed25519/
absl::StatusOr<std::string> Ed25519PasswordReply(absl::string_view password,
                                                 absl::string_view scramble);

// The 32-byte public key of `password` under client_ed25519: what the server stores, base64
// without padding, as the user's authentication_string (and `SELECT ed25519_password(pw)`
// returns). Empty only if libsodium cannot be initialised.
std::string Ed25519PasswordPublicKey(absl::string_view password);

}  // namespace sluice::wire::mysql
