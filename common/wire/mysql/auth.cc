#include "common/wire/mysql/auth.h"

#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::wire::mysql {
namespace {

std::string Xor(std::string a, absl::string_view b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] = static_cast<char>(a[i] ^ b[i]);
  return a;
}

}  // namespace

std::string NativePasswordReply(absl::string_view password, absl::string_view scramble) {
  if (password.empty()) return "";
  const std::string stage1 = Sha1(password);
  const std::string stage2 = Sha1(stage1);
  return Xor(stage1, Sha1(absl::StrCat(scramble, stage2)));
}

std::string CachingSha2Reply(absl::string_view password, absl::string_view scramble) {
  if (password.empty()) return "";
  const std::string m1 = Sha256(password);
  const std::string m2 = Sha256(m1);
  return Xor(m1, Sha256(absl::StrCat(m2, scramble)));
}

absl::StatusOr<std::string> Sha2RsaReply(absl::string_view password, absl::string_view scramble,
                                         absl::string_view public_key_pem) {
  if (scramble.empty()) return absl::InvalidArgumentError("the server sent no scramble");
  std::string plain(password);
  plain.push_back('\0');
  for (size_t i = 0; i < plain.size(); ++i) {
    plain[i] = static_cast<char>(plain[i] ^ scramble[i % scramble.size()]);
  }
  return RsaOaepEncrypt(public_key_pem, plain);
}

}  // namespace sluice::wire::mysql
