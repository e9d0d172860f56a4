#include "agent/state_files.h"

#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace sluice::agent {

absl::StatusOr<AgentIdentity> LoadIdentity(const std::string& data_dir) {
  std::string path = data_dir + "/agent.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1 << 20));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("agent_id") || !j["agent_id"].is_string() ||
      !j.contains("secret") || !j["secret"].is_string()) {
    return absl::DataLossError(absl::StrCat(path, " is not a valid agent identity file"));
  }
  AgentIdentity id;
  id.agent_id = j["agent_id"].get<std::string>();
  id.secret = j["secret"].get<std::string>();
  if (j.contains("labels") && j["labels"].is_object()) {
    for (auto it = j["labels"].begin(); it != j["labels"].end(); ++it) {
      if (it.value().is_string()) id.labels[it.key()] = it.value().get<std::string>();
    }
  }
  return id;
}

absl::Status SaveIdentity(const std::string& data_dir, const AgentIdentity& identity) {
  nlohmann::json j = {
      {"agent_id", identity.agent_id}, {"secret", identity.secret}, {"labels", identity.labels}};
  return WriteFileAtomic(data_dir + "/agent.json", j.dump(2) + "\n", 0600);
}

absl::StatusOr<v1::PolicySnapshot> LoadSnapshot(const std::string& data_dir) {
  std::string path = data_dir + "/snapshot.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  v1::PolicySnapshot snap;
  auto st = google::protobuf::util::JsonStringToMessage(text, &snap);
  if (!st.ok()) {
    return absl::DataLossError(
        absl::StrCat(path, " cannot be decoded: ", st.message().as_string()));
  }
  return snap;
}

absl::Status SaveSnapshot(const std::string& data_dir, const v1::PolicySnapshot& snapshot) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  std::string text;
  auto st = google::protobuf::util::MessageToJsonString(snapshot, &text, opts);
  if (!st.ok()) return absl::InternalError("cannot encode the snapshot");
  return WriteFileAtomic(data_dir + "/snapshot.json", text, 0600);
}

}  // namespace sluice::agent
