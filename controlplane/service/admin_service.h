// sluice.v1.AdminService: what operators and sluicectl call. Every call is authenticated (the
// bootstrap admin token, or an OIDC token from one of the policy's Issuers with roles from its
// groups), authorized by role, and recorded as an audit event, allowed or not. The work runs on
// the store worker; reactions only post and return.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/jwt.h"
#include "controlplane/approvals/desk.h"
#include "controlplane/service/agent_hub.h"
#include "controlplane/service/dev_issuer.h"
#include "controlplane/service/policy_manager.h"
#include "controlplane/service/worker.h"
#include "controlplane/store/store.h"
#include "sluice/v1/admin.grpc.pb.h"

namespace sluice::controlplane {

// Which groups of OIDC callers hold which role. Anyone an ApprovalPolicy lists as an approver
// is an approver too.
struct AdminRoles {
  std::vector<std::string> admin_groups;
  std::vector<std::string> auditor_groups;
  std::vector<std::string> approver_groups;
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `dev_issuer` may be null (the dev issuer is off); `desk` may be null (no approvals).
  // `on_policy_change` runs after every change that was stored (e.g. to fetch new JWKS URLs).
  AdminServiceImpl(Store* store, PolicyManager* policy, AgentHub* hub, Worker* worker,
                   std::string admin_token, const DevIssuer* dev_issuer,
                   std::function<void()> on_policy_change = nullptr, AdminRoles roles = {},
                   ApprovalDesk* desk = nullptr)
      : store_(store),
        policy_(policy),
        hub_(hub),
        worker_(worker),
        admin_token_(std::move(admin_token)),
        dev_issuer_(dev_issuer),
        on_policy_change_(std::move(on_policy_change)),
        roles_(std::move(roles)),
        desk_(desk) {}

