#include "controlplane/service/master_keys.h"

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/policy/resource.h"
#include "common/status_macros.h"
#include "controlplane/service/policy_manager.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::controlplane {
namespace {

// The sealed keys: stored name, and the label each was derived with from the master key.
struct DerivedKey {
  const char* name;
  const char* label;
  std::string MasterKeys::*field;
};
constexpr DerivedKey kDerivedKeys[] = {
    {"masking_hash_key", "sluice masking hash key v1", &MasterKeys::masking_hash_key},
    {"approval_link_key", "sluice approval links v1", &MasterKeys::approval_link_key},
};

std::string KeyAad(absl::string_view name) { return absl::StrCat("sluice/v1/key/", name); }

// What a sealed row is, for an error and for its additional data.
struct Described {
  std::string what;
  std::string aad;
};

absl::StatusOr<Described> Describe(const SqliteStore::SealedRow& row) {
  if (row.source == SqliteStore::SealedRow::Source::kKey) {
    return Described{absl::StrCat("the control plane's key '", row.name, "'"), KeyAad(row.name)};
  }
  v1::Resource resource;
  if (!resource.ParseFromString(row.spec)) {
    return absl::DataLossError("a stored resource with a sealed secret cannot be decoded");
  }
  std::string what =
      absl::StrCat("the secret of ", policy::KindOf(resource), " '", policy::NameOf(resource), "'");
  if (row.source == SqliteStore::SealedRow::Source::kRolloutResource)
    absl::StrAppend(&what, " (kept by a rollout)");
  return Described{std::move(what), PolicyManager::SecretAad(resource)};
}

}  // namespace

absl::StatusOr<MasterKeys> OpenMasterKeys(SqliteStore* store, const std::string& master_key,
                                          const std::string& previous) {
  MasterKeys keys;
  if (!previous.empty() && previous == master_key) {
    return absl::InvalidArgumentError(
        "--previous-master-key-file holds the same key as the master key: give the old key");
  }
  // Every sealed value opens under the master key, or under the previous one and is sealed again.
  ASSIGN_OR_RETURN(
      keys.resealed,
      store->ResealAll([&](const SqliteStore::SealedRow& row) -> absl::StatusOr<std::string> {
        ASSIGN_OR_RETURN(const Described d, Describe(row));
        if (AesGcmOpen(master_key, row.sealed, d.aad).ok()) return row.sealed;
        if (previous.empty()) {
          return absl::DataLossError(
              absl::StrCat("cannot decrypt ", d.what,
                           " with the master key (is --master-key-file the key this data dir "
                           "was created with? To change keys, give the old one as "
                           "--previous-master-key-file)"));
        }
        auto plain = AesGcmOpen(previous, row.sealed, d.aad);
        if (!plain.ok()) {
          return absl::DataLossError(
              absl::StrCat("cannot decrypt ", d.what,
                           " with the master key or the previous master key; nothing was "
                           "changed (is --previous-master-key-file the key the data dir used?)"));
        }
        return AesGcmSeal(master_key, *plain, d.aad);
      }));
  // The derived keys: stored ones opened (ResealAll moved them), missing ones derived from the key
  // the data dir used until now and stored.
  for (const DerivedKey& k : kDerivedKeys) {
    ASSIGN_OR_RETURN(std::optional<std::string> sealed, store->SealedKey(k.name));
    if (sealed) {
      ASSIGN_OR_RETURN(keys.*k.field, AesGcmOpen(master_key, *sealed, KeyAad(k.name)));
      continue;
    }
    keys.*k.field = HmacSha256(previous.empty() ? master_key : previous, k.label);
    ASSIGN_OR_RETURN(std::string seal, AesGcmSeal(master_key, keys.*k.field, KeyAad(k.name)));
    RETURN_IF_ERROR(store->AddSealedKey(k.name, seal));
  }
  return keys;
}

}  // namespace sluice::controlplane
