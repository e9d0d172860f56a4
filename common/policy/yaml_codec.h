// YAML documents <-> sluice.v1.Resource, driven by the protobuf descriptors so that every field
// of policy.proto is accepted under its own name and nothing else is. Errors name the document,
// the field path and why.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::policy {

// A problem with one document of a batch.
struct DocumentError {
  int index = 0;     // 0-based position in the batch (the n-th YAML document)
  std::string kind;  // "" when the kind itself is the problem
  std::string name;
  std::string field;  // dotted path, e.g. "upstream.port" or "rules[2].action"
  std::string message;

  // "FILE: document 3 (Guardrail production-safety): rules[2].action: why"
  std::string ToString(absl::string_view source) const;
};

struct ParsedDocuments {
  std::vector<v1::Resource> resources;
  std::vector<int> positions;         // for each resource, its 0-based document index in the stream
  std::vector<DocumentError> errors;  // empty when every document parsed and validated
};

// Limits on input from files and the network.
inline constexpr size_t kMaxYamlBytes = 16 << 20;
inline constexpr size_t kMaxDocuments = 10000;
inline constexpr size_t kMaxStringBytes = 256 << 10;

// Parses a multi-document YAML stream. Every document is converted and validated
// (ValidateResource); empty documents are skipped but still counted in `index`.
ParsedDocuments ParseYamlDocuments(absl::string_view text);

// One resource as a YAML document (kind first, then the fields in declaration order; fields at
// their default value are omitted).
std::string ResourceToYaml(const v1::Resource& resource);
// One resource as a JSON object with "kind" and the spec fields (and "meta" when set).
std::string ResourceToJson(const v1::Resource& resource);

}  // namespace sluice::policy