  // Long reads (`audit verify`, the evidence export) go to `reader` (Store::OpenReader) on
  // `reader_worker`, so that the store worker goes on storing agents' events meanwhile. Without
  // one they run on the store worker. Callers are still authenticated, and the outcome audited, on
  // the store worker.
  void SetReader(Store* reader, Worker* reader_worker) {
    reader_ = reader;
    reader_worker_ = reader_worker;
  }

  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* ctx, const v1::ApplyRequest* req,
                                  v1::ApplyResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::Resource* resp) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const v1::ListRequest* req,
                                 v1::ListResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* EnrollAgent(grpc::CallbackServerContext* ctx,
                                        const v1::EnrollAgentRequest* req,
                                        v1::EnrollAgentResponse* resp) override;
  grpc::ServerUnaryReactor* ListAgents(grpc::CallbackServerContext* ctx,
                                       const v1::ListAgentsRequest* req,
                                       v1::ListAgentsResponse* resp) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest* req,
                                         v1::ListSessionsResponse* resp) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* req,
                                       v1::SessionDetail* resp) override;
  grpc::ServerUnaryReactor* MintDevToken(grpc::CallbackServerContext* ctx,
                                         const v1::MintDevTokenRequest* req,
                                         v1::MintDevTokenResponse* resp) override;
  grpc::ServerUnaryReactor* ListApprovals(grpc::CallbackServerContext* ctx,
                                          const v1::ListApprovalsRequest* req,
                                          v1::ListApprovalsResponse* resp) override;
  grpc::ServerUnaryReactor* GetApproval(grpc::CallbackServerContext* ctx,
                                        const v1::GetApprovalRequest* req,
                                        v1::Approval* resp) override;
  grpc::ServerUnaryReactor* DecideApproval(grpc::CallbackServerContext* ctx,
                                           const v1::DecideApprovalRequest* req,
                                           v1::Approval* resp) override;
  grpc::ServerUnaryReactor* VerifyAudit(grpc::CallbackServerContext* ctx,
                                        const v1::VerifyAuditRequest* req,
                                        v1::VerifyAuditResponse* resp) override;
  grpc::ServerUnaryReactor* HoldSession(grpc::CallbackServerContext* ctx,
                                        const v1::HoldSessionRequest* req,
                                        v1::SessionSummary* resp) override;
  grpc::ServerUnaryReactor* PurgeExpired(grpc::CallbackServerContext* ctx,
                                         const v1::PurgeExpiredRequest* req,
                                         v1::PurgeExpiredResponse* resp) override;
  grpc::ServerUnaryReactor* ExportEvidence(grpc::CallbackServerContext* ctx,
                                           const v1::ExportEvidenceRequest* req,
                                           v1::ExportEvidenceResponse* resp) override;
  grpc::ServerUnaryReactor* GetRollout(grpc::CallbackServerContext* ctx,
                                       const v1::GetRolloutRequest* req,
                                       v1::RolloutStatus* resp) override;
  grpc::ServerUnaryReactor* PromoteRollout(grpc::CallbackServerContext* ctx,
                                           const v1::PromoteRolloutRequest* req,
                                           v1::RolloutStatus* resp) override;
  grpc::ServerUnaryReactor* AbortRollout(grpc::CallbackServerContext* ctx,
                                         const v1::AbortRolloutRequest* req,
                                         v1::RolloutStatus* resp) override;

  // What a call needs: admin (changes), read (admin or auditor), approvals (admin, auditor or
  // approver), decide (an approver's own OIDC identity).
  enum class Need { kAdmin, kRead, kApprovals, kDecide };

  // The authenticated caller.
  struct Caller {
    std::string actor;  // for audit records: "bootstrap-admin" or "subject (issuer)"
    bool bootstrap = false;
    bool admin = false, auditor = false, approver = false;
    jwt::Identity identity;
  };

 private:
  // Authenticates and authorizes, then runs `work` on the store worker, audits the outcome and
  // finishes. `work` returns the status and fills `target` (e.g. "Connection/orders") for the
  // audit event.
  grpc::ServerUnaryReactor* Run(
      grpc::CallbackServerContext* ctx, const char* action, Need need,
      std::function<absl::Status(const Caller& caller, std::string* target)> work);
  // Like Run, but `work` runs on the reader worker inside one read snapshot of `store` (the
  // reader, or the store when there is none).
  grpc::ServerUnaryReactor* RunRead(
      grpc::CallbackServerContext* ctx, const char* action, Need need,
      std::function<absl::Status(Store& store, std::string* target)> work);
  // On the store worker: who `token` is (Unauthenticated when nobody).
  absl::StatusOr<Caller> Authenticate(const std::string& token);
  // On the store worker: the caller, authenticated and allowed, or the refusal (audited and
  // finished: nullopt).
  std::optional<Caller> Admit(grpc::ServerUnaryReactor* reactor, const std::string& action,
                              const std::string& peer, Need need, const std::string& token);
  // On the store worker: rollout `id` (0: the latest) as GetRollout answers it.
  absl::StatusOr<v1::RolloutStatus> RolloutStatusOf(int64_t id);
  // On the store worker: the rollout in progress (FailedPrecondition naming the latest when none).
  absl::StatusOr<RolloutRecord> RolloutInProgress();
  // On the store worker: audits the outcome of a call and finishes it.
  void Conclude(grpc::ServerUnaryReactor* reactor, const std::string& action,
                const std::string& peer, const std::string& actor, const std::string& target,
                absl::Status st);

  Store* store_;
  PolicyManager* policy_;
  AgentHub* hub_;
  Worker* worker_;
  std::string admin_token_;
  const DevIssuer* dev_issuer_;
  std::function<void()> on_policy_change_;
  AdminRoles roles_;
  ApprovalDesk* desk_;
  Store* reader_ = nullptr;
  Worker* reader_worker_ = nullptr;
  // The verifier of OIDC callers, built from the policy's Issuers (store worker only).
  std::shared_ptr<const jwt::Verifier> verifier_;
  std::shared_ptr<const PolicyState> verifier_state_;  // the state it was built from
};

}  // namespace sluice::controlplane
