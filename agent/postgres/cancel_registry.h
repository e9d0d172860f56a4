// Cancel keys. Each client session gets the agent's own BackendKeyData (a process id unique on
// this agent and a random secret), mapped to the upstream backend's key, so that a CancelRequest
// sent to the agent (psql's Ctrl-C) cancels the right query and nothing else.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "agent/postgres/upstream.h"
#include "common/wire/postgres/messages.h"

namespace sluice::agent::postgres {

struct CancelTarget {
  UpstreamTarget target;
  wire::postgres::BackendKeyData upstream_key;
  // A cancel the session handles itself (a statement held for approval is withdrawn); returns
  // true when it did, so nothing goes upstream. May be null.
  std::shared_ptr<std::function<bool()>> local;
};

class CancelRegistry {
 public:
  // A fresh agent key (`key_bytes` of secret: 4 for protocol 3.0, 32 for 3.2) for a session whose
  // cancels go to `target`.
  wire::postgres::BackendKeyData Register(CancelTarget target, size_t key_bytes);
  void Unregister(int32_t process_id);
  // The target for a presented key; nullopt when the id is unknown or the secret differs.
  std::optional<CancelTarget> Lookup(int32_t process_id, absl::string_view secret) const;
  size_t size() const;

 private:
  struct Entry {
    std::string secret;
    CancelTarget target;
  };
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int32_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::agent::postgres
