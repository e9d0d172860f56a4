// What the agent keeps in its data dir (all files 0600):
//   agent.json     its identity: agent id and secret from enrollment, and the granted labels
//   snapshot.json  the last snapshot it validated and applied, to start from when the control
//                  plane is down (it holds connection credentials, hence 0600)
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent {

struct AgentIdentity {
  std::string agent_id;
  std::string secret;
  std::map<std::string, std::string> labels;
};

// NotFound when the agent has not enrolled yet.
absl::StatusOr<AgentIdentity> LoadIdentity(const std::string& data_dir);
absl::Status SaveIdentity(const std::string& data_dir, const AgentIdentity& identity);

// NotFound when there is none; DataLoss when the file cannot be decoded.
absl::StatusOr<v1::PolicySnapshot> LoadSnapshot(const std::string& data_dir);
absl::Status SaveSnapshot(const std::string& data_dir, const v1::PolicySnapshot& snapshot);

}  // namespace sluice::agent
