#include "controlplane/snapshot/snapshot_builder.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <set>

#include "common/crypto.h"

namespace sluice::controlplane {

void PolicyState::Add(const v1::Resource& r) {
  switch (r.kind_case()) {
    case v1::Resource::kConnection:
      connections.push_back(r.connection());
      break;
    case v1::Resource::kIssuer:
      issuers.push_back(r.issuer());
      break;
    case v1::Resource::kAccessRule:
      access_rules.push_back(r.access_rule());
      break;
    case v1::Resource::kGuardrail:
      guardrails.push_back(r.guardrail());
      break;
    case v1::Resource::kMaskingRule:
      masking_rules.push_back(r.masking_rule());
      break;
    case v1::Resource::kApprovalPolicy:
      approval_policies.push_back(r.approval_policy());
      break;
    case v1::Resource::kWebhook:
      webhooks.push_back(r.webhook());
      break;
    case v1::Resource::kRetentionPolicy:
      retention_policies.push_back(r.retention_policy());
      break;
    case v1::Resource::KIND_NOT_SET:
      break;
  }
}

namespace {

template <typename Rule>
bool SelectsAny(const Rule& rule, const google::protobuf::RepeatedPtrField<v1::Connection>& conns) {
  for (const auto& c : conns) {
    if (policy::SelectsConnection(rule.connections(), c)) return true;
  }
  return false;
}

}  // namespace

const PolicyState& StateFor(const PolicyState& state, const Labels& labels) {
  if (state.previous == nullptr || policy::SelectorMatches(state.canary_selector, labels))
    return state;
  return *state.previous;
}

v1::PolicySnapshot BuildSnapshot(const PolicyState& served, const Labels& labels) {
  const PolicyState& state = StateFor(served, labels);
  v1::PolicySnapshot snap;
  snap.set_version(state.version);
  for (const auto& c : state.connections) {
    if (policy::SelectorMatches(c.agents(), labels)) *snap.add_connections() = c;
  }
  if (snap.connections().empty()) return snap;

  bool all_issuers = false;
  std::set<std::string> issuer_names;
  for (const auto& r : state.access_rules) {
    if (!SelectsAny(r, snap.connections())) continue;
    *snap.add_access_rules() = r;
    if (r.subjects().issuers().empty()) all_issuers = true;
    issuer_names.insert(r.subjects().issuers().begin(), r.subjects().issuers().end());
  }
  for (const auto& i : state.issuers) {
    if (!all_issuers && !issuer_names.count(i.name())) continue;
    v1::Issuer* out = snap.add_issuers();
    *out = i;
    // Keys fetched from a JWKS URL travel inline; the agent never calls the identity provider.
    if (!out->jwks().inline_().empty()) out->mutable_jwks()->clear_url();
  }
  std::set<std::string> policies;
  for (const auto& g : state.guardrails) {
    if (!SelectsAny(g, snap.connections())) continue;
    *snap.add_guardrails() = g;
    for (const auto& rule : g.rules()) {
      if (!rule.approval().empty()) policies.insert(rule.approval());
    }
  }
  for (const auto& m : state.masking_rules) {
    if (SelectsAny(m, snap.connections())) *snap.add_masking_rules() = m;
  }
  if (!snap.masking_rules().empty()) snap.set_masking_hash_key(state.masking_hash_key);
  for (const auto& p : state.approval_policies) {
    if (!policies.count(p.name())) continue;
    v1::ApprovalPolicy* out = snap.add_approval_policies();
    *out = p;
    out->clear_webhooks();
  }
  return snap;
}

std::string SnapshotDigest(const v1::PolicySnapshot& snapshot) {
  v1::PolicySnapshot copy = snapshot;
  copy.set_version(0);
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&out);
  }
  return Sha256(bytes);
}

}  // namespace sluice::controlplane
