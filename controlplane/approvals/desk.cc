#include "controlplane/approvals/desk.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/policy/selectors.h"
#include "common/status_macros.h"

namespace sluice::controlplane {
namespace {

constexpr int64_t kDefaultTimeoutMs = 300 * 1000;
constexpr int64_t kMaxTimeoutMs = 24 * 3600 * 1000;
constexpr size_t kMaxStatement = 64 << 10;
constexpr int kMaxParameters = 100;
constexpr size_t kMaxParameter = 1024;
constexpr size_t kMaxReason = 1000;

const v1::ApprovalPolicy* FindPolicy(const PolicyState& state, const std::string& name) {
  for (const auto& p : state.approval_policies) {
    if (p.name() == name) return &p;
  }
  return nullptr;
}

std::string SelectorText(const v1::SubjectSelector& s) {
  std::vector<std::string> parts;
  if (!s.subjects().empty())
    parts.push_back(absl::StrCat("subjects [", absl::StrJoin(s.subjects(), ", "), "]"));
  if (!s.groups().empty())
    parts.push_back(absl::StrCat("groups [", absl::StrJoin(s.groups(), ", "), "]"));
  return absl::StrJoin(parts, " or ");
}

}  // namespace

std::string Approver::Display() const {
  if (!link_webhook.empty()) return "link:" + link_webhook;
  return issuer.empty() ? subject : absl::StrCat(subject, " (", issuer, ")");
}

ApprovalDesk::ApprovalDesk(Store* store, AgentHub* hub, WebhookSender* sender, std::string link_key,
                           std::string public_url)
    : store_(store), hub_(hub), sender_(sender), link_key_(std::move(link_key)) {
  SetPublicUrl(std::move(public_url));
}

void ApprovalDesk::SetPublicUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  absl::MutexLock lock(&url_mu_);
  public_url_ = std::move(url);
}

v1::ApprovalRegistered ApprovalDesk::Register(const std::string& agent_id,
                                              const v1::ApprovalRequest& req,
                                              const PolicyState& state, int64_t now_ms) {
  v1::ApprovalRegistered out;
  out.set_request_id(req.request_id().substr(0, 64));
  auto refuse = [&](const std::string& why) {
    out.set_error(why);
    LogWarning("approval request from agent ", agent_id, " refused: ", why);
    return out;
  };
  if (req.request_id().empty() || req.request_id().size() > 64)
    return refuse("request_id: 1 to 64 characters");
  if (req.statement().size() > kMaxStatement) return refuse("statement longer than 64 KiB");
  if (req.parameters_size() > kMaxParameters) return refuse("more than 100 parameters");
  const v1::ApprovalPolicy* policy = FindPolicy(state, req.approval_policy());
  if (policy == nullptr) {
    return refuse(
        absl::StrCat("ApprovalPolicy '", req.approval_policy().substr(0, 128), "' does not exist"));
  }
  int64_t timeout_ms = policy->has_timeout() ? policy->timeout().seconds() * 1000 +
                                                   policy->timeout().nanos() / 1000000
                                             : kDefaultTimeoutMs;
  timeout_ms = std::clamp<int64_t>(timeout_ms, 1000, kMaxTimeoutMs);

  ApprovalRecord r;
  r.agent_request_id = req.request_id();
  v1::Approval& a = r.approval;
  a.set_status(kPending);
  a.set_agent_id(agent_id);
  a.set_session_id(req.session_id().substr(0, 64));
  a.set_connection(req.connection().substr(0, 128));
  a.set_subject(req.subject().substr(0, 256));
  a.set_issuer(req.issuer().substr(0, 128));
  for (const auto& g : req.groups()) {
    if (a.groups_size() < 100) a.add_groups(g.substr(0, 256));
  }
  for (const auto& [k, v] : req.attribution()) {
    if (a.attribution_size() < 32) (*a.mutable_attribution())[k.substr(0, 64)] = v.substr(0, 256);
  }
  a.set_statement(req.statement());
  a.set_fingerprint(req.fingerprint().substr(0, 128));
  for (const auto& p : req.parameters()) a.add_parameters(p.substr(0, kMaxParameter));
  a.set_guardrail(req.guardrail().substr(0, 128));
  a.set_rule(req.rule().substr(0, 64));
  a.set_target(req.target().substr(0, 256));
  a.set_approval_policy(policy->name());
  a.set_min_approvals(std::max<uint32_t>(1, policy->min_approvals()));
  a.set_created_unix_ms(now_ms);
  a.set_expires_unix_ms(now_ms + timeout_ms);
  auto id = store_->CreateApproval(r);
  if (!id.ok()) return refuse(absl::StrCat("cannot store the request: ", id.status().message()));
  a.set_id(*id);
  out.set_approval_id(*id);
  out.set_expires_unix_ms(a.expires_unix_ms());
  store_
      ->AppendAudit(
          {0, now_ms, "agent:" + agent_id, "Approval.request", absl::StrCat("Approval/", *id), "ok",
           absl::StrCat(a.subject(), " on ", a.connection(), " under guardrail ", a.guardrail(),
                        " (", a.rule(), "), ApprovalPolicy ", a.approval_policy())})
      .IgnoreError();
  LogInfo("approval request ", *id, ": ", a.subject(), " on ", a.connection(), " (", a.rule(),
          "), waiting up to ", timeout_ms / 1000, " s");
  if (sender_ != nullptr) {
    for (const auto& name : policy->webhooks()) {
      auto it = std::find_if(state.webhooks.begin(), state.webhooks.end(),
                             [&](const v1::Webhook& w) { return w.name() == name; });
      if (it == state.webhooks.end()) continue;  // validation keeps references whole
      std::string approve = Link(*id, true, name, a.expires_unix_ms());
      std::string deny = Link(*id, false, name, a.expires_unix_ms());
      sender_->Send(*id, *it, WebhookBody(*it, a, approve, deny));
    }
  }
  return out;
}

