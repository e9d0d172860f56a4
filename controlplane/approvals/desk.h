// The control plane's side of just-in-time approvals: requests from agents are stored, their
// ApprovalPolicy's Webhooks notified, approvers' votes counted, and the decision sent back to the
// agent that holds the statement. Everything but the link helpers runs on the store worker.
//
// Rules: only an approver the request's ApprovalPolicy lists may decide (or a signed callback
// link from one of its webhooks); the requester never approves their own request; one vote per
// approver; a deny decides at once, approvals decide when `min_approvals` different approvers
// have approved; nothing is decided after the request expires. Each vote is an audit record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/approvals/webhooks.h"
#include "controlplane/service/agent_hub.h"
#include "controlplane/snapshot/snapshot_builder.h"
#include "controlplane/store/store.h"
#include "sluice/v1/admin.pb.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::controlplane {

// Who decides.
struct Approver {
  std::string subject;
  std::string issuer;  // the Issuer resource name
  std::vector<std::string> groups;
  std::string link_webhook;  // set when deciding through a callback link of this webhook
  // How votes and audit records name the approver.
  std::string Display() const;
};

class ApprovalDesk {
 public:
  // `link_key` signs callback links; `public_url` is the control plane's HTTP base URL as
  // approvers reach it (empty: no links). `sender` may be null (no webhooks).
  ApprovalDesk(Store* store, AgentHub* hub, WebhookSender* sender, std::string link_key,
               std::string public_url);

  // An agent's request: stored, webhooks notified. The answer goes back to the agent.
  v1::ApprovalRegistered Register(const std::string& agent_id, const v1::ApprovalRequest& request,
                                  const PolicyState& state, int64_t now_ms);
  // A vote. Returns the approval as it stands after it.
  absl::StatusOr<v1::Approval> Decide(uint64_t id, const Approver& who, bool approve,
                                      const std::string& reason, const PolicyState& state,
                                      int64_t now_ms);
  // Pending requests past their expiry become `expired` (the agent is told; it gives up on its
  // own at the same time).
  void ExpireDue(int64_t now_ms);
  // The agent stopped waiting (its client cancelled, or the session ended): a pending request
  // becomes `withdrawn`.
  void Withdraw(const std::string& agent_id, const v1::ApprovalWithdrawn& withdrawn,
                int64_t now_ms);
  // A webhook delivery attempt, added to the request's record.
  void RecordDelivery(uint64_t id, const v1::WebhookDelivery& delivery);

  // The base URL of callback links (any thread).
  void SetPublicUrl(std::string url);
  // Callback links: `<public_url>/approvals/<id>/<approve|deny>?webhook=W&exp=T&sig=S`.
  std::string Link(uint64_t id, bool approve, const std::string& webhook, int64_t expires_ms) const;
  absl::Status CheckLink(uint64_t id, bool approve, const std::string& webhook, int64_t expires_ms,
                         const std::string& signature, int64_t now_ms) const;

 private:
  std::string LinkSignature(uint64_t id, bool approve, const std::string& webhook,
                            int64_t expires_ms) const;
  // Stores the decided approval, tells the agent, and audits.
  absl::Status Finish(ApprovalRecord& record, const std::string& actor);

  Store* store_;
  AgentHub* hub_;
  WebhookSender* sender_;
  std::string link_key_;
  mutable absl::Mutex url_mu_;
  std::string public_url_ ABSL_GUARDED_BY(url_mu_);
};

// "pending", "approved", "denied", "expired".
inline constexpr char kPending[] = "pending";

}  // namespace sluice::controlplane
