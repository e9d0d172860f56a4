// Applies, reads and deletes policy resources: validation of whole batches, encryption of inline
// secrets at rest, change detection, and the immutable PolicyState that snapshots are cut from.
//
// Not thread-safe by itself: the control plane calls it only from its store worker.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "controlplane/snapshot/snapshot_builder.h"
#include "controlplane/store/store.h"
#include "sluice/v1/admin.pb.h"

namespace sluice::controlplane {

class PolicyManager {
 public:
  // `master_key` is the 32-byte AES-256-GCM key that seals inline secrets; `masking_hash_key`
  // the key of the `hash` masking strategy's tokens (master_keys.h keeps both).
  PolicyManager(Store* store, std::string master_key, std::string masking_hash_key);

  // The additional data an inline secret is sealed with (its resource's kind and name).
  static std::string SecretAad(const v1::Resource& resource);

  // Loads the current state from the store (decrypting secrets). Call once at start.
  absl::Status Load();

  // Validates `request` whole, then stores the documents that differ from what is stored, in one
  // transaction. On a bad batch returns InvalidArgument and fills `response->errors`. Each stored
  // change, and each delete, gets its own audit record (Policy.create / Policy.update /
  // Policy.delete, target "Kind/name", by `actor`). With `request.canary` and a change, the change
  // starts a staged rollout (rollout.h) to the enrolled agents with those labels
  // (FailedPrecondition when there is none); the state then serves the others the version before.
  // Any change is refused (FailedPrecondition) while a rollout is in progress.
  absl::Status Apply(const v1::ApplyRequest& request, const std::string& actor,
                     v1::ApplyResponse* response);
  // Ends the rollout in progress, `id`: promoted (the state serves its version to every agent), or
  // aborted (the previous version's documents stored again as a new version, each change audited
  // like an apply's). The caller checked that it may (CheckPromote).
  absl::StatusOr<RolloutRecord> PromoteRollout(int64_t id, const std::string& actor,
                                               const std::string& reason);
  absl::StatusOr<RolloutRecord> AbortRollout(int64_t id, const std::string& actor,
                                             const std::string& reason);
  // Secrets redacted.
  absl::StatusOr<v1::Resource> Get(const std::string& kind, const std::string& name);
  absl::StatusOr<v1::ListResponse> List(const std::string& kind);
  // Refuses (FailedPrecondition) to delete what another resource references.
  absl::StatusOr<uint64_t> Delete(const std::string& kind, const std::string& name,
                                  const std::string& actor);

  std::shared_ptr<const PolicyState> state() const { return state_; }

  // Keys fetched from an Issuer's `jwks.url`: issuers naming that URL get the document as their
  // `jwks.inline` in snapshots (the stored resource keeps only the URL).
  absl::Status SetFetchedJwks(const std::string& url, const std::string& jwks);

 private:
  // The state of the stored documents, with the previous version's state while a rollout is in
  // progress.
  absl::StatusOr<std::shared_ptr<const PolicyState>> BuildState();
  // The state of `rows` at `version` (secrets decrypted, fetched JWKS filled in).
  absl::StatusOr<std::shared_ptr<PolicyState>> StateOf(uint64_t version,
                                                       std::vector<StoredResource> rows);
  void RecordChange(const std::string& actor, const char* action, const std::string& target,
                    uint64_t version, int64_t now_ms);

  Store* store_;
  std::string master_key_;
  std::string masking_hash_key_;
  std::shared_ptr<const PolicyState> state_ = std::make_shared<PolicyState>();
  std::map<std::string, std::string> fetched_jwks_;  // url -> JWKS document
};

}  // namespace sluice::controlplane
