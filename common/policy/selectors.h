// How selectors in policy documents match: agents by labels, connections by name or tags,
// callers by subject, group and issuer. Shared by the control plane (which agents get what) and
// the agent (which rules apply to a session).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sluice/v1/policy.pb.h"

namespace sluice::policy {

using Labels = std::map<std::string, std::string>;

// True when every key/value of `selector` is in `labels`. An empty selector matches nothing.
bool SelectorMatches(const google::protobuf::Map<std::string, std::string>& selector,
                     const Labels& labels);
bool SelectorMatches(const Labels& selector, const Labels& labels);

// Labels or a label selector as people write them: "k=v,k=v", sorted by key.
std::string LabelsText(const Labels& labels);

// True when `selector` names the connection or all its tags are on the connection.
bool SelectsConnection(const v1::ConnectionSelector& selector, const v1::Connection& connection);

// True when the caller is listed by subject or is in one of the groups, and (when `issuers` is
// not empty) was vouched for by one of those Issuers (by resource name).
bool SelectsCaller(const v1::SubjectSelector& selector, const std::string& issuer_name,
                   const std::string& subject, const std::vector<std::string>& groups);

}  // namespace sluice::policy