absl::StatusOr<v1::Approval> ApprovalDesk::Decide(uint64_t id, const Approver& who, bool approve,
                                                  const std::string& reason,
                                                  const PolicyState& state, int64_t now_ms) {
  if (reason.size() > kMaxReason)
    return absl::InvalidArgumentError("reason: at most 1000 characters");
  ASSIGN_OR_RETURN(ApprovalRecord r, store_->GetApproval(id));
  v1::Approval& a = r.approval;
  if (a.status() == kPending && now_ms >= a.expires_unix_ms()) {
    ExpireDue(now_ms);
    ASSIGN_OR_RETURN(r, store_->GetApproval(id));
  }
  if (a.status() != kPending) {
    return absl::FailedPreconditionError(absl::StrCat("approval request ", id, " is already ",
                                                      a.status(),
                                                      a.reason().empty() ? "" : ": " + a.reason()));
  }
  if (who.link_webhook.empty()) {
    const v1::ApprovalPolicy* policy = FindPolicy(state, a.approval_policy());
    if (policy == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("ApprovalPolicy '", a.approval_policy(),
                       "' no longer exists: nobody can decide request ", id));
    }
    if (!policy::SelectsCaller(policy->approvers(), who.issuer, who.subject, who.groups)) {
      return absl::PermissionDeniedError(
          absl::StrCat(who.Display(), " is not an approver of ApprovalPolicy '", policy->name(),
                       "' (approvers: ", SelectorText(policy->approvers()), ")"));
    }
    if (approve && who.subject == a.subject() && who.issuer == a.issuer()) {
      // Its own record, besides the refused call's: separation-of-duties evidence (AC-5).
      store_
          ->AppendAudit({0, now_ms, who.Display(), "Approval.refuse_self",
                         absl::StrCat("Approval/", id), "PERMISSION_DENIED",
                         "a requester cannot approve their own statement"})
          .IgnoreError();
      return absl::PermissionDeniedError(
          absl::StrCat("request ", id, " is yours (", who.Display(),
                       "): a requester cannot approve their own statement"));
    }
  }
  std::string display = who.Display();
  for (const auto& v : a.votes()) {
    if (v.approver() == display) {
      return absl::FailedPreconditionError(
          absl::StrCat(display, " has already decided on request ", id));
    }
  }
  v1::ApprovalVote* vote = a.add_votes();
  vote->set_approver(display);
  vote->set_approved(approve);
  vote->set_reason(reason);
  vote->set_time_unix_ms(now_ms);
  int approvals = 0;
  for (const auto& v : a.votes()) approvals += v.approved() ? 1 : 0;
  store_
      ->AppendAudit({0, now_ms, display, approve ? "Approval.approve" : "Approval.deny",
                     absl::StrCat("Approval/", id), "ok",
                     reason.empty() ? "(no reason given)" : reason})
      .IgnoreError();
  if (!approve) {
    a.set_status("denied");
    a.set_reason(reason.empty() ? absl::StrCat("denied by ", display)
                                : absl::StrCat(display, ": ", reason));
  } else if (approvals >= static_cast<int>(a.min_approvals())) {
    a.set_status("approved");
    a.set_reason(reason);
  }
  if (a.status() == kPending) {
    RETURN_IF_ERROR(store_->UpdateApproval(a));
    LogInfo("approval request ", id, ": approved by ", display, " (", approvals, " of ",
            a.min_approvals(), ")");
    return a;
  }
  a.set_decided_unix_ms(now_ms);
  RETURN_IF_ERROR(Finish(r, display));
  return a;
}

