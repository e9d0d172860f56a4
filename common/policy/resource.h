// Helpers over sluice.v1.Resource: kind names, names, secrets and redaction.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::policy {

// What operators write in YAML and on the command line, e.g. "Connection", "AccessRule".
struct KindInfo {
  absl::string_view kind;
  int field_number;  // the field of Resource's `kind` oneof
};
const std::vector<KindInfo>& AllKinds();

// Accepts "Connection", "connection", "connections", "access_rule", "access-rules",
// "accessrule"... and returns the canonical kind, or InvalidArgument naming the kinds there are.
absl::StatusOr<std::string> CanonicalKind(absl::string_view text);

// The canonical kind of a resource ("" when unset), its name, and its spec message.
std::string KindOf(const v1::Resource& resource);
std::string NameOf(const v1::Resource& resource);
const google::protobuf::Message* Spec(const v1::Resource& resource);
// Sets the oneof to `kind` (canonical) and returns the spec message to fill.
google::protobuf::Message* MutableSpec(v1::Resource* resource, absl::string_view kind);

// The marker get/list show in place of a secret; applying it keeps the stored secret.
inline constexpr absl::string_view kRedacted = "(redacted)";

// The inline secret of a resource (Connection password, Webhook secret), or "".
std::string SecretOf(const v1::Resource& resource);
// Moves the inline secret out of `resource` (clearing it) and returns it.
std::string TakeSecret(v1::Resource* resource);
// Puts `secret` back into the resource's secret field.
void SetSecret(v1::Resource* resource, std::string secret);
// Replaces a non-empty secret with kRedacted.
void Redact(v1::Resource* resource);

}  // namespace sluice::policy
