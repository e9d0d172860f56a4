// Semantic validation of policy resources, shared by sluicectl (before sending), the control plane
// (before storing) and the agent (before applying a snapshot).
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/policy/yaml_codec.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::policy {

struct FieldError {
  std::string field;    // dotted path inside the resource
  std::string message;  // why
};

// Statement kinds a Guardrail rule can match, and the content detectors of MaskingRule.
const std::vector<std::string>& GuardrailMatches();
const std::vector<std::string>& MaskingDetectors();
// The protocol names agents advertise as capabilities ("postgres", "mysql", "http").
std::string ProtocolName(v1::Protocol protocol);
// A cloud API's Connection (gcs, bigquery): a service-account key for credentials, callers
// possibly run as other service accounts.
inline bool IsCloudProtocol(v1::Protocol p) {
  return p == v1::PROTOCOL_GCS || p == v1::PROTOCOL_BIGQUERY;
}

// "" when `name` is a valid resource (or agent) name, else why not: [a-z0-9][a-z0-9._-]*, at
// most 63 characters.
std::string NameProblem(const std::string& name);

// A Connection's session limits (ConnectionLimits in policy.proto): what 0 stands for, and the
// largest value accepted. The agent enforces them (agent/session/limits.h).
inline constexpr uint32_t kDefaultMaxSessions = 90;
inline constexpr uint32_t kDefaultMaxSessionsPerIdentity = 20;
inline constexpr uint32_t kMaxSessionLimit = 100000;

// Checks one resource on its own: required fields, ranges, formats, known values.
std::vector<FieldError> ValidateResource(const v1::Resource& resource);

// Validates a batch whole: every document, plus duplicate (kind, name) pairs inside the batch.
std::vector<DocumentError> ValidateBatch(const std::vector<v1::Resource>& batch);

// Names of the resources that exist once a batch is stored, for reference checks.
struct ResourceNames {
  absl::flat_hash_set<std::string> approval_policies;
  absl::flat_hash_set<std::string> webhooks;
};
// Checks that what `batch` references exists in `after` (the store as it would be after the
// batch): Guardrail rules' `approval`, ApprovalPolicy `webhooks`.
std::vector<DocumentError> CheckReferences(const std::vector<v1::Resource>& batch,
                                           const ResourceNames& after);

// The upstream password of a Connection as this agent sees it: the inline password, or what
// `password_from` names (`env:NAME`, or `file:/path` with trailing newlines removed, at most
// 4 KiB). FailedPrecondition says what cannot be resolved here.
absl::StatusOr<std::string> ResolvePassword(const v1::Credentials& credentials);

// An agent's view of a snapshot: validates it whole against what this agent can serve.
// `capabilities` are protocol names. `password_from` references must resolve on this agent
// (environment variable set, file present). OK when the snapshot can be applied, else an
// InvalidArgument error with every reason, joined by "; ".
absl::Status ValidateSnapshot(const v1::PolicySnapshot& snapshot,
                              const std::vector<std::string>& capabilities);

}  // namespace sluice::policy
