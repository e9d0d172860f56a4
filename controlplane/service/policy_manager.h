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
  // `master_key` is the 32-byte AES-256-GCM key that seals inline secrets.
  PolicyManager(Store* store, std::string master_key);

  // Loads the current state from the store (decrypting secrets). Call once at start.
  absl::Status Load();

  // Validates `request` whole, then stores the documents that differ from what is stored, in one
  // transaction. On a bad batch returns InvalidArgument and fills `response->errors`. Each stored
  // change, and each delete, gets its own audit record (Policy.create / Policy.update /
  // Policy.delete, target "Kind/name", by `actor`).
  absl::Status Apply(const v1::ApplyRequest& request, const std::string& actor,
                     v1::ApplyResponse* response);
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
  absl::StatusOr<std::shared_ptr<const PolicyState>> BuildState();
  static std::string SecretAad(const v1::Resource& resource);
  void RecordChange(const std::string& actor, const char* action, const std::string& target,
                    uint64_t version, int64_t now_ms);

  Store* store_;
  std::string master_key_;
  std::shared_ptr<const PolicyState> state_ = std::make_shared<PolicyState>();
  std::map<std::string, std::string> fetched_jwks_;  // url -> JWKS document
};

}  // namespace sluice::controlplane
