// Approval notifications to Webhooks: an HTTP POST of a JSON body (or a Slack-compatible one),
// signed with the Webhook's secret, retried with backoff, every attempt reported.
//
// Signature: `X-Sluice-Timestamp: <unix seconds>` and
// `X-Sluice-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. A receiver
// recomputes it over the raw body and refuses old timestamps (docs/approvals.md).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "sluice/v1/admin.pb.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::controlplane {

// The signature header value for `body` sent at `timestamp`.
std::string WebhookSignature(const std::string& secret, int64_t timestamp, const std::string& body);

// The body a Webhook receives for `approval` (links may be empty).
std::string WebhookBody(const v1::Webhook& webhook, const v1::Approval& approval,
                        const std::string& approve_link, const std::string& deny_link);

class WebhookSender {
 public:
  // `report` is called (on the sender's thread) after every attempt.
  using Report = std::function<void(uint64_t approval_id, v1::WebhookDelivery delivery)>;
  WebhookSender(Report report, int max_attempts = 5, int64_t first_backoff_ms = 1000);
  ~WebhookSender();

  void Send(uint64_t approval_id, v1::Webhook webhook, std::string body);
  void Stop();

 private:
  struct Job {
    uint64_t approval_id = 0;
    v1::Webhook webhook;
    std::string body;
    int attempt = 0;
    int64_t due_ms = 0;
  };
  void Loop();
  v1::WebhookDelivery Attempt(const Job& job);

  Report report_;
  int max_attempts_;
  int64_t first_backoff_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sluice::controlplane
