#include "common/policy/validation.h"

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cloud/service_account.h"
#include "common/files.h"
#include "common/policy/resource.h"

namespace sluice::policy {
namespace {

using v1::Resource;

constexpr size_t kMaxNameLength = 63;
constexpr size_t kMaxLabelValue = 253;
constexpr uint32_t kMaxApprovals = 100;
constexpr int64_t kMaxApprovalTimeoutSeconds = 24 * 3600;
constexpr int64_t kMaxRetentionSeconds = int64_t{36500} * 24 * 3600;

class Checker {
 public:
  void Fail(std::string field, std::string message) {
    errors_.push_back({std::move(field), std::move(message)});
  }
  std::vector<FieldError> Take() { return std::move(errors_); }

  void Name(const std::string& name) {
    std::string problem = NameProblem(name);
    if (!problem.empty()) Fail("name", problem);
  }

  void Required(const std::string& field, const std::string& value) {
    if (value.empty()) Fail(field, "required");
  }

  void Labels(const std::string& field, const google::protobuf::Map<std::string, std::string>& m) {
    for (const auto& [k, v] : m) {
      if (k.empty() || k.size() > kMaxNameLength) {
        Fail(field, absl::StrCat("label key '", k, "' must be 1-", kMaxNameLength, " characters"));
      }
      if (v.size() > kMaxLabelValue) {
        Fail(absl::StrCat(field, ".", k), absl::StrCat("at most ", kMaxLabelValue, " characters"));
      }
    }
  }

  void HttpUrl(const std::string& field, const std::string& url) {
    if (url.empty()) return Fail(field, "required");
    if (!absl::StartsWith(url, "https://") && !absl::StartsWith(url, "http://")) {
      Fail(field, "must be an http:// or https:// URL");
    }
  }

  void Selector(const std::string& field, const v1::ConnectionSelector& s) {
    if (s.names().empty() && s.tags().empty()) {
      return Fail(field, "required: name connections (names: [...]) or select them by tags");
    }
    Labels(field + ".tags", s.tags());
  }

  void Subjects(const std::string& field, const v1::SubjectSelector& s, bool required) {
    if (required && s.subjects().empty() && s.groups().empty()) {
      Fail(field, "required: list subjects or groups");
    }
  }

