#include "controlplane/service/admin_service.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/crypto.h"
#include "common/grpc_status.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/policy/resource.h"
#include "common/policy/validation.h"
#include "common/status_macros.h"

namespace sluice::controlplane {
namespace {

constexpr int64_t kDefaultEnrollTtlSeconds = 24 * 3600;
constexpr int64_t kMaxEnrollTtlSeconds = 30 * 24 * 3600;

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::Run(
    grpc::CallbackServerContext* ctx, const char* action,
    std::function<absl::Status(std::string* target)> work) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string peer = ctx->peer();
  bool authenticated = false;
  auto it = ctx->client_metadata().find("authorization");
  if (it != ctx->client_metadata().end()) {
    std::string value(it->second.data(), it->second.size());
    constexpr absl::string_view kBearer = "Bearer ";
    authenticated = absl::StartsWith(value, kBearer) &&
                    ConstantTimeEquals(value.substr(kBearer.size()), admin_token_);
  }
  std::string act(action);
  if (!authenticated) {
    worker_->Post([this, act, peer] {
      store_->AppendAudit({0, NowUnixMs(), "anonymous", act, "", "UNAUTHENTICATED",
                           "missing or wrong admin token (from " + peer + ")"})
          .IgnoreError();
    });
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                 "missing or wrong admin token (set SLUICE_TOKEN or --token)"));
    return reactor;
  }
  worker_->Post([this, reactor, act, peer, work = std::move(work)] {
    std::string target;
    absl::Status st = work(&target);
    // The error text may name documents and fields; it never holds a secret value.
    std::string detail = st.ok() ? "from " + peer : absl::StrCat(st.message().substr(0, 2000), " (from ", peer, ")");
    store_->AppendAudit({0, NowUnixMs(), "bootstrap-admin", act, target,
                         st.ok() ? "ok" : absl::StatusCodeToString(st.code()), detail})
        .IgnoreError();
    reactor->Finish(ToGrpcStatus(st));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::Apply(grpc::CallbackServerContext* ctx,
                                                  const v1::ApplyRequest* req,
                                                  v1::ApplyResponse* resp) {
  return Run(ctx, "AdminService.Apply", [this, req, resp](std::string* target) {
    *target = absl::StrCat(req->resources_size(), " document(s)",
                           req->source().empty() ? "" : " from " + req->source().substr(0, 256));
    uint64_t before = policy_->state()->version;
    RETURN_IF_ERROR(policy_->Apply(*req, "bootstrap-admin", resp));
    if (policy_->state()->version != before) {
      int pushed = hub_->PushState(policy_->state());
      LogInfo("policy version ", resp->version(), ": pushed to ", pushed, " agent(s)");
      if (on_policy_change_) on_policy_change_();
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                const v1::GetRequest* req, v1::Resource* resp) {
  return Run(ctx, "AdminService.Get", [this, req, resp](std::string* target) {
    *target = absl::StrCat(req->kind().substr(0, 64), "/", req->name().substr(0, 64));
    ASSIGN_OR_RETURN(*resp, policy_->Get(req->kind(), req->name()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::List(grpc::CallbackServerContext* ctx,
                                                 const v1::ListRequest* req, v1::ListResponse* resp) {
  return Run(ctx, "AdminService.List", [this, req, resp](std::string* target) {
    *target = req->kind().substr(0, 64);
    ASSIGN_OR_RETURN(*resp, policy_->List(req->kind()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Delete(grpc::CallbackServerContext* ctx,
                                                   const v1::DeleteRequest* req,
                                                   v1::DeleteResponse* resp) {
  return Run(ctx, "AdminService.Delete", [this, req, resp](std::string* target) {
    *target = absl::StrCat(req->kind().substr(0, 64), "/", req->name().substr(0, 64));
    ASSIGN_OR_RETURN(uint64_t version, policy_->Delete(req->kind(), req->name()));
    resp->set_version(version);
    int pushed = hub_->PushState(policy_->state());
    LogInfo("policy version ", version, ": pushed to ", pushed, " agent(s)");
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::EnrollAgent(grpc::CallbackServerContext* ctx,
                                                        const v1::EnrollAgentRequest* req,
                                                        v1::EnrollAgentResponse* resp) {
  return Run(ctx, "AdminService.EnrollAgent", [this, req, resp](std::string* target) {
    EnrollmentRecord e;
    e.agent_id = req->name().empty() ? "agent-" + RandomHex(4) : req->name();
    *target = "Agent/" + e.agent_id.substr(0, 64);
    // Agent ids follow the resource name rules.
    std::string problem = policy::NameProblem(e.agent_id);
    if (!problem.empty()) return absl::InvalidArgumentError("agent name: " + problem);
    if (req->labels().empty()) {
      return absl::InvalidArgumentError("labels: required; they decide which connections the agent serves");
    }
    e.labels.insert(req->labels().begin(), req->labels().end());
    if (req->tls_names_size() > 32) return absl::InvalidArgumentError("tls_names: at most 32");
    for (const std::string& name : req->tls_names()) {
      absl::Status ok = CheckTlsName(name);
      if (!ok.ok()) return absl::InvalidArgumentError(absl::StrCat("tls_names: ", ok.message()));
      e.tls_names.push_back(name);
    }
    int64_t ttl = req->ttl_seconds() == 0 ? kDefaultEnrollTtlSeconds : req->ttl_seconds();
    if (ttl > kMaxEnrollTtlSeconds) return absl::InvalidArgumentError("ttl_seconds: at most 30 days");
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
  return Run(ctx, "AdminService.ListAgents", [this, resp](std::string* /*target*/) {
    ASSIGN_OR_RETURN(auto agents, store_->ListAgents());
    auto live = hub_->LiveStatus();
    resp->set_policy_version(policy_->state()->version);
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
      }
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListSessions(grpc::CallbackServerContext* ctx,
                                                         const v1::ListSessionsRequest* req,
                                                         v1::ListSessionsResponse* resp) {
  return Run(ctx, "AdminService.ListSessions", [this, req, resp](std::string* target) {
    *target = absl::StrCat("subject=", req->subject().substr(0, 64), " connection=",
                           req->connection().substr(0, 64));
    ASSIGN_OR_RETURN(auto sessions, store_->ListSessions(*req));
    for (auto& s : sessions) *resp->add_sessions() = std::move(s);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetSession(grpc::CallbackServerContext* ctx,
                                                       const v1::GetSessionRequest* req,
                                                       v1::SessionDetail* resp) {
  return Run(ctx, "AdminService.GetSession", [this, req, resp](std::string* target) {
    *target = "Session/" + req->session_id().substr(0, 64);
    ASSIGN_OR_RETURN(*resp, store_->GetSession(req->session_id()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::MintDevToken(grpc::CallbackServerContext* ctx,
                                                         const v1::MintDevTokenRequest* req,
                                                         v1::MintDevTokenResponse* resp) {
  return Run(ctx, "AdminService.MintDevToken", [this, req, resp](std::string* target) {
    // The audit record names the subject and groups, never the token.
    *target = absl::StrCat("subject=", req->subject().substr(0, 64), " groups=",
                           absl::StrJoin(req->groups(), ",").substr(0, 128));
    if (dev_issuer_ == nullptr) {
      return absl::FailedPreconditionError(
          "the dev issuer is off: start sluice-controlplane with --dev-issuer (for local use only)");
    }
    ASSIGN_OR_RETURN(*resp, dev_issuer_->Mint(*req, absl::Now()));
    return absl::OkStatus();
  });
}

}  // namespace sluice::controlplane
