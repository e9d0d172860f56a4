// sluice.v1.AgentService on the gRPC callback API: enrollment, and one long-lived bidirectional
// stream per agent. Reactions never block: store writes are posted to the store worker.
#pragma once

#include <optional>
#include <string>

#include "common/tls.h"
#include "controlplane/approvals/desk.h"
#include "controlplane/service/agent_hub.h"
#include "controlplane/service/worker.h"
#include "controlplane/store/store.h"
#include "sluice/v1/agent.grpc.pb.h"

namespace sluice::controlplane {

class AgentServiceImpl final : public v1::AgentService::CallbackService {
 public:
  // `agent_ca`, when given, signs the certificate requests agents send at enrollment.
  // `desk` (may be null: approval requests are refused) takes agents' approval requests.
  AgentServiceImpl(Store* store, AgentHub* hub, Worker* worker,
                   std::optional<PemKeyPair> agent_ca = {}, ApprovalDesk* desk = nullptr)
      : store_(store), hub_(hub), worker_(worker), agent_ca_(std::move(agent_ca)), desk_(desk) {}

  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* context,
                                   const v1::EnrollRequest* request,
                                   v1::EnrollResponse* response) override;
  grpc::ServerBidiReactor<v1::AgentMessage, v1::ControlMessage>* Connect(
      grpc::CallbackServerContext* context) override;

 private:
  Store* store_;
  AgentHub* hub_;
  Worker* worker_;
  std::optional<PemKeyPair> agent_ca_;
  ApprovalDesk* desk_;
};

}  // namespace sluice::controlplane
