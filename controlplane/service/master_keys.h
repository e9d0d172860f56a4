// The control plane's master key at start: what is sealed under it is opened, a previous master
// key's seals are moved to the new one, and the keys derived once from a master key are kept.
//
// The master key seals the inline secrets of policy resources (the live ones and a rollout's saved
// documents) and two keys of the control plane's own: the masking hash key (the `hash` masking
// strategy's tokens) and the approval links' key. Those two were derived from the master key, and
// are now stored sealed (table sealed_keys) the first time a control plane starts with this code,
// derived as before: a masked value keeps its token, and an approval link its validity, when the
// master key changes.
//
// Rotation (docs/deploy.md, "Rotate keys and tokens"): start with the new key as the master key
// and the old one as `previous`. Everything sealed under the old key is sealed again under the new
// one in one transaction, before anything is served; a value neither key opens stops the start
// with its name, and nothing is changed. Starting again with `previous` still set does nothing
// more (each value is tried under the master key first).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "controlplane/store/sqlite_store.h"

namespace sluice::controlplane {

struct MasterKeys {
  std::string masking_hash_key;   // 32 bytes
  std::string approval_link_key;  // 32 bytes
  int resealed = 0;               // values moved from the previous master key to this one
};

// `previous` empty: no rotation (a value the master key does not open is an error).
absl::StatusOr<MasterKeys> OpenMasterKeys(SqliteStore* store, const std::string& master_key,
                                          const std::string& previous);

}  // namespace sluice::controlplane