absl::Status ApprovalDesk::Finish(ApprovalRecord& r, const std::string& actor) {
  const v1::Approval& a = r.approval;
  RETURN_IF_ERROR(store_->UpdateApproval(a));
  v1::ControlMessage msg;
  v1::ApprovalDecision* d = msg.mutable_approval_decision();
  d->set_request_id(r.agent_request_id);
  d->set_approval_id(a.id());
  d->set_approved(a.status() == "approved");
  d->set_expired(a.status() == "expired");
  d->set_reason(a.reason());
  for (const auto& v : a.votes()) {
    if (v.approved() == d->approved()) d->add_approvers(v.approver());
  }
  bool sent = hub_->SendTo(a.agent_id(), std::move(msg));
  LogInfo("approval request ", a.id(), " ", a.status(), " (", actor, ")",
          sent ? "" : "; the agent is not connected, so its hold has already ended");
  return absl::OkStatus();
}

void ApprovalDesk::ExpireDue(int64_t now_ms) {
  auto due = store_->DueApprovals(now_ms);
  if (!due.ok()) {
    LogError("cannot list expired approval requests: ", due.status().message());
    return;
  }
  for (ApprovalRecord& r : *due) {
    v1::Approval& a = r.approval;
    a.set_status("expired");
    a.set_decided_unix_ms(now_ms);
    a.set_reason(absl::StrCat("no decision within ",
                              (a.expires_unix_ms() - a.created_unix_ms()) / 1000, " s"));
    store_
        ->AppendAudit({0, now_ms, "controlplane", "Approval.expire",
                       absl::StrCat("Approval/", a.id()), "ok", a.reason()})
        .IgnoreError();
    absl::Status st = Finish(r, "expired");
    if (!st.ok()) LogError("cannot expire approval request ", a.id(), ": ", st.message());
  }
}

void ApprovalDesk::Withdraw(const std::string& agent_id, const v1::ApprovalWithdrawn& w,
                            int64_t now_ms) {
  auto r = store_->FindApproval(agent_id, w.request_id());
  if (!r.ok() || r->approval.status() != kPending) return;
  v1::Approval& a = r->approval;
  a.set_status("withdrawn");
  a.set_decided_unix_ms(now_ms);
  a.set_reason(w.reason().substr(0, 256));
  absl::Status st = store_->UpdateApproval(a);
  if (!st.ok()) {
    LogError("cannot withdraw approval request ", a.id(), ": ", st.message());
    return;
  }
  store_
      ->AppendAudit({0, now_ms, "agent:" + agent_id, "Approval.withdraw",
                     absl::StrCat("Approval/", a.id()), "ok", a.reason()})
      .IgnoreError();
  LogInfo("approval request ", a.id(), " withdrawn: ", a.reason());
}

void ApprovalDesk::RecordDelivery(uint64_t id, const v1::WebhookDelivery& delivery) {
  auto r = store_->GetApproval(id);
  if (!r.ok()) return;
  if (r->approval.deliveries_size() >= 100) return;
  *r->approval.add_deliveries() = delivery;
  absl::Status st = store_->UpdateApproval(r->approval);
  if (!st.ok())
    LogError("cannot record a webhook delivery of approval request ", id, ": ", st.message());
}

std::string ApprovalDesk::LinkSignature(uint64_t id, bool approve, const std::string& webhook,
                                        int64_t expires_ms) const {
  return HexEncode(
      HmacSha256(link_key_, absl::StrCat("approval-link|", id, "|", approve ? "approve" : "deny",
                                         "|", webhook, "|", expires_ms)));
}

std::string ApprovalDesk::Link(uint64_t id, bool approve, const std::string& webhook,
                               int64_t expires_ms) const {
  std::string base;
  {
    absl::MutexLock lock(&url_mu_);
    base = public_url_;
  }
  if (base.empty() || link_key_.empty()) return "";
  return absl::StrCat(base, "/approvals/", id, "/", approve ? "approve" : "deny",
                      "?webhook=", webhook, "&exp=", expires_ms,
                      "&sig=", LinkSignature(id, approve, webhook, expires_ms));
}

absl::Status ApprovalDesk::CheckLink(uint64_t id, bool approve, const std::string& webhook,
                                     int64_t expires_ms, const std::string& signature,
                                     int64_t now_ms) const {
  if (link_key_.empty()) return absl::PermissionDeniedError("callback links are off");
  if (!ConstantTimeEquals(signature, LinkSignature(id, approve, webhook, expires_ms))) {
    return absl::PermissionDeniedError("this link is not valid (its signature does not match)");
  }
  if (now_ms >= expires_ms) return absl::PermissionDeniedError("this link has expired");
  return absl::OkStatus();
}

}  // namespace sluice::controlplane
