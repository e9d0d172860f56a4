// sluice.v1.AdminService: what operators and sluicectl call. Every call is authenticated
// (bootstrap admin token for now) and recorded as an audit event, allowed or not. The work runs
// on the store worker; reactions only post and return.
#pragma once

#include <functional>
#include <string>

#include "controlplane/service/agent_hub.h"
#include "controlplane/service/dev_issuer.h"
#include "controlplane/service/policy_manager.h"
#include "controlplane/service/worker.h"
#include "controlplane/store/store.h"
#include "sluice/v1/admin.grpc.pb.h"

namespace sluice::controlplane {

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `dev_issuer` may be null (the dev issuer is off).
  // `on_policy_change` runs after every change that was stored (e.g. to fetch new JWKS URLs).
  AdminServiceImpl(Store* store, PolicyManager* policy, AgentHub* hub, Worker* worker,
                   std::string admin_token, const DevIssuer* dev_issuer,
                   std::function<void()> on_policy_change = nullptr)
      : store_(store),
        policy_(policy),
        hub_(hub),
        worker_(worker),
        admin_token_(std::move(admin_token)),
        dev_issuer_(dev_issuer),
        on_policy_change_(std::move(on_policy_change)) {}

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

 private:
  // Authenticates, then runs `work` on the store worker, audits the outcome and finishes.
  // `work` returns the status and fills `target` (e.g. "Connection/orders") for the audit event.
  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* ctx, const char* action,
                                std::function<absl::Status(std::string* target)> work);

  Store* store_;
  PolicyManager* policy_;
  AgentHub* hub_;
  Worker* worker_;
  std::string admin_token_;
  const DevIssuer* dev_issuer_;
  std::function<void()> on_policy_change_;
};

}  // namespace sluice::controlplane
