#include "common/policy/selectors.h"

#include <algorithm>

namespace sluice::policy {

bool SelectorMatches(const google::protobuf::Map<std::string, std::string>& selector,
                     const Labels& labels) {
  if (selector.empty()) return false;
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

bool SelectorMatches(const Labels& selector, const Labels& labels) {
  if (selector.empty()) return false;
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

std::string LabelsText(const Labels& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    if (!out.empty()) out += ',';
    out += k;
    out += '=';
    out += v;
  }
  return out;
}

bool SelectsConnection(const v1::ConnectionSelector& selector, const v1::Connection& connection) {
  if (std::find(selector.names().begin(), selector.names().end(), connection.name()) !=
      selector.names().end()) {
    return true;
  }
  if (selector.tags().empty()) return false;
  Labels tags(connection.tags().begin(), connection.tags().end());
  return SelectorMatches(selector.tags(), tags);
}

bool SelectsCaller(const v1::SubjectSelector& selector, const std::string& issuer_name,
                   const std::string& subject, const std::vector<std::string>& groups) {
  if (!selector.issuers().empty() && std::find(selector.issuers().begin(), selector.issuers().end(),
                                               issuer_name) == selector.issuers().end()) {
    return false;
  }
  if (std::find(selector.subjects().begin(), selector.subjects().end(), subject) !=
      selector.subjects().end()) {
    return true;
  }
  for (const auto& g : groups) {
    if (std::find(selector.groups().begin(), selector.groups().end(), g) !=
        selector.groups().end()) {
      return true;
    }
  }
  return false;
}

}  // namespace sluice::policy
