#include "controlplane/approvals/webhooks.h"

#include <httplib.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/http_server.h"
#include "common/log.h"

namespace sluice::controlplane {
namespace {

constexpr size_t kMaxQueued = 10000;

nlohmann::json ApprovalJson(const v1::Approval& a) {
  nlohmann::json attribution = nlohmann::json::object();
  for (const auto& [k, v] : a.attribution()) attribution[k] = v;
  return {{"id", a.id()},
          {"connection", a.connection()},
          {"subject", a.subject()},
          {"issuer", a.issuer()},
          {"groups", std::vector<std::string>(a.groups().begin(), a.groups().end())},
          {"attribution", attribution},
          {"statement", a.statement()},
          {"fingerprint", a.fingerprint()},
          {"parameters", std::vector<std::string>(a.parameters().begin(), a.parameters().end())},
          {"guardrail", a.guardrail()},
          {"rule", a.rule()},
          {"target", a.target()},
          {"approval_policy", a.approval_policy()},
          {"min_approvals", a.min_approvals()},
          {"agent_id", a.agent_id()},
          {"session_id", a.session_id()},
          {"created_unix_ms", a.created_unix_ms()},
          {"expires_unix_ms", a.expires_unix_ms()}};
}

}  // namespace

std::string WebhookSignature(const std::string& secret, int64_t timestamp,
                             const std::string& body) {
  return "v1=" + HexEncode(HmacSha256(secret, absl::StrCat(timestamp, ".", body)));
}

std::string WebhookBody(const v1::Webhook& webhook, const v1::Approval& a,
                        const std::string& approve_link, const std::string& deny_link) {
  std::string decide = absl::StrCat("sluicectl approvals approve ", a.id(),
                                    "  |  sluicectl approvals deny ", a.id(), " --reason '...'");
  if (webhook.format() == v1::WEBHOOK_FORMAT_SLACK) {
    std::string text =
        absl::StrCat("*Sluice approval request ", a.id(), "*: `", a.subject(), "` on `",
                     a.connection(), "` (guardrail ", a.guardrail(), ": ", a.rule(), ")\n```",
                     a.statement().substr(0, 2000), "```\n", decide);
    if (!approve_link.empty())
      absl::StrAppend(&text, "\n<", approve_link, "|Approve>  <", deny_link, "|Deny>");
    return nlohmann::json{{"text", text}}.dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
  }
  nlohmann::json body = {
      {"type", "approval.requested"}, {"approval", ApprovalJson(a)}, {"decide_with", decide}};
  if (!approve_link.empty()) body["links"] = {{"approve", approve_link}, {"deny", deny_link}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

WebhookSender::WebhookSender(Report report, int max_attempts, int64_t first_backoff_ms)
    : report_(std::move(report)), max_attempts_(max_attempts), first_backoff_ms_(first_backoff_ms) {
  thread_ = std::thread([this] { Loop(); });
}

WebhookSender::~WebhookSender() { Stop(); }

void WebhookSender::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WebhookSender::Send(uint64_t approval_id, v1::Webhook webhook, std::string body) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (jobs_.size() >= kMaxQueued) {
      LogError("webhook queue full: approval ", approval_id, " not sent to ", webhook.name());
      return;
    }
    jobs_.push_back(Job{approval_id, std::move(webhook), std::move(body), 0, NowUnixMs()});
  }
  cv_.notify_all();
}

void WebhookSender::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (jobs_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto next = std::min_element(jobs_.begin(), jobs_.end(),
                                 [](const Job& a, const Job& b) { return a.due_ms < b.due_ms; });
    int64_t wait = next->due_ms - NowUnixMs();
    if (wait > 0) {
      cv_.wait_for(lock, std::chrono::milliseconds(wait));
      continue;
    }
    Job job = std::move(*next);
    jobs_.erase(next);
    lock.unlock();
    ++job.attempt;
    v1::WebhookDelivery d = Attempt(job);
    bool delivered = d.http_status() >= 200 && d.http_status() < 300;
    if (!delivered) {
      LogWarning("webhook ", job.webhook.name(), " for approval ", job.approval_id, ", attempt ",
                 job.attempt, ": ",
                 d.error().empty() ? absl::StrCat("HTTP ", d.http_status()) : d.error());
    }
    report_(job.approval_id, d);
    lock.lock();
    if (!delivered && job.attempt < max_attempts_ && !stopping_) {
      job.due_ms = NowUnixMs() + first_backoff_ms_ * (int64_t{1} << (job.attempt - 1));
      jobs_.push_back(std::move(job));
    }
  }
}

v1::WebhookDelivery WebhookSender::Attempt(const Job& job) {
  v1::WebhookDelivery d;
  d.set_webhook(job.webhook.name());
  d.set_attempt(static_cast<uint32_t>(job.attempt));
  d.set_time_unix_ms(NowUnixMs());
  const std::string& url = job.webhook.url();
  std::string origin, path;
  if (absl::Status st = SplitUrl(url, &origin, &path); !st.ok()) {
    d.set_error(absl::StrCat(url.substr(0, 200), ": ", st.message()));
    return d;
  }
  httplib::Client client(origin);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(10, 0);
  client.set_write_timeout(10, 0);
  if (absl::StartsWith(url, "https://")) client.enable_server_certificate_verification(true);
  int64_t ts = NowUnixMs() / 1000;
  httplib::Headers headers = {
      {"X-Sluice-Timestamp", absl::StrCat(ts)},
      {"X-Sluice-Signature", WebhookSignature(job.webhook.secret(), ts, job.body)},
      {"User-Agent", "sluice-controlplane"}};
  auto res = client.Post(path, headers, job.body, "application/json");
  if (!res) {
    d.set_error(httplib::to_string(res.error()));
    return d;
  }
  d.set_http_status(res->status);
  if (res->status < 200 || res->status >= 300) d.set_error(res->body.substr(0, 200));
  return d;
}

}  // namespace sluice::controlplane