 private:
  std::vector<FieldError> errors_;
};

void CheckConnection(const v1::Connection& c, Checker& ck) {
  ck.Name(c.name());
  if (c.protocol() == v1::PROTOCOL_UNSPECIFIED)
    ck.Fail("protocol", "required: postgres, mysql, gcs or bigquery");
  if (c.protocol() == v1::PROTOCOL_HTTP)
    ck.Fail("protocol", "http is not a Connection's protocol: name its API (gcs, bigquery)");
  if (!c.has_upstream()) {
    ck.Fail("upstream", "required: {host, port}");
  } else {
    const auto& u = c.upstream();
    ck.Required("upstream.host", u.host());
    if (u.host().size() > 253) ck.Fail("upstream.host", "at most 253 characters");
    if (u.port() == 0) ck.Fail("upstream.port", "required: 1-65535");
    if (u.port() > 65535)
      ck.Fail("upstream.port", absl::StrCat(u.port(), " is not a TCP port (1-65535)"));
  }
  if (!c.has_credentials()) {
    ck.Fail("credentials", "required: {username, password or password_from}");
  } else {
    const auto& cr = c.credentials();
    ck.Required("credentials.username", cr.username());
    bool inline_pw = !cr.password().empty();
    bool ref_pw = !cr.password_from().empty();
    if (inline_pw == ref_pw) {
      ck.Fail("credentials", "set exactly one of password and password_from");
    }
    if (ref_pw &&
        !(absl::StartsWith(cr.password_from(), "env:") && cr.password_from().size() > 4) &&
        !(absl::StartsWith(cr.password_from(), "file:/") && cr.password_from().size() > 6)) {
      ck.Fail("credentials.password_from", "must be env:NAME or file:/absolute/path");
    }
    if (IsCloudProtocol(c.protocol()) && inline_pw && cr.password() != kRedacted) {
      // The service account's JSON key (one kept by password_from is checked on the agent).
      auto key = cloud::ParseServiceAccountKey(cr.password());
      if (!key.ok()) {
        ck.Fail("credentials.password", std::string(key.status().message()));
      } else if (key->client_email != cr.username()) {
        ck.Fail("credentials.username",
                absl::StrCat("must be the key's client_email (", key->client_email, ")"));
      }
    }
  }
  if (c.agents().empty()) {
    ck.Fail("agents", "required: a label selector naming the agents that serve this connection");
  }
  ck.Labels("agents", c.agents());
  ck.Labels("tags", c.tags());
  if (!IsCloudProtocol(c.protocol()) &&
      (!c.impersonate().empty() || !c.iam_credentials_url().empty())) {
    ck.Fail(c.impersonate().empty() ? "iam_credentials_url" : "impersonate",
            "only a cloud Connection (protocol gcs or bigquery) runs callers as other service "
            "accounts");
  }
  if (c.impersonate_size() > 100) ck.Fail("impersonate", "at most 100 entries");
  for (int i = 0; i < c.impersonate_size(); ++i) {
    const v1::Impersonation& imp = c.impersonate(i);
    const std::string field = absl::StrCat("impersonate[", i, "]");
    ck.Subjects(field + ".callers", imp.callers(), true);
    const std::string& email = imp.service_account();
    const size_t at = email.find('@');
    if (email.empty()) {
      ck.Fail(field + ".service_account", "required: the service account's email");
    } else if (at == std::string::npos || at == 0 || at + 1 == email.size() || email.size() > 254 ||
               email.find_first_of("/?#: \t\n") != std::string::npos) {
      ck.Fail(field + ".service_account",
              absl::StrCat("\"", email.substr(0, 64), "\" is not a service account's email"));
    }
  }
  if (!c.iam_credentials_url().empty() && !absl::StartsWith(c.iam_credentials_url(), "https://")) {
    ck.Fail("iam_credentials_url", "must be an https:// URL");
  }
  const uint32_t total = c.limits().max_sessions();
  const uint32_t per_identity = c.limits().max_sessions_per_identity();
  if (total > kMaxSessionLimit) {
    ck.Fail("limits.max_sessions",
            absl::StrCat(total, " is more than the cap of ", kMaxSessionLimit,
                         " (0 = the default, ", kDefaultMaxSessions, ")"));
  }
  if (per_identity > kMaxSessionLimit) {
    ck.Fail("limits.max_sessions_per_identity",
            absl::StrCat(per_identity, " is more than the cap of ", kMaxSessionLimit,
                         " (0 = the default, ", kDefaultMaxSessionsPerIdentity, ")"));
  } else if (total <= kMaxSessionLimit &&
             per_identity > (total == 0 ? kDefaultMaxSessions : total)) {
    ck.Fail(
        "limits.max_sessions_per_identity",
        absl::StrCat(per_identity, " is more than limits.max_sessions (",
                     total == 0 ? kDefaultMaxSessions : total, total == 0 ? ", the default" : "",
                     "): one caller cannot have more sessions than all callers together"));
  }
}

void CheckIssuer(const v1::Issuer& i, Checker& ck) {
  ck.Name(i.name());
  ck.Required("issuer", i.issuer());
  ck.Required("audience", i.audience());
  bool url = !i.jwks().url().empty();
  bool inl = !i.jwks().inline_().empty();
  if (url == inl) {
    ck.Fail("jwks", "set exactly one of url and inline");
  } else if (url) {
    ck.HttpUrl("jwks.url", i.jwks().url());
  } else {
    nlohmann::json j =
        nlohmann::json::parse(i.jwks().inline_(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("keys") || !j["keys"].is_array()) {
      ck.Fail("jwks.inline", "must be a JWKS JSON document: {\"keys\": [...]}");
    }
  }
}

void CheckAccessRule(const v1::AccessRule& a, Checker& ck) {
  ck.Name(a.name());
  ck.Subjects("subjects", a.subjects(), true);
  ck.Selector("connections", a.connections());
  if (a.access() == v1::ACCESS_UNSPECIFIED) ck.Fail("access", "required: read, write or admin");
}

void CheckGuardrail(const v1::Guardrail& g, Checker& ck) {
  ck.Name(g.name());
  ck.Selector("connections", g.connections());
  if (g.rules().empty()) ck.Fail("rules", "required: at least one rule");
  const auto& matches = GuardrailMatches();
  for (int i = 0; i < g.rules_size(); ++i) {
    const auto& r = g.rules(i);
    std::string p = absl::StrCat("rules[", i, "]");
    if (std::find(matches.begin(), matches.end(), r.match()) == matches.end()) {
      ck.Fail(p + ".match",
              absl::StrCat("'", r.match(), "' is not one of: ", absl::StrJoin(matches, ", ")));
    }
    if (r.action() == v1::GUARDRAIL_ACTION_UNSPECIFIED) {
      ck.Fail(p + ".action", "required: block, require_approval, allow or alert");
    }
    if (r.action() == v1::GUARDRAIL_ACTION_REQUIRE_APPROVAL && r.approval().empty()) {
      ck.Fail(p + ".approval", "required with require_approval: the ApprovalPolicy name");
    }
    if (r.action() != v1::GUARDRAIL_ACTION_REQUIRE_APPROVAL && !r.approval().empty()) {
      ck.Fail(p + ".approval", "only meaningful with action require_approval");
    }
  }
}

void CheckMaskingRule(const v1::MaskingRule& m, Checker& ck) {
  ck.Name(m.name());
  ck.Selector("connections", m.connections());
  if (m.columns().empty() && m.detectors().empty()) {
    ck.Fail("columns", "required: column patterns, detectors, or both");
  }
  for (int i = 0; i < m.columns_size(); ++i) {
    const std::string& c = m.columns(i);
    size_t dot = c.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == c.size() ||
        c.find('.', dot + 1) != std::string::npos) {
      ck.Fail(absl::StrCat("columns[", i, "]"), "must be table.column, either part may be '*'");
    }
  }
  const auto& detectors = MaskingDetectors();
  for (int i = 0; i < m.detectors_size(); ++i) {
    if (std::find(detectors.begin(), detectors.end(), m.detectors(i)) == detectors.end()) {
      ck.Fail(
          absl::StrCat("detectors[", i, "]"),
          absl::StrCat("'", m.detectors(i), "' is not one of: ", absl::StrJoin(detectors, ", ")));
    }
  }
  if (m.strategy() == v1::MASKING_STRATEGY_UNSPECIFIED) {
    ck.Fail("strategy", "required: redact, partial, hash or null");
  }
}

void CheckApprovalPolicy(const v1::ApprovalPolicy& a, Checker& ck) {
  ck.Name(a.name());
  ck.Subjects("approvers", a.approvers(), true);
  if (a.min_approvals() > kMaxApprovals) {
    ck.Fail("min_approvals", absl::StrCat("at most ", kMaxApprovals));
  }
  if (a.has_timeout() &&
      (a.timeout().seconds() <= 0 || a.timeout().seconds() > kMaxApprovalTimeoutSeconds)) {
    ck.Fail("timeout", "must be between 1s and 24h");
  }
}

void CheckWebhook(const v1::Webhook& w, Checker& ck) {
  ck.Name(w.name());
  ck.HttpUrl("url", w.url());
}

void CheckRetentionPolicy(const v1::RetentionPolicy& r, Checker& ck) {
  ck.Name(r.name());
  ck.Selector("connections", r.connections());
  if (!r.has_keep()) {
    ck.Fail("keep", "required: how long sessions are kept after they end, e.g. 90d");
  } else if (r.keep().seconds() < 1 || r.keep().seconds() > kMaxRetentionSeconds) {
    ck.Fail("keep", "must be between 1s and 100 years (36500d)");
  }
}

}  // namespace

std::string NameProblem(const std::string& name) {
  if (name.empty()) return "required";
  if (name.size() > kMaxNameLength) return absl::StrCat("at most ", kMaxNameLength, " characters");
  bool ok = absl::ascii_islower(name[0]) || absl::ascii_isdigit(name[0]);
  for (char c : name) {
    ok = ok &&
         (absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || c == '_' || c == '.');
  }
  if (!ok)
    return "use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit";
  return "";
}

const std::vector<std::string>& GuardrailMatches() {
  static const auto* v = new std::vector<std::string>{
      "drop_database", "drop_table", "truncate",     "delete_without_where", "update_without_where",
      "ddl",           "dcl",        "alter_system", "copy_program",         "dangerous_function",
      "unknown"};
  return *v;
}

const std::vector<std::string>& MaskingDetectors() {
  static const auto* v =
      new std::vector<std::string>{"email", "credit_card", "us_ssn", "phone", "iban", "secret"};
  return *v;
}

std::string ProtocolName(v1::Protocol protocol) {
  switch (protocol) {
    case v1::PROTOCOL_POSTGRES:
      return "postgres";
    case v1::PROTOCOL_MYSQL:
      return "mysql";
    case v1::PROTOCOL_HTTP:
      return "http";
    case v1::PROTOCOL_GCS:
      return "gcs";
    case v1::PROTOCOL_BIGQUERY:
      return "bigquery";
    default:
      return "unspecified";
  }
}

std::vector<FieldError> ValidateResource(const Resource& r) {
  Checker ck;
  switch (r.kind_case()) {
    case Resource::kConnection:
      CheckConnection(r.connection(), ck);
      break;
    case Resource::kIssuer:
      CheckIssuer(r.issuer(), ck);
      break;
    case Resource::kAccessRule:
      CheckAccessRule(r.access_rule(), ck);
      break;
    case Resource::kGuardrail:
      CheckGuardrail(r.guardrail(), ck);
      break;
    case Resource::kMaskingRule:
      CheckMaskingRule(r.masking_rule(), ck);
      break;
    case Resource::kApprovalPolicy:
      CheckApprovalPolicy(r.approval_policy(), ck);
      break;
    case Resource::kWebhook:
      CheckWebhook(r.webhook(), ck);
      break;
    case Resource::kRetentionPolicy:
      CheckRetentionPolicy(r.retention_policy(), ck);
      break;
    case Resource::KIND_NOT_SET:
      ck.Fail("kind", "required");
      break;
  }
  return ck.Take();
}

std::vector<DocumentError> ValidateBatch(const std::vector<Resource>& batch) {
  std::vector<DocumentError> out;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Resource& r = batch[i];
    int index = static_cast<int>(i);
    std::string kind = KindOf(r), name = NameOf(r);
    for (const FieldError& fe : ValidateResource(r))
      out.push_back({index, kind, name, fe.field, fe.message});
    if (!seen.insert(absl::StrCat(kind, "/", name)).second) {
      out.push_back({index, kind, name, "name", "appears more than once in this batch"});
    }
  }
  return out;
}

