// bench/policy_propagation: how long a policy change takes to reach every agent.
//
// Starts a real sluice-controlplane (its own temp data dir, loopback), enrolls N agents, and
// connects N agent streams from this process (gRPC callback clients, one TLS connection each, as
// real agents would have). Then, for each round, applies a change that concerns every agent and
// measures, per agent, the time from the Apply call to the moment the new snapshot arrived and
// its ACK was sent, and the time until the control plane had recorded every ACK (as
// `sluicectl agents list` shows it). Prints p50/p99 and the control plane's peak RSS.
//
// Usage: policy_propagation_bench --controlplane PATH [--agents 100,1000] [--rounds 5]
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/policy/yaml_codec.h"
#include "sluice/v1/admin.grpc.pb.h"
#include "sluice/v1/agent.grpc.pb.h"

namespace sluice::bench {
namespace {

// One simulated agent: Hello, then ACK every snapshot; records when each version arrived.
class FakeAgent : public grpc::ClientBidiReactor<v1::AgentMessage, v1::ControlMessage> {
 public:
  FakeAgent(v1::AgentService::Stub* stub, const std::string& id, const std::string& secret)
      : id_(id) {
    ctx_.AddMetadata("authorization", absl::StrCat("Agent ", id, ":", secret));
    stub->async()->Connect(&ctx_, this);
    out_.mutable_hello()->set_agent_id(id);
    out_.mutable_hello()->add_capabilities("postgres");
    writing_ = true;
    StartWrite(&out_);
    StartRead(&in_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (in_.has_snapshot()) {
      uint64_t v = in_.snapshot().snapshot().version();
      v1::AgentMessage ack;
      ack.mutable_ack()->set_version(v);
      ack.mutable_ack()->set_nonce(in_.snapshot().nonce());
      {
        absl::MutexLock lock(&mu_);
        received_[v] = absl::Now();
        pending_.push_back(std::move(ack));
        MaybeWriteLocked();
      }
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (ok) MaybeWriteLocked();
  }

  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
    status_ = s;
  }

  std::optional<absl::Time> Received(uint64_t version) {
    absl::MutexLock lock(&mu_);
    auto it = received_.find(version);
    if (it == received_.end()) return std::nullopt;
    return it->second;
  }
  void Cancel() { ctx_.TryCancel(); }
  bool Done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || pending_.empty()) return;
    out_ = std::move(pending_.front());
    pending_.erase(pending_.begin());
    writing_ = true;
    StartWrite(&out_);
  }

  std::string id_;
  grpc::ClientContext ctx_;
  v1::ControlMessage in_;
  absl::Mutex mu_;
  v1::AgentMessage out_;
  std::vector<v1::AgentMessage> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Time> received_ ABSL_GUARDED_BY(mu_);
};

long PeakRssKb(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      long kb = 0;
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb;
    }
  }
  return -1;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

std::string PolicyYaml(int port) {
  return absl::StrCat(
      "kind: Connection\nname: bench-db\nprotocol: postgres\nupstream: {host: 127.0.0.1, port: ",
      port, "}\ncredentials: {username: app, password: bench}\nagents: {bench: \"1\"}\n");
}

template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

