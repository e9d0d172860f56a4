#include "agent/postgres/upstream_auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/crypto.h"

namespace sluice::agent::postgres {
namespace {

std::string Md5Hex(absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr);
  return HexEncode(absl::string_view(reinterpret_cast<const char*>(out), len));
}

std::string Hmac(absl::string_view key, absl::string_view data) { return HmacSha256(key, data); }

// The value of attribute `name` ("r", "s", "i", "v", "e") in a SCRAM message, or nullopt.
std::optional<std::string> Attribute(absl::string_view message, char name) {
  for (absl::string_view part : absl::StrSplit(message, ',')) {
    if (part.size() >= 2 && part[0] == name && part[1] == '=') return std::string(part.substr(2));
  }
  return std::nullopt;
}

}  // namespace

std::string Md5PasswordResponse(absl::string_view user, absl::string_view password,
                                absl::string_view salt) {
  std::string inner = Md5Hex(absl::StrCat(password, user));
  return "md5" + Md5Hex(absl::StrCat(inner, salt));
}

ScramSha256Client::ScramSha256Client(std::string user, std::string password, std::string nonce)
    : user_(std::move(user)), password_(std::move(password)), client_nonce_(std::move(nonce)) {
  if (client_nonce_.empty()) client_nonce_ = absl::Base64Escape(RandomBytes(24));
}

std::string ScramSha256Client::ClientFirst() const {
  return absl::StrCat("n,,n=", user_, ",r=", client_nonce_);
}

absl::StatusOr<std::string> ScramSha256Client::ClientFinal(absl::string_view server_first) {
  if (auto e = Attribute(server_first, 'e')) {
    return absl::PermissionDeniedError(absl::StrCat("upstream SCRAM error: ", *e));
  }
  auto nonce = Attribute(server_first, 'r');
  auto salt_b64 = Attribute(server_first, 's');
  auto iter_text = Attribute(server_first, 'i');
  int iterations = 0;
  std::string salt;
  if (!nonce || !salt_b64 || !iter_text || !absl::SimpleAtoi(*iter_text, &iterations) ||
      !absl::Base64Unescape(*salt_b64, &salt) || salt.empty()) {
    return absl::InvalidArgumentError("malformed SCRAM server-first-message from upstream");
  }
  if (!absl::StartsWith(*nonce, client_nonce_) || nonce->size() <= client_nonce_.size()) {
    return absl::PermissionDeniedError("upstream SCRAM nonce does not extend the client nonce");
  }
  if (iterations < 1 || iterations > kMaxIterations) {
    return absl::InvalidArgumentError(
        absl::StrCat("upstream SCRAM iteration count ", iterations, " is out of range"));
  }
  salted_password_.assign(32, '\0');
  if (PKCS5_PBKDF2_HMAC(password_.data(), static_cast<int>(password_.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, EVP_sha256(), 32,
                        reinterpret_cast<unsigned char*>(salted_password_.data())) != 1) {
    return absl::InternalError("PBKDF2 failed");
  }
  std::string client_key = Hmac(salted_password_, "Client Key");
  std::string stored_key = Sha256(client_key);
  std::string final_without_proof = absl::StrCat("c=biws,r=", *nonce);
  auth_message_ =
      absl::StrCat("n=", user_, ",r=", client_nonce_, ",", server_first, ",", final_without_proof);
  std::string signature = Hmac(stored_key, auth_message_);
  std::string proof(client_key.size(), '\0');
  for (size_t i = 0; i < proof.size(); ++i)
    proof[i] = static_cast<char>(client_key[i] ^ signature[i]);
  return absl::StrCat(final_without_proof, ",p=", absl::Base64Escape(proof));
}

absl::Status ScramSha256Client::VerifyServerFinal(absl::string_view server_final) const {
  if (auto e = Attribute(server_final, 'e')) {
    return absl::PermissionDeniedError(absl::StrCat("upstream SCRAM error: ", *e));
  }
  auto v = Attribute(server_final, 'v');
  std::string got;
  if (!v || !absl::Base64Unescape(*v, &got) || auth_message_.empty()) {
    return absl::InvalidArgumentError("malformed SCRAM server-final-message from upstream");
  }
  std::string server_key = Hmac(salted_password_, "Server Key");
  if (!ConstantTimeEquals(got, Hmac(server_key, auth_message_))) {
    return absl::PermissionDeniedError(
        "upstream server's SCRAM signature is wrong: it does not know the password (spoofed?)");
  }
  return absl::OkStatus();
}

}  // namespace sluice::agent::postgres