std::vector<DocumentError> CheckReferences(const std::vector<Resource>& batch,
                                           const ResourceNames& after) {
  std::vector<DocumentError> out;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Resource& r = batch[i];
    int index = static_cast<int>(i);
    if (r.has_guardrail()) {
      for (int j = 0; j < r.guardrail().rules_size(); ++j) {
        const std::string& ap = r.guardrail().rules(j).approval();
        if (!ap.empty() && !after.approval_policies.contains(ap)) {
          out.push_back({index, "Guardrail", r.guardrail().name(),
                         absl::StrCat("rules[", j, "].approval"),
                         absl::StrCat("ApprovalPolicy '", ap, "' does not exist")});
        }
      }
    }
    if (r.has_approval_policy()) {
      for (int j = 0; j < r.approval_policy().webhooks_size(); ++j) {
        const std::string& w = r.approval_policy().webhooks(j);
        if (!after.webhooks.contains(w)) {
          out.push_back({index, "ApprovalPolicy", r.approval_policy().name(),
                         absl::StrCat("webhooks[", j, "]"),
                         absl::StrCat("Webhook '", w, "' does not exist")});
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::string> ResolvePassword(const v1::Credentials& credentials) {
  if (!credentials.password().empty()) return credentials.password();
  const std::string& from = credentials.password_from();
  if (absl::StartsWith(from, "env:")) {
    const char* v = std::getenv(from.substr(4).c_str());
    if (v == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("environment variable ", from.substr(4), " is not set on this agent"));
    }
    return std::string(v);
  }
  if (absl::StartsWith(from, "file:")) {
    auto text = ReadFile(from.substr(5), 4096);
    if (!text.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "file ", from.substr(5), " cannot be read on this agent: ", text.status().message()));
    }
    std::string pw = *std::move(text);
    while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
    return pw;
  }
  return absl::FailedPreconditionError("no password and no supported password_from");
}

absl::Status ValidateSnapshot(const v1::PolicySnapshot& snapshot,
                              const std::vector<std::string>& capabilities) {
  std::vector<std::string> problems;
  auto check = [&](Resource r) {
    std::string where = absl::StrCat(KindOf(r), " ", NameOf(r));
    for (const FieldError& fe : ValidateResource(r)) {
      problems.push_back(absl::StrCat(where, ": ", fe.field, ": ", fe.message));
    }
  };
  for (const auto& c : snapshot.connections()) {
    Resource r;
    *r.mutable_connection() = c;
    check(r);
    std::string proto = ProtocolName(c.protocol());
    if (std::find(capabilities.begin(), capabilities.end(), proto) == capabilities.end()) {
      problems.push_back(absl::StrCat(
          "Connection ", c.name(), ": protocol ", proto,
          " is not supported by this agent (it serves: ", absl::StrJoin(capabilities, ", "), ")"));
    }
    if (!c.credentials().password_from().empty()) {
      auto resolved = ResolvePassword(c.credentials());
      if (!resolved.ok()) {
        problems.push_back(absl::StrCat(
            "Connection ", c.name(), ": credentials.password_from: ", resolved.status().message()));
      }
    }
  }
  for (const auto& x : snapshot.issuers()) {
    Resource r;
    *r.mutable_issuer() = x;
    check(r);
  }
  for (const auto& x : snapshot.access_rules()) {
    Resource r;
    *r.mutable_access_rule() = x;
    check(r);
  }
  for (const auto& x : snapshot.guardrails()) {
    Resource r;
    *r.mutable_guardrail() = x;
    check(r);
  }
  for (const auto& x : snapshot.masking_rules()) {
    Resource r;
    *r.mutable_masking_rule() = x;
    check(r);
    if (x.strategy() == v1::MASKING_STRATEGY_HASH && snapshot.masking_hash_key().size() < 16) {
      problems.push_back(
          absl::StrCat("MaskingRule ", x.name(),
                       ": strategy hash needs the snapshot's masking_hash_key, which is missing"));
    }
  }
  absl::flat_hash_set<std::string> policies;
  for (const auto& x : snapshot.approval_policies()) {
    Resource r;
    *r.mutable_approval_policy() = x;
    r.mutable_approval_policy()->clear_webhooks();  // webhooks stay on the control plane
    check(r);
    policies.insert(x.name());
  }
  for (const auto& g : snapshot.guardrails()) {
    for (const auto& rule : g.rules()) {
      if (!rule.approval().empty() && !policies.contains(rule.approval())) {
        problems.push_back(absl::StrCat("Guardrail ", g.name(), ": ApprovalPolicy '",
                                        rule.approval(), "' is missing from the snapshot"));
      }
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
}

}  // namespace sluice::policy