int RunOne(const std::string& cp_bin, int n, int rounds) {
  std::string dir = absl::StrCat(std::filesystem::temp_directory_path().string(), "/sluice-bench-",
                                 getpid(), "-", n);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  pid_t pid = fork();
  if (pid == 0) {
    std::string log = dir + "/controlplane.log";
    FILE* f = std::freopen(log.c_str(), "w", stderr);
    (void)f;
    execl(cp_bin.c_str(), cp_bin.c_str(), "--data-dir", (dir + "/cp").c_str(), "--grpc-listen",
          "127.0.0.1:0", "--http-listen", "127.0.0.1:0", nullptr);
    _exit(127);
  }
  auto cleanup = [&] {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    std::filesystem::remove_all(dir);
  };
  nlohmann::json ep;
  if (!WaitFor(
          [&] {
            auto text = ReadFile(dir + "/cp/endpoints.json");
            if (!text.ok()) return false;
            ep = nlohmann::json::parse(*text, nullptr, false);
            return ep.is_object();
          },
          absl::Seconds(30))) {
    std::fprintf(stderr, "control plane did not start; see %s/controlplane.log\n", dir.c_str());
    cleanup();
    return 1;
  }
  std::string address = ep["grpc"].get<std::string>();
  std::string ca = *ReadFile(ep["ca_file"].get<std::string>());
  std::string token(
      absl::StripAsciiWhitespace(*ReadFile(ep["admin_token_file"].get<std::string>())));
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca;
  auto creds = grpc::SslCredentials(ssl);
  auto admin_channel = grpc::CreateChannel(address, creds);
  auto admin = v1::AdminService::NewStub(admin_channel);
  auto agent_stub_shared = v1::AgentService::NewStub(admin_channel);
  auto admin_ctx = [&] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + token);
    return ctx;
  };
  auto apply = [&](int port, uint64_t* version) {
    v1::ApplyRequest req;
    auto parsed = policy::ParseYamlDocuments(PolicyYaml(port));
    *req.add_resources() = parsed.resources[0];
    v1::ApplyResponse resp;
    grpc::Status st = admin->Apply(admin_ctx().get(), req, &resp);
    *version = resp.version();
    return st;
  };
  uint64_t version = 0;
  if (!apply(5000, &version).ok()) {
    std::fprintf(stderr, "apply failed\n");
    cleanup();
    return 1;
  }

  // Enroll N agents.
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < n; ++i) {
    v1::EnrollAgentRequest er;
    er.set_name(absl::StrCat("bench-", i));
    (*er.mutable_labels())["bench"] = "1";
    v1::EnrollAgentResponse eresp;
    grpc::Status st = admin->EnrollAgent(admin_ctx().get(), er, &eresp);
    grpc::ClientContext ctx;
    v1::EnrollRequest req;
    req.set_token(eresp.token());
    v1::EnrollResponse resp;
    if (st.ok()) st = agent_stub_shared->Enroll(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "enroll failed: %s\n", st.error_message().c_str());
      cleanup();
      return 1;
    }
    ids.emplace_back(resp.agent_id(), resp.agent_secret());
  }

  // One channel (one TLS connection) per agent, as in a real fleet.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::AgentService::Stub>> stubs;
  std::vector<std::unique_ptr<FakeAgent>> agents;
  absl::Time connect_start = absl::Now();
  for (int i = 0; i < n; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("sluice.bench.agent", i);  // distinct args: no subchannel sharing
    channels.push_back(grpc::CreateCustomChannel(address, creds, args));
    stubs.push_back(v1::AgentService::NewStub(channels.back()));
    agents.push_back(std::make_unique<FakeAgent>(stubs.back().get(), ids[i].first, ids[i].second));
  }
  auto all_received = [&](uint64_t v) {
    for (auto& a : agents) {
      if (!a->Received(v)) return false;
    }
    return true;
  };
  if (!WaitFor([&] { return all_received(version); }, absl::Seconds(120))) {
    std::fprintf(stderr, "not every agent connected within 120 s\n");
    for (auto& a : agents) a->Cancel();
    cleanup();
    return 1;
  }
  double connect_s = absl::ToDoubleSeconds(absl::Now() - connect_start);

  std::vector<double> latencies_ms, all_acked_ms;
  for (int r = 0; r < rounds; ++r) {
    absl::Time t0 = absl::Now();
    if (!apply(5001 + r, &version).ok()) {
      std::fprintf(stderr, "apply failed\n");
      break;
    }
    if (!WaitFor([&] { return all_received(version); }, absl::Seconds(60))) {
      std::fprintf(stderr, "round %d: not every agent received version %llu\n", r,
                   static_cast<unsigned long long>(version));
      break;
    }
    for (auto& a : agents)
      latencies_ms.push_back(absl::ToDoubleMilliseconds(*a->Received(version) - t0));
    // Until the control plane has recorded every ACK (what `agents list` shows).
    WaitFor(
        [&] {
          grpc::ClientContext ctx;
          ctx.AddMetadata("authorization", "Bearer " + token);
          v1::ListAgentsResponse resp;
          if (!admin->ListAgents(&ctx, v1::ListAgentsRequest(), &resp).ok()) return false;
          for (const auto& a : resp.agents()) {
            if (a.applied_version() != version) return false;
          }
          return true;
        },
        absl::Seconds(60));
    all_acked_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  long rss = PeakRssKb(pid);
  std::printf(
      "agents=%-5d connect_all=%.2fs  rounds=%zu  per-agent receive+ACK after apply: "
      "p50=%.1fms p99=%.1fms max=%.1fms  all ACKs recorded: p50=%.1fms max=%.1fms  "
      "controlplane peak RSS=%.1f MB\n",
      n, connect_s, all_acked_ms.size(), Percentile(latencies_ms, 0.5),
      Percentile(latencies_ms, 0.99), Percentile(latencies_ms, 1.0), Percentile(all_acked_ms, 0.5),
      Percentile(all_acked_ms, 1.0), static_cast<double>(rss) / 1024.0);
  std::fflush(stdout);
  for (auto& a : agents) a->Cancel();
  WaitFor(
      [&] {
        for (auto& a : agents) {
          if (!a->Done()) return false;
        }
        return true;
      },
      absl::Seconds(10));
  cleanup();
  return all_acked_ms.size() == static_cast<size_t>(rounds) ? 0 : 1;
}

}  // namespace
}  // namespace sluice::bench

int main(int argc, char** argv) {
  std::string cp_bin;
  std::string counts = "100,1000";
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--controlplane")
      cp_bin = argv[i + 1];
    else if (flag == "--agents")
      counts = argv[i + 1];
    else if (flag == "--rounds")
      rounds = std::atoi(argv[i + 1]);
  }
  if (cp_bin.empty() || rounds <= 0) {
    std::fprintf(stderr, "usage: %s --controlplane PATH [--agents 100,1000] [--rounds 5]\n",
                 argv[0]);
    return 2;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  int rc = 0;
  for (absl::string_view c : absl::StrSplit(counts, ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(c, &n) || n <= 0) {
      std::fprintf(stderr, "--agents: '%s' is not a positive number\n", std::string(c).c_str());
      return 2;
    }
    rc |= sluice::bench::RunOne(cp_bin, n, rounds);
  }
  return rc;
}
