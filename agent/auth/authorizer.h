// Which access, if any, an authenticated caller has on a connection: the highest level among the
// AccessRules of the snapshot that select both the caller and the connection. No rule = no
// access (fail closed).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sluice/v1/policy.pb.h"

namespace sluice::agent {

struct Caller {
  std::string issuer_name;  // the Issuer resource that vouched for the token
  std::string subject;
  std::vector<std::string> groups;
};

struct Grant {
  v1::Access access = v1::ACCESS_UNSPECIFIED;
  std::string rule;  // the AccessRule that granted it
};

std::optional<Grant> Authorize(const v1::PolicySnapshot& snapshot, const v1::Connection& connection,
                               const Caller& caller);

// "read", "write", "admin".
std::string AccessName(v1::Access access);

}  // namespace sluice::agent
