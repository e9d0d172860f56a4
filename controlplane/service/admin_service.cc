#include "controlplane/service/admin_service.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/policy/resource.h"
#include "common/policy/selectors.h"
#include "common/policy/validation.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "controlplane/evidence/report.h"
#include "controlplane/service/retention.h"
#include "controlplane/service/rollout.h"
#include "controlplane/store/disk_fault.h"

namespace sluice::controlplane {
namespace {

constexpr int64_t kDefaultEnrollTtlSeconds = 24 * 3600;
constexpr int64_t kMaxEnrollTtlSeconds = 30 * 24 * 3600;

}  // namespace

namespace {

bool InAny(const std::vector<std::string>& groups, const std::vector<std::string>& wanted) {
  for (const auto& g : groups) {
    if (std::find(wanted.begin(), wanted.end(), g) != wanted.end()) return true;
  }
  return false;
}

const char* NeedName(AdminServiceImpl::Need need) {
  switch (need) {
    case AdminServiceImpl::Need::kAdmin:
      return "the admin role";
    case AdminServiceImpl::Need::kRead:
      return "the admin or auditor role";
    case AdminServiceImpl::Need::kApprovals:
      return "the admin, auditor or approver role";
    case AdminServiceImpl::Need::kDecide:
      return "an approver's own OIDC token";
  }
  return "a role";
}

std::string RolesOf(const AdminServiceImpl::Caller& c) {
  std::vector<std::string> roles;
  if (c.admin) roles.push_back("admin");
  if (c.auditor) roles.push_back("auditor");
  if (c.approver) roles.push_back("approver");
  return roles.empty() ? "none" : absl::StrJoin(roles, ", ");
}

bool Allowed(const AdminServiceImpl::Caller& c, AdminServiceImpl::Need need) {
  switch (need) {
    case AdminServiceImpl::Need::kAdmin:
      return c.admin;
    case AdminServiceImpl::Need::kRead:
      return c.admin || c.auditor;
    case AdminServiceImpl::Need::kApprovals:
      return c.admin || c.auditor || c.approver;
    case AdminServiceImpl::Need::kDecide:
      return !c.bootstrap && c.approver;
  }
  return false;
}

}  // namespace

absl::StatusOr<AdminServiceImpl::Caller> AdminServiceImpl::Authenticate(const std::string& token) {
  Caller c;
  if (token.empty())
    return absl::UnauthenticatedError("missing or wrong admin token (set SLUICE_TOKEN or --token)");
  if (ConstantTimeEquals(token, admin_token_)) {
    c.actor = "bootstrap-admin";
    c.bootstrap = true;
    c.admin = true;
    return c;
  }
  if (std::count(token.begin(), token.end(), '.') != 2) {
    return absl::UnauthenticatedError(
        "missing or wrong admin token, and not an OIDC token either (set SLUICE_TOKEN or --token)");
  }
  std::shared_ptr<const PolicyState> state = policy_->state();
  if (state != verifier_state_) {
    auto verifier = jwt::Verifier::FromIssuers(state->issuers);
    if (!verifier.ok())
      return absl::UnavailableError(
          absl::StrCat("cannot verify tokens: ", verifier.status().message()));
    verifier_ = std::make_shared<const jwt::Verifier>(*std::move(verifier));
    verifier_state_ = state;
  }
  auto identity = verifier_->Verify(token, absl::Now());
  if (!identity.ok()) {
    return absl::UnauthenticatedError(
        absl::StrCat("token rejected: ", identity.status().message(),
                     " (give the bootstrap admin token or an OIDC token)"));
  }
  c.identity = *std::move(identity);
  c.actor = absl::StrCat(c.identity.subject, " (", c.identity.issuer, ")");
  c.admin = InAny(c.identity.groups, roles_.admin_groups);
  c.auditor = InAny(c.identity.groups, roles_.auditor_groups);
  c.approver = InAny(c.identity.groups, roles_.approver_groups);
  for (const auto& p : state->approval_policies) {
    if (policy::SelectsCaller(p.approvers(), c.identity.issuer, c.identity.subject,
                              c.identity.groups)) {
      c.approver = true;
    }
  }
  return c;
}

namespace {

std::string BearerToken(grpc::CallbackServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return "";
  std::string value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (absl::StartsWith(value, kBearer) && value.size() <= 16384)
    return value.substr(kBearer.size());
  return "";
}

}  // namespace

std::optional<AdminServiceImpl::Caller> AdminServiceImpl::Admit(grpc::ServerUnaryReactor* reactor,
                                                                const std::string& action,
                                                                const std::string& peer, Need need,
                                                                const std::string& token) {
  auto caller = Authenticate(token);
  if (caller.ok() && Allowed(*caller, need)) return *std::move(caller);
  absl::Status st = caller.ok() ? absl::PermissionDeniedError(absl::StrCat(
                                      caller->actor, " (roles: ", RolesOf(*caller),
                                      ") may not call ", action, ": it needs ", NeedName(need)))
                                : caller.status();
  // A record that cannot be stored is logged and counted by the store's guard
  // (sluice_store_audit_records_lost_total); the caller is answered all the same.
  store_
      ->AppendAudit({0, NowUnixMs(), caller.ok() ? caller->actor : "anonymous", action, "",
                     absl::StatusCodeToString(st.code()),
                     absl::StrCat(st.message(), " (from ", peer, ")")})
      .IgnoreError();
  reactor->Finish(ToGrpcStatus(st));
  return std::nullopt;
}

void AdminServiceImpl::Conclude(grpc::ServerUnaryReactor* reactor, const std::string& action,
                                const std::string& peer, const std::string& actor,
                                const std::string& target, absl::Status st) {
  // The error text may name documents and fields; it never holds a secret value.
  std::string detail =
      st.ok() ? "from " + peer : absl::StrCat(st.message().substr(0, 2000), " (from ", peer, ")");
  // Logged and counted by the store's guard when it cannot be stored.
  store_
      ->AppendAudit({0, NowUnixMs(), actor, action, target,
                     st.ok() ? "ok" : absl::StatusCodeToString(st.code()), detail})
      .IgnoreError();
  // A change the store refused for a disk fault: not UNAVAILABLE at the edge, which callers
  // read as "the control plane is unreachable"; the message names the file and the fault.
  if (IsDiskFault(st)) st = absl::FailedPreconditionError(st.message());
  reactor->Finish(ToGrpcStatus(st));
}

grpc::ServerUnaryReactor* AdminServiceImpl::Run(
    grpc::CallbackServerContext* ctx, const char* action, Need need,
    std::function<absl::Status(const Caller& caller, std::string* target)> work) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  worker_->Post([this, reactor, act = std::string(action), peer = ctx->peer(), need,
                 token = BearerToken(ctx), work = std::move(work)] {
    std::optional<Caller> caller = Admit(reactor, act, peer, need, token);
    if (!caller) return;
    std::string target;
    absl::Status st = work(*caller, &target);
    Conclude(reactor, act, peer, caller->actor, target, std::move(st));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::RunRead(
    grpc::CallbackServerContext* ctx, const char* action, Need need,
    std::function<absl::Status(Store& store, std::string* target)> work) {
  if (reader_ == nullptr || reader_worker_ == nullptr) {
    return Run(ctx, action, need,
               [this, work = std::move(work)](const Caller&, std::string* target) {
                 return store_->ReadSnapshot([&] { return work(*store_, target); });
               });
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  worker_->Post([this, reactor, act = std::string(action), peer = ctx->peer(), need,
                 token = BearerToken(ctx), work = std::move(work)]() mutable {
    std::optional<Caller> caller = Admit(reactor, act, peer, need, token);
    if (!caller) return;
    // The read runs beside the store worker, which goes on storing agents' events; its outcome
    // is audited back on the store worker.
    reader_worker_->Post([this, reactor, act, peer, actor = caller->actor, work = std::move(work)] {
      std::string target;
      absl::Status st = reader_->ReadSnapshot([&] { return work(*reader_, &target); });
      worker_->Post([this, reactor, act, peer, actor, target, st] {
        Conclude(reactor, act, peer, actor, target, st);
      });
    });
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::Apply(grpc::CallbackServerContext* ctx,
                                                  const v1::ApplyRequest* req,
                                                  v1::ApplyResponse* resp) {
  return Run(ctx, "AdminService.Apply", Need::kAdmin,
             [this, req, resp](const Caller& caller, std::string* target) {
               *target = absl::StrCat(
                   req->resources_size(), " document(s)",
                   req->source().empty() ? "" : " from " + req->source().substr(0, 256),
                   req->canary().empty()
                       ? ""
                       : " canary " + policy::LabelsText(policy::Labels(req->canary().begin(),
                                                                        req->canary().end()))
                                          .substr(0, 256));
               uint64_t before = policy_->state()->version;
               RETURN_IF_ERROR(policy_->Apply(*req, caller.actor, resp));
               if (policy_->state()->version != before) {
                 int pushed = hub_->PushState(policy_->state());
                 LogInfo("policy version ", resp->version(), ": pushed to ", pushed, " agent(s)",
                         resp->rollout_id() != 0
                             ? absl::StrCat(" (rollout ", resp->rollout_id(), ", canary only)")
                             : "");
                 if (on_policy_change_) on_policy_change_();
               }
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                const v1::GetRequest* req, v1::Resource* resp) {
  return Run(ctx, "AdminService.Get", Need::kRead,
             [this, req, resp](const Caller&, std::string* target) {
               *target = absl::StrCat(req->kind().substr(0, 64), "/", req->name().substr(0, 64));
               ASSIGN_OR_RETURN(*resp, policy_->Get(req->kind(), req->name()));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::List(grpc::CallbackServerContext* ctx,
                                                 const v1::ListRequest* req,
                                                 v1::ListResponse* resp) {
  return Run(ctx, "AdminService.List", Need::kRead,
             [this, req, resp](const Caller&, std::string* target) {
               *target = req->kind().substr(0, 64);
               ASSIGN_OR_RETURN(*resp, policy_->List(req->kind()));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Delete(grpc::CallbackServerContext* ctx,
                                                   const v1::DeleteRequest* req,
                                                   v1::DeleteResponse* resp) {
  return Run(ctx, "AdminService.Delete", Need::kAdmin,
             [this, req, resp](const Caller& caller, std::string* target) {
               *target = absl::StrCat(req->kind().substr(0, 64), "/", req->name().substr(0, 64));
               ASSIGN_OR_RETURN(uint64_t version,
                                policy_->Delete(req->kind(), req->name(), caller.actor));
               resp->set_version(version);
               int pushed = hub_->PushState(policy_->state());
               LogInfo("policy version ", version, ": pushed to ", pushed, " agent(s)");
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::EnrollAgent(grpc::CallbackServerContext* ctx,
                                                        const v1::EnrollAgentRequest* req,
                                                        v1::EnrollAgentResponse* resp) {
  return Run(ctx, "AdminService.EnrollAgent", Need::kAdmin,
             [this, req, resp](const Caller&, std::string* target) {
               EnrollmentRecord e;
               e.agent_id = req->name().empty() ? "agent-" + RandomHex(4) : req->name();
               *target = "Agent/" + e.agent_id.substr(0, 64);
               // Agent ids follow the resource name rules.
               std::string problem = policy::NameProblem(e.agent_id);
               if (!problem.empty()) return absl::InvalidArgumentError("agent name: " + problem);
               if (req->labels().empty()) {
                 return absl::InvalidArgumentError(
                     "labels: required; they decide which connections the agent serves");
               }
               e.labels.insert(req->labels().begin(), req->labels().end());
               if (req->tls_names_size() > 32)
                 return absl::InvalidArgumentError("tls_names: at most 32");
               for (const std::string& name : req->tls_names()) {
                 absl::Status ok = CheckTlsName(name);
                 if (!ok.ok())
                   return absl::InvalidArgumentError(absl::StrCat("tls_names: ", ok.message()));
                 e.tls_names.push_back(name);
               }
               int64_t ttl =
                   req->ttl_seconds() == 0 ? kDefaultEnrollTtlSeconds : req->ttl_seconds();
               if (ttl > kMaxEnrollTtlSeconds)
                 return absl::InvalidArgumentError("ttl_seconds: at most 30 days");
               std::string token = "sluice-enroll-" + RandomHex(24);
               e.token_hash = Sha256Hex(token);
               e.created_ms = NowUnixMs();
               e.expires_ms = e.created_ms + ttl * 1000;
               RETURN_IF_ERROR(store_->CreateEnrollment(e));
               resp->set_agent_id(e.agent_id);
               resp->set_token(token);
               resp->set_expires_unix_ms(e.expires_ms);
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListAgents(grpc::CallbackServerContext* ctx,
                                                       const v1::ListAgentsRequest* /*req*/,
                                                       v1::ListAgentsResponse* resp) {
  return Run(ctx, "AdminService.ListAgents", Need::kRead,
             [this, resp](const Caller&, std::string* /*target*/) {
               ASSIGN_OR_RETURN(auto agents, store_->ListAgents());
               auto live = hub_->LiveStatus();
               resp->set_policy_version(policy_->state()->version);
               if (auto fault = store_->WriteFault()) {
                 resp->set_store_error(fault->error);
                 resp->set_store_error_since_unix_ms(fault->since_ms);
               }
               for (const auto& a : agents) {
                 v1::AgentStatus* s = resp->add_agents();
                 s->set_agent_id(a.id);
                 s->mutable_labels()->insert(a.labels.begin(), a.labels.end());
                 s->set_last_seen_unix_ms(a.last_seen_ms);
                 s->set_applied_version(a.applied_version);
                 s->set_last_nack_version(a.last_nack_version);
                 s->set_last_nack_error(a.last_nack_error);
                 s->set_agent_version(a.agent_version);
                 for (const auto& c : a.capabilities) s->add_capabilities(c);
                 s->set_enrolled_unix_ms(a.enrolled_ms);
                 auto it = live.find(a.id);
                 if (it != live.end()) {
                   s->set_connected(true);
                   s->set_desired_version(it->second.desired_version);
                   s->set_last_seen_unix_ms(NowUnixMs());
                   s->set_audit_state(it->second.audit_error.empty() ? "ok" : "refusing");
                   s->set_audit_error(it->second.audit_error);
                   s->set_audit_error_since_unix_ms(it->second.audit_error_since_ms);
                 }
               }
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListSessions(grpc::CallbackServerContext* ctx,
                                                         const v1::ListSessionsRequest* req,
                                                         v1::ListSessionsResponse* resp) {
  return Run(ctx, "AdminService.ListSessions", Need::kRead,
             [this, req, resp](const Caller&, std::string* target) {
               *target = absl::StrCat("subject=", req->subject().substr(0, 64),
                                      " connection=", req->connection().substr(0, 64));
               ASSIGN_OR_RETURN(auto sessions, store_->ListSessions(*req));
               for (auto& s : sessions) *resp->add_sessions() = std::move(s);
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetSession(grpc::CallbackServerContext* ctx,
                                                       const v1::GetSessionRequest* req,
                                                       v1::SessionDetail* resp) {
  return Run(ctx, "AdminService.GetSession", Need::kRead,
             [this, req, resp](const Caller&, std::string* target) {
               *target = "Session/" + req->session_id().substr(0, 64);
               ASSIGN_OR_RETURN(*resp, store_->GetSession(*req));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::MintDevToken(grpc::CallbackServerContext* ctx,
                                                         const v1::MintDevTokenRequest* req,
                                                         v1::MintDevTokenResponse* resp) {
  return Run(ctx, "AdminService.MintDevToken", Need::kAdmin,
             [this, req, resp](const Caller&, std::string* target) {
               // The audit record names the subject and groups, never the token.
               *target = absl::StrCat("subject=", req->subject().substr(0, 64),
                                      " groups=", absl::StrJoin(req->groups(), ",").substr(0, 128));
               if (dev_issuer_ == nullptr) {
                 return absl::FailedPreconditionError(
                     "the dev issuer is off: start sluice-controlplane with --dev-issuer (for "
                     "local use only)");
               }
               ASSIGN_OR_RETURN(*resp, dev_issuer_->Mint(*req, absl::Now()));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListApprovals(grpc::CallbackServerContext* ctx,
                                                          const v1::ListApprovalsRequest* req,
                                                          v1::ListApprovalsResponse* resp) {
  return Run(
      ctx, "AdminService.ListApprovals", Need::kApprovals,
      [this, req, resp](const Caller&, std::string* target) {
        *target = "status=" + req->status().substr(0, 16);
        const std::string& status = req->status();
        if (!status.empty() && status != "pending" && status != "approved" && status != "denied" &&
            status != "expired" && status != "withdrawn") {
          return absl::InvalidArgumentError(
              "status: one of pending, approved, denied, expired, withdrawn (or empty for all)");
        }
        int limit =
            req->limit() == 0 ? 100 : static_cast<int>(std::min<uint32_t>(req->limit(), 1000));
        ASSIGN_OR_RETURN(auto approvals, store_->ListApprovals(status, limit));
        for (auto& a : approvals) *resp->add_approvals() = std::move(a);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetApproval(grpc::CallbackServerContext* ctx,
                                                        const v1::GetApprovalRequest* req,
                                                        v1::Approval* resp) {
  return Run(ctx, "AdminService.GetApproval", Need::kApprovals,
             [this, req, resp](const Caller&, std::string* target) {
               *target = absl::StrCat("Approval/", req->id());
               ASSIGN_OR_RETURN(ApprovalRecord r, store_->GetApproval(req->id()));
               *resp = std::move(r.approval);
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::DecideApproval(grpc::CallbackServerContext* ctx,
                                                           const v1::DecideApprovalRequest* req,
                                                           v1::Approval* resp) {
  return Run(
      ctx, "AdminService.DecideApproval", Need::kDecide,
      [this, req, resp](const Caller& caller, std::string* target) {
        *target = absl::StrCat("Approval/", req->id(), req->approve() ? " approve" : " deny");
        if (desk_ == nullptr)
          return absl::FailedPreconditionError("this control plane does not take approvals");
        Approver who{caller.identity.subject, caller.identity.issuer, caller.identity.groups, ""};
        ASSIGN_OR_RETURN(*resp, desk_->Decide(req->id(), who, req->approve(), req->reason(),
                                              *policy_->state(), NowUnixMs()));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::VerifyAudit(grpc::CallbackServerContext* ctx,
                                                        const v1::VerifyAuditRequest* req,
                                                        v1::VerifyAuditResponse* resp) {
  return RunRead(
      ctx, "AdminService.VerifyAudit", Need::kRead, [req, resp](Store& store, std::string* target) {
        ASSIGN_OR_RETURN(*resp, store.VerifyAudit(*req, nullptr));
        *target = resp->ok() ? absl::StrCat("ok: ", resp->records(), " records")
                             : absl::StrCat("FAILED: ", resp->first_problem().substr(0, 500));
        return absl::OkStatus();
      });
}

// A legal hold protects evidence: auditors may place and release one as well as admins.
grpc::ServerUnaryReactor* AdminServiceImpl::HoldSession(grpc::CallbackServerContext* ctx,
                                                        const v1::HoldSessionRequest* req,
                                                        v1::SessionSummary* resp) {
  return Run(ctx, req->release() ? "AdminService.ReleaseHold" : "AdminService.HoldSession",
             Need::kRead, [this, req, resp](const Caller& caller, std::string* target) {
               *target = "Session/" + req->session_id().substr(0, 64);
               if (!req->release() && req->reason().empty()) {
                 return absl::InvalidArgumentError(
                     "reason: required to place a legal hold (e.g. a case number)");
               }
               if (req->reason().size() > 1000)
                 return absl::InvalidArgumentError("reason: at most 1000 characters");
               ASSIGN_OR_RETURN(*resp,
                                store_->SetLegalHold(req->session_id(), req->reason(), caller.actor,
                                                     NowUnixMs(), req->release()));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::PurgeExpired(grpc::CallbackServerContext* ctx,
                                                         const v1::PurgeExpiredRequest* req,
                                                         v1::PurgeExpiredResponse* resp) {
  return Run(ctx, "AdminService.PurgeExpired", Need::kAdmin,
             [this, req, resp](const Caller& caller, std::string* target) {
               ASSIGN_OR_RETURN(*resp, RunRetention(store_, *policy_->state(), caller.actor,
                                                    req->dry_run(), NowUnixMs()));
               *target = absl::StrCat(req->dry_run() ? "dry run: " : "", resp->sessions(),
                                      " sessions due, ", resp->held(), " held");
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ExportEvidence(grpc::CallbackServerContext* ctx,
                                                           const v1::ExportEvidenceRequest* req,
                                                           v1::ExportEvidenceResponse* resp) {
  return RunRead(
      ctx, "AdminService.ExportEvidence", Need::kRead,
      [req, resp](Store& store, std::string* target) {
        evidence::ReportOptions options;
        options.now_ms = NowUnixMs();
        options.from_ms = req->from_unix_ms();
        options.until_ms = req->until_unix_ms() == 0 ? options.now_ms : req->until_unix_ms();
        *target = absl::StrCat("window ", options.from_ms, "..", options.until_ms);
        if (options.from_ms <= 0) {
          return absl::InvalidArgumentError("from_unix_ms: required (the start of the window)");
        }
        if (options.until_ms <= options.from_ms) {
          return absl::InvalidArgumentError(
              "the window's end (until_unix_ms) must be after its start (from_unix_ms)");
        }
        ASSIGN_OR_RETURN(nlohmann::ordered_json report, evidence::BuildReport(store, options));
        resp->set_verified(report["verify"]["ok"].get<bool>());
        resp->set_json(report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        return absl::OkStatus();
      });
}

}  // namespace sluice::controlplane

namespace sluice::controlplane {

absl::StatusOr<v1::RolloutStatus> AdminServiceImpl::RolloutStatusOf(int64_t id) {
  ASSIGN_OR_RETURN(std::optional<RolloutRecord> r, store_->GetRollout(id));
  if (!r && id != 0) return absl::NotFoundError(absl::StrCat("rollout ", id, " does not exist"));
  ASSIGN_OR_RETURN(auto agents, store_->ListAgents());
  return DescribeRollout(r, agents, hub_->LiveStatus(), policy_->state()->version);
}

absl::StatusOr<RolloutRecord> AdminServiceImpl::RolloutInProgress() {
  ASSIGN_OR_RETURN(std::optional<RolloutRecord> r, store_->GetRollout(0));
  if (!r) {
    return absl::FailedPreconditionError(
        "no rollout was started (sluicectl apply -f FILE --canary k=v starts one)");
  }
  if (!r->in_progress()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no rollout is in progress: the latest, rollout ", r->id, " of version ",
                     r->version, ", is ", r->state));
  }
  return *std::move(r);
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetRollout(grpc::CallbackServerContext* ctx,
                                                       const v1::GetRolloutRequest* req,
                                                       v1::RolloutStatus* resp) {
  return Run(ctx, "AdminService.GetRollout", Need::kRead,
             [this, req, resp](const Caller&, std::string* target) {
               if (req->id() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                 return absl::InvalidArgumentError("id: out of range");
               if (req->id() != 0) *target = absl::StrCat("Rollout/", req->id());
               ASSIGN_OR_RETURN(*resp, RolloutStatusOf(static_cast<int64_t>(req->id())));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::PromoteRollout(grpc::CallbackServerContext* ctx,
                                                           const v1::PromoteRolloutRequest* req,
                                                           v1::RolloutStatus* resp) {
  return Run(ctx, "AdminService.PromoteRollout", Need::kAdmin,
             [this, req, resp](const Caller& caller, std::string* target) {
               if (req->reason().size() > 1000)
                 return absl::InvalidArgumentError("reason: at most 1000 characters");
               ASSIGN_OR_RETURN(RolloutRecord r, RolloutInProgress());
               *target = absl::StrCat("Rollout/", r.id, req->force() ? " --force" : "");
               ASSIGN_OR_RETURN(auto agents, store_->ListAgents());
               RETURN_IF_ERROR(CheckPromote(r, agents, hub_->LiveStatus(), req->force()));
               std::string reason = req->reason();
               if (req->force()) {
                 reason = absl::StrCat("forced by ", caller.actor, " while ", r.state,
                                       r.reason.empty() ? "" : " (" + r.reason + ")",
                                       reason.empty() ? "" : ": " + reason);
               }
               ASSIGN_OR_RETURN(RolloutRecord promoted,
                                policy_->PromoteRollout(r.id, caller.actor, reason));
               int pushed = hub_->PushState(policy_->state());
               LogInfo("rollout ", promoted.id, " promoted: policy version ", promoted.version,
                       " pushed to ", pushed, " more agent(s)");
               ASSIGN_OR_RETURN(*resp, RolloutStatusOf(promoted.id));
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminServiceImpl::AbortRollout(grpc::CallbackServerContext* ctx,
                                                         const v1::AbortRolloutRequest* req,
                                                         v1::RolloutStatus* resp) {
  return Run(ctx, "AdminService.AbortRollout", Need::kAdmin,
             [this, req, resp](const Caller& caller, std::string* target) {
               if (req->reason().size() > 1000)
                 return absl::InvalidArgumentError("reason: at most 1000 characters");
               ASSIGN_OR_RETURN(RolloutRecord r, RolloutInProgress());
               *target = absl::StrCat("Rollout/", r.id);
               ASSIGN_OR_RETURN(RolloutRecord aborted,
                                policy_->AbortRollout(r.id, caller.actor, req->reason()));
               int pushed = hub_->PushState(policy_->state());
               LogInfo("rollout ", aborted.id, " aborted: policy version ",
                       aborted.restored_version, " restores version ", aborted.previous_version,
                       "; pushed to ", pushed, " agent(s)");
               if (on_policy_change_) on_policy_change_();
               ASSIGN_OR_RETURN(*resp, RolloutStatusOf(aborted.id));
               return absl::OkStatus();
             });
}

}  // namespace sluice::controlplane
