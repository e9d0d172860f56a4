#include "controlplane/service/policy_manager.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/policy/resource.h"
#include "common/policy/selectors.h"
#include "common/policy/validation.h"
#include "common/status_macros.h"
#include "controlplane/service/rollout.h"

namespace sluice::controlplane {

using google::protobuf::util::MessageDifferencer;

PolicyManager::PolicyManager(Store* store, std::string master_key, std::string masking_hash_key)
    : store_(store),
      master_key_(std::move(master_key)),
      masking_hash_key_(std::move(masking_hash_key)) {}

std::string PolicyManager::SecretAad(const v1::Resource& resource) {
  return absl::StrCat("sluice/v1/", policy::KindOf(resource), "/", policy::NameOf(resource));
}

absl::Status PolicyManager::Load() {
  ASSIGN_OR_RETURN(state_, BuildState());
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const PolicyState>> PolicyManager::BuildState() {
  ASSIGN_OR_RETURN(uint64_t version, store_->PolicyVersion());
  ASSIGN_OR_RETURN(auto rows, store_->ListResources(""));
  ASSIGN_OR_RETURN(std::shared_ptr<PolicyState> state, StateOf(version, std::move(rows)));
  ASSIGN_OR_RETURN(std::optional<RolloutRecord> rollout, store_->GetRollout(0));
  if (rollout && rollout->in_progress()) {
    ASSIGN_OR_RETURN(auto previous_rows, store_->RolloutPreviousResources(rollout->id));
    ASSIGN_OR_RETURN(state->previous, StateOf(rollout->previous_version, std::move(previous_rows)));
    state->canary_selector = rollout->selector;
  }
  return std::shared_ptr<const PolicyState>(std::move(state));
}

absl::StatusOr<std::shared_ptr<PolicyState>> PolicyManager::StateOf(
    uint64_t version, std::vector<StoredResource> rows) {
  auto state = std::make_shared<PolicyState>();
  state->version = version;
  state->masking_hash_key = masking_hash_key_;
  for (StoredResource& sr : rows) {
    if (!sr.sealed_secret.empty()) {
      auto secret = AesGcmOpen(master_key_, sr.sealed_secret, SecretAad(sr.resource));
      if (!secret.ok()) {
        return absl::DataLossError(
            absl::StrCat("cannot decrypt the secret of ", policy::KindOf(sr.resource), " '",
                         policy::NameOf(sr.resource), "': ", secret.status().message(),
                         " (is --master-key-file the key this data dir was created with?)"));
      }
      policy::SetSecret(&sr.resource, *std::move(secret));
    }
    if (sr.resource.has_issuer() && sr.resource.issuer().jwks().inline_().empty()) {
      auto it = fetched_jwks_.find(sr.resource.issuer().jwks().url());
      if (it != fetched_jwks_.end())
        sr.resource.mutable_issuer()->mutable_jwks()->set_inline_(it->second);
    }
    state->Add(sr.resource);
  }
  return state;
}

absl::Status PolicyManager::Apply(const v1::ApplyRequest& request, const std::string& actor,
                                  v1::ApplyResponse* response) {
  const Labels canary(request.canary().begin(), request.canary().end());
  if (!canary.empty()) RETURN_IF_ERROR(CheckCanarySelector(canary));
  std::vector<v1::Resource> batch(request.resources().begin(), request.resources().end());
  for (auto& r : batch) r.clear_meta();
  std::vector<policy::DocumentError> errors = policy::ValidateBatch(batch);

  // Resolve "(redacted)" against what is stored, and find what actually changes.
  std::vector<StoredResource> changed;
  std::vector<std::pair<std::string, bool>> changes;  // "Kind/name", created
  int created = 0, updated = 0, unchanged = 0;
  policy::ResourceNames after;
  for (const auto& p : state_->approval_policies) after.approval_policies.insert(p.name());
  for (const auto& w : state_->webhooks) after.webhooks.insert(w.name());
  for (size_t i = 0; i < batch.size(); ++i) {
    v1::Resource& r = batch[i];
    std::string kind = policy::KindOf(r), name = policy::NameOf(r);
    if (r.has_approval_policy()) after.approval_policies.insert(name);
    if (r.has_webhook()) after.webhooks.insert(name);
    auto existing = store_->GetResource(kind, name);
    if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
    std::string old_secret;
    if (existing.ok() && !existing->sealed_secret.empty()) {
      ASSIGN_OR_RETURN(old_secret, AesGcmOpen(master_key_, existing->sealed_secret, SecretAad(r)));
    }
    if (policy::SecretOf(r) == policy::kRedacted) {
      if (!existing.ok() || old_secret.empty()) {
        errors.push_back({static_cast<int>(i), kind, name,
                          r.has_connection() ? "credentials.password" : "secret",
                          "is \"(redacted)\" but no secret is stored for it; give the real value"});
        continue;
      }
      policy::SetSecret(&r, old_secret);
    }
    if (existing.ok()) {
      v1::Resource old = existing->resource;
      old.clear_meta();
      policy::SetSecret(&old, old_secret);
      if (MessageDifferencer::Equivalent(old, r)) {
        ++unchanged;
        continue;
      }
      ++updated;
    } else {
      ++created;
    }
    changes.emplace_back(absl::StrCat(kind, "/", name), !existing.ok());
    StoredResource sr;
    sr.resource = r;
    std::string secret = policy::TakeSecret(&sr.resource);
    if (!secret.empty()) {
      ASSIGN_OR_RETURN(sr.sealed_secret, AesGcmSeal(master_key_, secret, SecretAad(r)));
    }
    changed.push_back(std::move(sr));
  }
  for (auto& e : policy::CheckReferences(batch, after)) errors.push_back(std::move(e));

  if (!errors.empty()) {
    // Count documents as the source does (it may hold empty documents that were not sent).
    if (request.positions_size() == request.resources_size()) {
      for (auto& e : errors) e.index = request.positions(e.index);
    }
    std::stable_sort(errors.begin(), errors.end(),
                     [](const auto& a, const auto& b) { return a.index < b.index; });
    std::vector<std::string> lines;
    for (const auto& e : errors) {
      v1::ValidationError* ve = response->add_errors();
      ve->set_index(e.index);
      ve->set_kind(e.kind);
      ve->set_name(e.name);
      ve->set_field(e.field);
      ve->set_message(e.message);
      lines.push_back(e.ToString(request.source()));
    }
    return absl::InvalidArgumentError(absl::StrCat("nothing was applied; ", errors.size(),
                                                   " problem(s):\n", absl::StrJoin(lines, "\n")));
  }
  response->set_created(created);
  response->set_updated(updated);
  response->set_unchanged(unchanged);
  if (changed.empty()) {
    response->set_version(state_->version);
    return absl::OkStatus();
  }
  int64_t now_ms = absl::ToUnixMillis(absl::Now());
  uint64_t version = 0;
  if (canary.empty()) {
    ASSIGN_OR_RETURN(version, store_->UpsertResources(changed, actor, now_ms));
  } else {
    ASSIGN_OR_RETURN(auto agents, store_->ListAgents());
    uint32_t in_canary = 0;
    for (const AgentRecord& a : agents) in_canary += policy::SelectorMatches(canary, a.labels);
    if (in_canary == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("no enrolled agent has the labels ", policy::LabelsText(canary),
                       ": a canary needs at least one; nothing was applied"));
    }
    ASSIGN_OR_RETURN(RolloutRecord rollout, store_->StartRollout(changed, canary, actor, now_ms));
    version = rollout.version;
    response->set_rollout_id(static_cast<uint64_t>(rollout.id));
    response->set_canary_agents(in_canary);
  }
  for (const auto& [target, was_created] : changes) {
    RecordChange(actor, was_created ? "Policy.create" : "Policy.update", target, version, now_ms);
  }
  response->set_version(version);
  ASSIGN_OR_RETURN(state_, BuildState());
  return absl::OkStatus();
}

absl::StatusOr<RolloutRecord> PolicyManager::PromoteRollout(int64_t id, const std::string& actor,
                                                            const std::string& reason) {
  ASSIGN_OR_RETURN(RolloutRecord r,
                   store_->PromoteRollout(id, actor, reason, absl::ToUnixMillis(absl::Now())));
  ASSIGN_OR_RETURN(state_, BuildState());
  return r;
}

absl::StatusOr<RolloutRecord> PolicyManager::AbortRollout(int64_t id, const std::string& actor,
                                                          const std::string& reason) {
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  ASSIGN_OR_RETURN(RolloutAbort aborted, store_->AbortRollout(id, actor, reason, now_ms));
  for (const ResourceChange& c : aborted.changes) {
    RecordChange(actor, c.action.c_str(), c.target, aborted.rollout.restored_version, now_ms);
  }
  ASSIGN_OR_RETURN(state_, BuildState());
  return aborted.rollout;
}

absl::Status PolicyManager::SetFetchedJwks(const std::string& url, const std::string& jwks) {
  fetched_jwks_[url] = jwks;
  ASSIGN_OR_RETURN(state_, BuildState());
  return absl::OkStatus();
}

absl::StatusOr<v1::Resource> PolicyManager::Get(const std::string& kind, const std::string& name) {
  ASSIGN_OR_RETURN(std::string canonical, policy::CanonicalKind(kind));
  ASSIGN_OR_RETURN(StoredResource sr, store_->GetResource(canonical, name));
  if (!sr.sealed_secret.empty()) policy::SetSecret(&sr.resource, std::string(policy::kRedacted));
  return sr.resource;
}

absl::StatusOr<v1::ListResponse> PolicyManager::List(const std::string& kind) {
  std::string canonical;
  if (!kind.empty()) {
    ASSIGN_OR_RETURN(canonical, policy::CanonicalKind(kind));
  }
  ASSIGN_OR_RETURN(auto rows, store_->ListResources(canonical));
  v1::ListResponse out;
  out.set_version(state_->version);
  for (auto& sr : rows) {
    if (!sr.sealed_secret.empty()) policy::SetSecret(&sr.resource, std::string(policy::kRedacted));
    *out.add_resources() = std::move(sr.resource);
  }
  return out;
}

void PolicyManager::RecordChange(const std::string& actor, const char* action,
                                 const std::string& target, uint64_t version, int64_t now_ms) {
  auto st = store_->AppendAudit(
      {0, now_ms, actor, action, target, "ok", absl::StrCat("policy version ", version)});
  if (!st.ok()) LogError("cannot record ", action, " ", target, ": ", st.status().message());
}

absl::StatusOr<uint64_t> PolicyManager::Delete(const std::string& kind, const std::string& name,
                                               const std::string& actor) {
  ASSIGN_OR_RETURN(std::string canonical, policy::CanonicalKind(kind));
  if (canonical == "ApprovalPolicy") {
    for (const auto& g : state_->guardrails) {
      for (const auto& rule : g.rules()) {
        if (rule.approval() == name) {
          return absl::FailedPreconditionError(absl::StrCat("ApprovalPolicy '", name,
                                                            "' is used by Guardrail '", g.name(),
                                                            "'; change that first"));
        }
      }
    }
  }
  if (canonical == "Webhook") {
    for (const auto& p : state_->approval_policies) {
      for (const auto& w : p.webhooks()) {
        if (w == name) {
          return absl::FailedPreconditionError(absl::StrCat("Webhook '", name,
                                                            "' is used by ApprovalPolicy '",
                                                            p.name(), "'; change that first"));
        }
      }
    }
  }
  ASSIGN_OR_RETURN(uint64_t version, store_->DeleteResource(canonical, name));
  RecordChange(actor, "Policy.delete", absl::StrCat(canonical, "/", name), version,
               absl::ToUnixMillis(absl::Now()));
  ASSIGN_OR_RETURN(state_, BuildState());
  return version;
}

}  // namespace sluice::controlplane
