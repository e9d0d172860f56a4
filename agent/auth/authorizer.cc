#include "agent/auth/authorizer.h"

#include "common/policy/selectors.h"

namespace sluice::agent {

std::optional<Grant> Authorize(const v1::PolicySnapshot& snapshot, const v1::Connection& connection,
                               const Caller& caller) {
  std::optional<Grant> best;
  for (const auto& rule : snapshot.access_rules()) {
    if (!policy::SelectsConnection(rule.connections(), connection)) continue;
    if (!policy::SelectsCaller(rule.subjects(), caller.issuer_name, caller.subject,
                               caller.groups)) {
      continue;
    }
    // ACCESS_READ < ACCESS_WRITE < ACCESS_ADMIN by enum value.
    if (!best || rule.access() > best->access) best = Grant{rule.access(), rule.name()};
  }
  return best;
}

std::string AccessName(v1::Access access) {
  switch (access) {
    case v1::ACCESS_READ:
      return "read";
    case v1::ACCESS_WRITE:
      return "write";
    case v1::ACCESS_ADMIN:
      return "admin";
    default:
      return "none";
  }
}

}  // namespace sluice::agent
