#include "agent/postgres/cancel_registry.h"

#include <cstring>

#include "common/crypto.h"

namespace sluice::agent::postgres {

using wire::postgres::BackendKeyData;

BackendKeyData CancelRegistry::Register(CancelTarget target, size_t key_bytes) {
  BackendKeyData key;
  key.secret_key = RandomBytes(key_bytes);
  absl::MutexLock lock(&mu_);
  while (true) {
    std::string r = RandomBytes(4);
    uint32_t v;
    std::memcpy(&v, r.data(), 4);
    key.process_id = static_cast<int32_t>(v & 0x7fffffff);
    if (key.process_id != 0 && !entries_.contains(key.process_id)) break;
  }
  entries_[key.process_id] = Entry{key.secret_key, std::move(target)};
  return key;
}

void CancelRegistry::Unregister(int32_t process_id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(process_id);
}

std::optional<CancelTarget> CancelRegistry::Lookup(int32_t process_id,
                                                   absl::string_view secret) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(process_id);
  if (it == entries_.end() || !ConstantTimeEquals(it->second.secret, secret)) return std::nullopt;
  return it->second.target;
}

size_t CancelRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace sluice::agent::postgres
