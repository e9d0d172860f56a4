#include "controlplane/audit/trail_anchor.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::controlplane {
namespace {

// An agent id goes in with its length: no id can make one signed text read as another.
std::string Field(absl::string_view text) { return absl::StrCat(text.size(), ":", text); }

}  // namespace

std::string TrailHeadMessage(const TrailHead& h) {
  return absl::StrCat("sluice-trail-head v1 agent=", Field(h.agent_id),
                      " genesis=", h.genesis_sequence, ":", HexEncode(h.genesis_hash),
                      " last=", h.last_sequence, ":", HexEncode(h.last_hash),
                      " records=", h.records, " origin=", static_cast<int>(h.origin),
                      " anchored_through=", h.anchored_through, " time=", h.time_ms);
}

std::string TrailTotalsMessage(const TrailTotals& t) {
  return absl::StrCat("sluice-trail-totals v1 agents=", t.agents,
                      " origin=", static_cast<int>(t.origin), " time=", t.time_ms);
}

std::string PurgeTombstoneMessage(const PurgeTombstone& t) {
  return absl::StrCat("sluice-trail-tombstone v1 audit=", t.audit_id, " agent=", Field(t.agent_id),
                      " time=", t.time_ms, " events=", t.events, " first=", t.first_sequence,
                      " last=", t.last_sequence, " digest=", HexEncode(t.digest));
}

std::string ChainResumeMessage(const ChainResume& r) {
  return absl::StrCat(
      "sluice-trail-resume v1 agent=", Field(r.agent_id), " after=", r.resumed_after_sequence, ":",
      HexEncode(r.resumed_after_hash), " held_through=", r.held_through_sequence, ":",
      HexEncode(r.held_through_hash), " held_records=", r.held_records, " time=", r.time_ms);
}

std::string PurgeDigestStart() { return std::string(32, '\0'); }

void PurgeDigestAdd(std::string* digest, uint64_t sequence, absl::string_view purged_hash) {
  char be[8];
  absl::big_endian::Store64(be, sequence);
  *digest = Sha256(absl::StrCat(*digest, absl::string_view(be, sizeof(be)), purged_hash));
}

struct TrailSigner::Key {
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

TrailSigner::TrailSigner(std::unique_ptr<Key> key, std::string public_key)
    : key_(std::move(key)), public_key_(std::move(public_key)) {}

TrailSigner::~TrailSigner() = default;

absl::StatusOr<std::unique_ptr<TrailSigner>> TrailSigner::FromPem(const std::string& private_pem) {
  auto key = std::make_unique<Key>();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(private_pem.data(), static_cast<int>(private_pem.size())), BIO_free);
  key->pkey = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (key->pkey == nullptr || EVP_PKEY_get_id(key->pkey) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError("the trail key is not an Ed25519 private key (PEM)");
  }
  std::string pub(32, '\0');
  size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(key->pkey, reinterpret_cast<unsigned char*>(pub.data()), &len) !=
          1 ||
      len != 32) {
    return absl::InternalError("cannot read the trail key's public half");
  }
  return std::unique_ptr<TrailSigner>(new TrailSigner(std::move(key), std::move(pub)));
}

absl::StatusOr<std::string> TrailSigner::Sign(absl::string_view message) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::string sig(64, '\0');
  size_t len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != 64) {
    return absl::InternalError("signing with the trail key failed");
  }
  return sig;
}

bool TrailSigner::Verify(absl::string_view message, absl::string_view signature) const {
  return Ed25519Verify(public_key_, message, signature);
}

}  // namespace sluice::controlplane
