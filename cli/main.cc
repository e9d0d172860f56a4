// sluicectl: the Sluice admin CLI. Exit codes: 0 success, 1 failure (bad input, refused by the
// control plane, unreachable), 2 usage error.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/config.h"
#include "cli/evidence_format.h"
#include "cli/replay.h"
#include "common/audit/events.h"
#include "common/files.h"
#include "common/policy/resource.h"
#include "common/policy/yaml_codec.h"

namespace sluice::cli {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

int FailRpc(const grpc::Status& st) {
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return Fail(absl::StrCat("control plane unreachable: ", st.error_message()));
  }
  return Fail(st.error_message());
}

std::string Ago(int64_t unix_ms) {
  if (unix_ms == 0) return "never";
  absl::Duration d = absl::Now() - absl::FromUnixMillis(unix_ms);
  if (d < absl::Seconds(2)) return "now";
  if (d < absl::Minutes(2)) return absl::StrCat(absl::ToInt64Seconds(d), "s ago");
  if (d < absl::Hours(2)) return absl::StrCat(absl::ToInt64Minutes(d), "m ago");
  return absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

// Prints rows as aligned columns.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string Labels(const google::protobuf::Map<std::string, std::string>& m) {
  std::vector<std::string> parts;
  std::map<std::string, std::string> sorted(m.begin(), m.end());
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, ",");
}

// "k=v,k=v" into `out`; false (with the message printed) when a part is not k=v.
bool ParseLabelList(const std::string& flag, const std::string& text,
                    google::protobuf::Map<std::string, std::string>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    part = absl::StripAsciiWhitespace(part);
    size_t eq = part.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      std::fprintf(stderr, "error: %s: '%s' is not k=v\n", flag.c_str(), std::string(part).c_str());
      return false;
    }
    (*out)[std::string(part.substr(0, eq))] = std::string(part.substr(eq + 1));
  }
  return true;
}

int Apply(AdminClient& client, const std::string& file, const std::string& canary) {
  v1::ApplyRequest req;
  if (!canary.empty()) {
    if (!ParseLabelList("--canary", canary, req.mutable_canary())) return 2;
    if (req.canary().empty()) {
      std::fprintf(stderr, "error: --canary: give the canary agents' labels, k=v[,k=v]\n");
      return 2;
    }
  }
  absl::StatusOr<std::string> text;
  if (file == "-") {
    std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    text = in;
  } else {
    text = ReadFile(file, policy::kMaxYamlBytes);
  }
  if (!text.ok()) return Fail(std::string(text.status().message()));
  policy::ParsedDocuments parsed = policy::ParseYamlDocuments(*text);
  if (!parsed.errors.empty()) {
    for (const auto& e : parsed.errors)
      std::fprintf(stderr, "error: %s\n", e.ToString(file).c_str());
    std::fprintf(stderr, "nothing was applied\n");
    return 1;
  }
  if (parsed.resources.empty()) return Fail(absl::StrCat(file, ": no documents"));
  req.set_source(file);
  for (auto& r : parsed.resources) *req.add_resources() = std::move(r);
  for (int p : parsed.positions) req.add_positions(p);
  v1::ApplyResponse resp;
  grpc::Status st = client.stub()->Apply(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  std::printf(
      "applied %d document(s) from %s: %d created, %d updated, %d unchanged; policy version %llu\n",
      req.resources_size(), file.c_str(), resp.created(), resp.updated(), resp.unchanged(),
      static_cast<unsigned long long>(resp.version()));
  if (resp.rollout_id() != 0) {
    std::printf(
        "rollout %llu started: version %llu goes only to the %u canary agent(s) with %s; the "
        "others "
        "keep version %llu until `sluicectl rollout promote` (see `sluicectl rollout status`)\n",
        static_cast<unsigned long long>(resp.rollout_id()),
        static_cast<unsigned long long>(resp.version()), resp.canary_agents(),
        Labels(req.canary()).c_str(), static_cast<unsigned long long>(resp.version() - 1));
  } else if (!canary.empty()) {
    std::printf("nothing changed: no rollout started\n");
  }
  return 0;
}

int Get(AdminClient& client, const std::string& kind, const std::string& name,
        const std::string& output) {
  if (output != "table" && output != "yaml" && output != "json") {
    std::fprintf(stderr, "error: -o must be table, yaml or json\n");
    return 2;
  }
  std::vector<v1::Resource> resources;
  if (!name.empty()) {
    v1::GetRequest req;
    req.set_kind(kind);
    req.set_name(name);
    v1::Resource r;
    grpc::Status st = client.stub()->Get(client.Context().get(), req, &r);
    if (!st.ok()) return FailRpc(st);
    resources.push_back(std::move(r));
  } else {
    v1::ListRequest req;
    req.set_kind(kind == "all" ? "" : kind);
    v1::ListResponse resp;
    grpc::Status st = client.stub()->List(client.Context().get(), req, &resp);
    if (!st.ok()) return FailRpc(st);
    resources.assign(resp.resources().begin(), resp.resources().end());
  }
  if (output == "yaml") {
    for (size_t i = 0; i < resources.size(); ++i) {
      if (i > 0) std::printf("---\n");
      std::printf("%s", policy::ResourceToYaml(resources[i]).c_str());
    }
  } else if (output == "json") {
    std::vector<std::string> items;
    for (const auto& r : resources) items.push_back(policy::ResourceToJson(r));
    if (!name.empty()) {
      std::printf("%s\n", items[0].c_str());
    } else {
      std::printf("[%s]\n", absl::StrJoin(items, ",\n").c_str());
    }
  } else {
    std::vector<std::vector<std::string>> rows = {{"KIND", "NAME", "VERSION", "UPDATED", "BY"}};
    for (const auto& r : resources) {
      rows.push_back({policy::KindOf(r), policy::NameOf(r), absl::StrCat(r.meta().version()),
                      Ago(r.meta().updated_unix_ms()), r.meta().updated_by()});
    }
    if (resources.empty()) {
      std::printf("no resources\n");
    } else {
      PrintTable(rows);
    }
  }
  return 0;
}

int Delete(AdminClient& client, const std::string& kind, const std::string& name) {
  v1::DeleteRequest req;
  req.set_kind(kind);
  req.set_name(name);
  v1::DeleteResponse resp;
  grpc::Status st = client.stub()->Delete(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  std::printf("deleted %s %s; policy version %llu\n", kind.c_str(), name.c_str(),
              static_cast<unsigned long long>(resp.version()));
  return 0;
}

int Enroll(AdminClient& client, const ClientConfig& config, const std::string& labels,
           const std::string& name, uint32_t ttl, const std::string& tls_names) {
  v1::EnrollAgentRequest req;
  for (absl::string_view part : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
    size_t eq = part.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      std::fprintf(stderr, "error: --labels: '%s' is not k=v\n", std::string(part).c_str());
      return 2;
    }
    (*req.mutable_labels())[std::string(part.substr(0, eq))] = std::string(part.substr(eq + 1));
  }
  req.set_name(name);
  req.set_ttl_seconds(ttl);
  for (absl::string_view n : absl::StrSplit(tls_names, ',', absl::SkipEmpty())) {
    req.add_tls_names(std::string(absl::StripAsciiWhitespace(n)));
  }
  v1::EnrollAgentResponse resp;
  grpc::Status st = client.stub()->EnrollAgent(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  std::string names_flag = tls_names.empty() ? "" : " --tls-names " + tls_names;
  std::printf(
      "agent:   %s\ntoken:   %s\nexpires: %s\n\nstart the agent with:\n"
      "  sluice-agent --control-plane %s --ca-file %s --enroll-token %s --labels %s%s\n",
      resp.agent_id().c_str(), resp.token().c_str(),
      absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::FromUnixMillis(resp.expires_unix_ms()),
                       absl::UTCTimeZone())
          .c_str(),
      config.server.c_str(), config.ca_file.c_str(), resp.token().c_str(), labels.c_str(),
      names_flag.c_str());
  return 0;
}

// A response as JSON with the proto field names; `all_fields` prints zero values too.
std::string PrintJson(const google::protobuf::Message& m, bool all_fields = false) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = all_fields;
  opts.add_whitespace = true;
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(m, &text, opts);
  return text;
}

int ListAgents(AdminClient& client, const std::string& output) {
  v1::ListAgentsResponse resp;
  grpc::Status st =
      client.stub()->ListAgents(client.Context().get(), v1::ListAgentsRequest(), &resp);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(resp, /*all_fields=*/true).c_str());
    return 0;
  }
  std::printf("policy version %llu\n", static_cast<unsigned long long>(resp.policy_version()));
  if (!resp.store_error().empty()) {
    std::printf(
        "control plane: REFUSING WRITES: %s (since %s); agents keep their audit events until it "
        "can "
        "store them\n",
        resp.store_error().c_str(), Ago(resp.store_error_since_unix_ms()).c_str());
  }
  if (resp.agents().empty()) {
    std::printf("no agents enrolled (sluicectl agents enroll --labels k=v)\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"AGENT", "CONNECTED", "LAST SEEN", "APPLIED", "SENT", "LABELS", "LAST NACK", "AUDIT"}};
  for (const auto& a : resp.agents()) {
    std::string nack = a.last_nack_error().empty()
                           ? "-"
                           : absl::StrCat("v", a.last_nack_version(), ": ", a.last_nack_error());
    // Whether the agent can record audit events (and so accepts new sessions), as it last said.
    std::string audit = a.audit_state().empty() ? "-" : a.audit_state();
    if (!a.audit_error().empty()) {
      audit = absl::StrCat("REFUSING: ", a.audit_error(), " (since ",
                           Ago(a.audit_error_since_unix_ms()), ")");
    }
    rows.push_back({a.agent_id(), a.connected() ? "yes" : "no", Ago(a.last_seen_unix_ms()),
                    a.applied_version() ? absl::StrCat(a.applied_version()) : "-",
                    a.desired_version() ? absl::StrCat(a.desired_version()) : "-",
                    Labels(a.labels()), nack, audit});
  }
  PrintTable(rows);
  return 0;
}

// "1h", "30m", "2d" (ago), "now" or an RFC 3339 time; 0 for empty.
absl::StatusOr<int64_t> ParseTimeArg(const std::string& text) {
  if (text.empty()) return 0;
  if (text == "now") return absl::ToUnixMillis(absl::Now());
  absl::Duration d;
  std::string dur = text;
  if (!dur.empty() && dur.back() == 'd') {
    int days = 0;
    if (absl::SimpleAtoi(dur.substr(0, dur.size() - 1), &days))
      return absl::ToUnixMillis(absl::Now() - absl::Hours(24 * days));
  }
  if (absl::ParseDuration(dur, &d)) return absl::ToUnixMillis(absl::Now() - d);
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return absl::ToUnixMillis(t);
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is neither a duration (1h, 30m, 2d), now, nor an RFC 3339 time"));
}

std::string Time(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

int ListSessions(AdminClient& client, const std::string& identity, const std::string& connection,
                 const std::string& since, const std::string& until, uint32_t limit,
                 const std::string& output, const v1::ListSessionsRequest& filters) {
  v1::ListSessionsRequest req = filters;
  req.set_subject(identity);
  req.set_connection(connection);
  auto s = ParseTimeArg(since);
  if (!s.ok()) return Fail(absl::StrCat("--since: ", s.status().message()));
  auto u = ParseTimeArg(until);
  if (!u.ok()) return Fail(absl::StrCat("--until: ", u.status().message()));
  req.set_since_unix_ms(*s);
  req.set_until_unix_ms(*u);
  req.set_limit(limit);
  v1::ListSessionsResponse resp;
  grpc::Status st = client.stub()->ListSessions(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(resp).c_str());
    return 0;
  }
  if (resp.sessions().empty()) {
    std::printf("no sessions\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"SESSION", "STARTED (UTC)", "IDENTITY",
                                                 "CONNECTION", "ACCESS", "OUTCOME", "STMTS",
                                                 "ERRORS", "CLIENT"}};
  for (const auto& x : resp.sessions()) {
    std::string who = x.subject().empty() ? "-" : x.subject();
    std::string outcome = x.outcome();
    if (x.outcome() == "refused") outcome += ": " + x.reason().substr(0, 80);
    rows.push_back({x.session_id(), Time(x.started_unix_ms()), who, x.connection(),
                    x.access().empty() ? "-" : x.access(), outcome, absl::StrCat(x.statements()),
                    absl::StrCat(x.errors()), x.client_addr()});
  }
  PrintTable(rows);
  return 0;
}

// Pages through the session's events with their recording slices; with `follow`, keeps asking
// for new ones until the session ends.
int ReplaySession(AdminClient& client, const std::string& id, bool follow) {
  cli::TranscriptPrinter printer(stdout);
  uint64_t after = 0;
  bool header = false;
  while (true) {
    v1::GetSessionRequest req;
    req.set_session_id(id);
    req.set_recording(true);
    req.set_after_sequence(after);
    req.set_max_events(500);
    v1::SessionDetail d;
    grpc::Status st = client.stub()->GetSession(client.Context().get(), req, &d);
    if (!st.ok()) return FailRpc(st);
    if (!header) {
      printer.Header(d.session());
      header = true;
    }
    for (const auto& e : d.events()) {
      printer.Event(e);
      after = e.sequence();
    }
    if (d.more()) continue;
    if (!follow || d.session().outcome() != "open") break;
    std::fflush(stdout);
    absl::SleepFor(absl::Milliseconds(500));
  }
  printer.Flush();
  return 0;
}

int ShowSession(AdminClient& client, const std::string& id, const std::string& output) {
  v1::GetSessionRequest req;
  req.set_session_id(id);
  v1::SessionDetail d;
  grpc::Status st = client.stub()->GetSession(client.Context().get(), req, &d);
  if (!st.ok()) return FailRpc(st);
  // A long session comes in pages.
  while (d.more() && d.events_size() > 0) {
    req.set_after_sequence(d.events(d.events_size() - 1).sequence());
    v1::SessionDetail page;
    st = client.stub()->GetSession(client.Context().get(), req, &page);
    if (!st.ok()) return FailRpc(st);
    for (auto& e : *page.mutable_events()) *d.add_events() = std::move(e);
    d.set_more(page.more());
  }
  if (output == "json") {
    std::printf("%s", PrintJson(d).c_str());
    return 0;
  }
  const auto& s = d.session();
  std::printf("session     %s (agent %s)\n", s.session_id().c_str(), s.agent_id().c_str());
  std::printf("identity    %s (issuer %s) groups [%s]\n", s.subject().c_str(), s.issuer().c_str(),
              absl::StrJoin(s.groups(), ", ").c_str());
  std::vector<std::string> attribution;
  for (const auto& [k, v] :
       std::map<std::string, std::string>(s.attribution().begin(), s.attribution().end())) {
    attribution.push_back(absl::StrCat(k, "=", v));
  }
  if (!attribution.empty())
    std::printf("attribution %s\n", absl::StrJoin(attribution, " ").c_str());
  std::printf("connection  %s  access %s (rule %s)\n", s.connection().c_str(),
              s.access().empty() ? "-" : s.access().c_str(),
              s.rule().empty() ? "-" : s.rule().c_str());
  std::printf("client      %s  tls %s\n", s.client_addr().c_str(), s.tls() ? "yes" : "no");
  if (!s.legal_hold().empty()) std::printf("legal hold  %s\n", s.legal_hold().c_str());
  std::printf("time        %s .. %s UTC  outcome %s%s%s\n", Time(s.started_unix_ms()).c_str(),
              Time(s.ended_unix_ms()).c_str(), s.outcome().c_str(), s.reason().empty() ? "" : ": ",
              s.reason().c_str());
  std::vector<std::vector<std::string>> rows = {
      {"TIME (UTC)", "CLASS", "ROWS", "MS", "RESULT", "STATEMENT"}};
  for (const auto& e : d.events()) {
    if (e.type() != audit::StatementEvent::kType) continue;
    const audit::StatementEvent ev = audit::StatementEvent::Read(e.json());
    std::string text = ev.text.statement;
    for (char& c : text) {
      if (c == '\n' || c == '\t') c = ' ';
    }
    if (text.size() > 100) text = text.substr(0, 97) + "...";
    std::string result =
        ev.sqlstate.empty() ? ev.command_tags : "ERROR " + ev.sqlstate + " " + ev.error;
    if (ev.sqlstate.empty() && !ev.error.empty()) result = ev.error;
    const double ms = static_cast<double>(ev.duration_us) / 1000;
    rows.push_back({Time(e.time_unix_ms()), ev.text.classification, absl::StrCat(ev.rows),
                    absl::StrFormat("%.1f", ms), result.substr(0, 60), text});
  }
  std::printf("\n");
  if (rows.size() == 1) {
    std::printf("no statements\n");
  } else {
    PrintTable(rows);
  }
  return 0;
}

int MintToken(AdminClient& client, const std::string& subject, const std::string& groups,
              const std::string& ttl, const std::vector<std::string>& claims) {
  v1::MintDevTokenRequest req;
  req.set_subject(subject);
  for (absl::string_view g : absl::StrSplit(groups, ',', absl::SkipEmpty()))
    req.add_groups(std::string(g));
  absl::Duration d;
  if (!ttl.empty()) {
    if (!absl::ParseDuration(ttl, &d) || d <= absl::ZeroDuration()) {
      std::fprintf(stderr, "error: --ttl: '%s' is not a duration such as 30m or 2h\n", ttl.c_str());
      return 2;
    }
    req.set_ttl_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(d)));
  }
  for (const auto& c : claims) {
    size_t eq = c.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "error: --claim: '%s' is not k=v\n", c.c_str());
      return 2;
    }
    (*req.mutable_claims())[c.substr(0, eq)] = c.substr(eq + 1);
  }
  v1::MintDevTokenResponse resp;
  grpc::Status st = client.stub()->MintDevToken(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  std::printf("%s\n", resp.token().c_str());
  return 0;
}

int VerifyAudit(AdminClient& client, const std::string& from, const std::string& until,
                const std::string& output) {
  v1::VerifyAuditRequest req;
  auto f = ParseTimeArg(from);
  if (!f.ok()) return Fail(absl::StrCat("--from: ", f.status().message()));
  auto u = ParseTimeArg(until);
  if (!u.ok()) return Fail(absl::StrCat("--to: ", u.status().message()));
  req.set_from_unix_ms(*f);
  req.set_until_unix_ms(*u);
  v1::VerifyAuditResponse resp;
  grpc::Status st = client.stub()->VerifyAudit(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(resp, /*all_fields=*/true).c_str());
    return resp.ok() ? 0 : 1;
  }
  if (resp.ok()) {
    std::printf(
        "audit verified: %llu records of %u agent(s), every checksum and chain link intact; "
        "complete: %u trail(s) run from their signed genesis to their signed head, %llu session "
        "index "
        "row(s) match their events; %u signed checkpoint(s) hold; %llu recording slice(s) match; "
        "%llu "
        "purged record(s) (retention) link by their kept hash, under %u signed tombstone(s)\n",
        static_cast<unsigned long long>(resp.records()), resp.agents(), resp.anchored_agents(),
        static_cast<unsigned long long>(resp.sessions_checked()), resp.checkpoints(),
        static_cast<unsigned long long>(resp.recording_slices()),
        static_cast<unsigned long long>(resp.purged()), resp.tombstones());
    if (resp.chain_resumes() > 0) {
      std::printf(
          "%u chain resume(s): an agent's spool lost its tail and its chain goes on from an older "
          "record "
          "of its own, under a signed resume; the control plane holds what the agent lost (see the "
          "notes)\n",
          resp.chain_resumes());
    }
  } else {
    std::printf("audit verification FAILED: %u problem(s)\nfirst: %s\n", resp.problems(),
                resp.first_problem().c_str());
    // The next few, each on its line (all of them: -o json).
    for (int i = 1; i < resp.problem_list_size() && i < 10; ++i) {
      std::printf("then:  %s\n", resp.problem_list(i).c_str());
    }
    if (resp.problems() > 10)
      std::printf("(%u more: -o json lists the first 100)\n", resp.problems() - 10);
  }
  for (const std::string& note : resp.notes()) std::printf("note: %s\n", note.c_str());
  return resp.ok() ? 0 : 1;
}

int HoldSession(AdminClient& client, const std::string& id, const std::string& reason,
                bool release) {
  v1::HoldSessionRequest req;
  req.set_session_id(id);
  req.set_reason(reason);
  req.set_release(release);
  v1::SessionSummary s;
  grpc::Status st = client.stub()->HoldSession(client.Context().get(), req, &s);
  if (!st.ok()) return FailRpc(st);
  if (release) {
    std::printf("session %s: legal hold released; retention applies again\n",
                s.session_id().c_str());
  } else {
    std::printf("session %s: under legal hold (%s); retention will not purge it\n",
                s.session_id().c_str(), s.legal_hold().c_str());
  }
  return 0;
}

int ExportEvidence(AdminClient& client, const std::string& from, const std::string& to,
                   const std::string& format, const std::string& output_file) {
  if (format != "json" && format != "markdown" && format != "html") {
    std::fprintf(stderr, "error: --format must be json, markdown or html, not '%s'\n",
                 format.c_str());
    return 2;
  }
  auto f = ParseTimeArg(from);
  if (!f.ok()) return Fail(absl::StrCat("--from: ", f.status().message()));
  auto t = ParseTimeArg(to);
  if (!t.ok()) return Fail(absl::StrCat("--to: ", t.status().message()));
  if (*t <= *f) {
    return Fail(
        absl::StrCat("--to (", Time(*t), " UTC) must be after --from (", Time(*f), " UTC)"));
  }
  v1::ExportEvidenceRequest req;
  req.set_from_unix_ms(*f);
  req.set_until_unix_ms(*t);
  v1::ExportEvidenceResponse resp;
  grpc::Status st = client.stub()->ExportEvidence(client.Context(300).get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  auto text = RenderEvidence(resp.json(), format);
  if (!text.ok()) return Fail(std::string(text.status().message()));
  if (output_file.empty()) {
    std::fwrite(text->data(), 1, text->size(), stdout);
  } else {
    // The report holds statement texts and identities: readable by its owner only.
    absl::Status written = WriteFileAtomic(output_file, *text, 0600);
    if (!written.ok()) return Fail(absl::StrCat("--output: ", written.message()));
    std::fprintf(stderr, "evidence for %s .. %s UTC written to %s\n", Time(*f).c_str(),
                 Time(*t).c_str(), output_file.c_str());
  }
  if (!resp.verified()) {
    std::fprintf(
        stderr,
        "error: the audit chain does not verify for this window (see verify in the report)\n");
    return 1;
  }
  return 0;
}

int PurgeExpired(AdminClient& client, bool dry_run, const std::string& output) {
  v1::PurgeExpiredRequest req;
  req.set_dry_run(dry_run);
  v1::PurgeExpiredResponse resp;
  grpc::Status st = client.stub()->PurgeExpired(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(resp, /*all_fields=*/true).c_str());
    return 0;
  }
  std::printf(
      "%s %u session(s) (%llu event(s), %llu recording byte(s)); %u due session(s) kept under "
      "legal hold\n",
      dry_run ? "due for purging:" : "purged", resp.sessions(),
      static_cast<unsigned long long>(resp.events()),
      static_cast<unsigned long long>(resp.recording_bytes()), resp.held());
  for (const auto& id : resp.session_ids()) std::printf("  %s\n", id.c_str());
  if (resp.audit_id() != 0)
    std::printf("audit record %lld\n", static_cast<long long>(resp.audit_id()));
  return 0;
}

void PrintApproval(const v1::Approval& a) {
  std::printf("approval    %llu  %s%s%s\n", static_cast<unsigned long long>(a.id()),
              a.status().c_str(), a.reason().empty() ? "" : ": ", a.reason().c_str());
  std::printf("requester   %s (issuer %s) groups [%s]\n", a.subject().c_str(), a.issuer().c_str(),
              absl::StrJoin(a.groups(), ", ").c_str());
  std::vector<std::string> attribution;
  for (const auto& [k, v] :
       std::map<std::string, std::string>(a.attribution().begin(), a.attribution().end())) {
    attribution.push_back(absl::StrCat(k, "=", v));
  }
  if (!attribution.empty())
    std::printf("attribution %s\n", absl::StrJoin(attribution, " ").c_str());
  std::printf("connection  %s  session %s (agent %s)\n", a.connection().c_str(),
              a.session_id().c_str(), a.agent_id().c_str());
  std::printf("guardrail   %s: %s%s%s\n", a.guardrail().c_str(), a.rule().c_str(),
              a.target().empty() ? "" : " on ", a.target().c_str());
  std::printf("policy      %s (%u approval%s needed)\n", a.approval_policy().c_str(),
              a.min_approvals(), a.min_approvals() == 1 ? "" : "s");
  std::printf("time        asked %s UTC, expires %s UTC%s%s\n", Time(a.created_unix_ms()).c_str(),
              Time(a.expires_unix_ms()).c_str(), a.decided_unix_ms() ? ", decided " : "",
              a.decided_unix_ms() ? (Time(a.decided_unix_ms()) + " UTC").c_str() : "");
  std::printf("statement   %s\n", a.statement().c_str());
  if (!a.parameters().empty())
    std::printf("parameters  %s\n", absl::StrJoin(a.parameters(), ", ").c_str());
  for (const auto& v : a.votes()) {
    std::printf("vote        %s %s by %s%s%s\n", Time(v.time_unix_ms()).c_str(),
                v.approved() ? "approved" : "denied", v.approver().c_str(),
                v.reason().empty() ? "" : ": ", v.reason().c_str());
  }
  for (const auto& d : a.deliveries()) {
    std::printf(
        "webhook     %s %s attempt %u: %s\n", Time(d.time_unix_ms()).c_str(), d.webhook().c_str(),
        d.attempt(),
        d.error().empty()
            ? absl::StrCat("HTTP ", d.http_status()).c_str()
            : absl::StrCat(d.http_status() ? absl::StrCat("HTTP ", d.http_status(), " ") : "",
                           d.error())
                  .c_str());
  }
}

int ListApprovals(AdminClient& client, const std::string& status, uint32_t limit,
                  const std::string& output) {
  v1::ListApprovalsRequest req;
  req.set_status(status);
  req.set_limit(limit);
  v1::ListApprovalsResponse resp;
  grpc::Status st = client.stub()->ListApprovals(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(resp).c_str());
    return 0;
  }
  if (resp.approvals().empty()) {
    std::printf("no approval requests\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATUS", "ASKED (UTC)", "REQUESTER", "CONNECTION", "RULE", "VOTES", "STATEMENT"}};
  for (const auto& a : resp.approvals()) {
    std::string text = a.statement();
    for (char& ch : text) {
      if (ch == '\n' || ch == '\t') ch = ' ';
    }
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    int yes = 0;
    for (const auto& v : a.votes()) yes += v.approved() ? 1 : 0;
    rows.push_back({absl::StrCat(a.id()), a.status(), Time(a.created_unix_ms()), a.subject(),
                    a.connection(), a.rule(), absl::StrCat(yes, "/", a.min_approvals()), text});
  }
  PrintTable(rows);
  return 0;
}

int ShowApproval(AdminClient& client, uint64_t id, const std::string& output) {
  v1::GetApprovalRequest req;
  req.set_id(id);
  v1::Approval a;
  grpc::Status st = client.stub()->GetApproval(client.Context().get(), req, &a);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(a).c_str());
    return 0;
  }
  PrintApproval(a);
  return 0;
}

int DecideApproval(AdminClient& client, uint64_t id, bool approve, const std::string& reason) {
  v1::DecideApprovalRequest req;
  req.set_id(id);
  req.set_approve(approve);
  req.set_reason(reason);
  v1::Approval a;
  grpc::Status st = client.stub()->DecideApproval(client.Context().get(), req, &a);
  if (!st.ok()) return FailRpc(st);
  int yes = 0;
  for (const auto& v : a.votes()) yes += v.approved() ? 1 : 0;
  if (a.status() == "pending") {
    std::printf("approval %llu: your approval is recorded (%d of %u); still pending\n",
                static_cast<unsigned long long>(id), yes, a.min_approvals());
  } else {
    std::printf("approval %llu: %s\n", static_cast<unsigned long long>(id), a.status().c_str());
  }
  return 0;
}

// How an agent stands in a rollout, for the table (RolloutAgent.answer).
std::string AnswerText(const v1::RolloutAgent& a) {
  if (a.answer() == "ack") return "ACK";
  if (a.answer() == "nack") return "NACK: " + a.nack_error();
  if (a.answer() == "held") return "held (not in the canary)";
  return a.answer();
}

void PrintRolloutStatus(const v1::RolloutStatus& st) {
  if (!st.has_rollout()) {
    std::printf("no rollout was started (sluicectl apply -f FILE --canary k=v starts one)\n");
    return;
  }
  const v1::Rollout& r = st.rollout();
  std::printf(
      "rollout %llu: policy version %llu to the canary agents %s (the others kept version %llu)\n",
      static_cast<unsigned long long>(r.id()), static_cast<unsigned long long>(r.version()),
      Labels(r.canary()).c_str(), static_cast<unsigned long long>(r.previous_version()));
  std::string state = r.state();
  if (r.state() == "aborted" && r.restored_version() != 0) {
    state += absl::StrCat(": version ", r.restored_version(), " holds version ",
                          r.previous_version(), "'s documents again");
  }
  std::printf("state:   %s\n", state.c_str());
  if (!r.reason().empty()) std::printf("reason:  %s\n", r.reason().c_str());
  std::printf("started: %s by %s\nupdated: %s by %s\npolicy version now: %llu\n\n",
              Ago(r.created_unix_ms()).c_str(), r.created_by().c_str(),
              Ago(r.updated_unix_ms()).c_str(), r.updated_by().c_str(),
              static_cast<unsigned long long>(st.policy_version()));
  if (st.agents().empty()) {
    std::printf("no agents enrolled\n");
    return;
  }
  std::vector<std::vector<std::string>> rows = {
      {"AGENT", "LABELS", "CANARY", "CONNECTED", "SENT", "APPLIED", "TARGET", "ANSWER"}};
  for (const auto& a : st.agents()) {
    rows.push_back({a.agent_id(), Labels(a.labels()), a.canary() ? "yes" : "no",
                    a.connected() ? "yes" : "no",
                    a.desired_version() ? absl::StrCat(a.desired_version()) : "-",
                    a.applied_version() ? absl::StrCat(a.applied_version()) : "-",
                    absl::StrCat(a.target_version()), AnswerText(a)});
  }
  PrintTable(rows);
}

int RolloutStatus(AdminClient& client, uint64_t id, const std::string& output) {
  if (output != "table" && output != "json") {
    std::fprintf(stderr, "error: -o must be table or json\n");
    return 2;
  }
  v1::GetRolloutRequest req;
  req.set_id(id);
  v1::RolloutStatus resp;
  grpc::Status st = client.stub()->GetRollout(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  if (output == "json") {
    std::printf("%s", PrintJson(resp, /*all_fields=*/true).c_str());
  } else {
    PrintRolloutStatus(resp);
  }
  return 0;
}

int PromoteRollout(AdminClient& client, bool force, const std::string& reason) {
  v1::PromoteRolloutRequest req;
  req.set_force(force);
  req.set_reason(reason);
  v1::RolloutStatus resp;
  grpc::Status st = client.stub()->PromoteRollout(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  std::printf("rollout %llu promoted: policy version %llu goes to every agent\n\n",
              static_cast<unsigned long long>(resp.rollout().id()),
              static_cast<unsigned long long>(resp.rollout().version()));
  PrintRolloutStatus(resp);
  return 0;
}

int AbortRollout(AdminClient& client, const std::string& reason) {
  v1::AbortRolloutRequest req;
  req.set_reason(reason);
  v1::RolloutStatus resp;
  grpc::Status st = client.stub()->AbortRollout(client.Context().get(), req, &resp);
  if (!st.ok()) return FailRpc(st);
  std::printf("rollout %llu aborted: version %llu's documents are stored again as version %llu\n\n",
              static_cast<unsigned long long>(resp.rollout().id()),
              static_cast<unsigned long long>(resp.rollout().previous_version()),
              static_cast<unsigned long long>(resp.rollout().restored_version()));
  PrintRolloutStatus(resp);
  return 0;
}

// Every flag's and argument's value; some are shared by several subcommands (-o, --limit,
// --reason, the session id).
struct Args {
  ClientConfig flags;
  std::string file, kind, name, output = "table", labels, agent_name, tls_names;
  std::string canary;
  uint64_t rollout_id = 0;
  bool force = false;
  uint32_t ttl = 0;
  std::string identity, connection, since, until, session_id, decision, rule, attribution;
  uint32_t limit = 100;
  bool follow = false;
  std::string hold_reason;
  bool dry_run = false;
  std::string status, reason;
  uint64_t approval_id = 0;
  std::string verify_from, verify_to;
  std::string evidence_from, evidence_to, evidence_format = "json", evidence_file;
  std::string subject, groups, token_ttl;
  std::vector<std::string> claims;
};

// A subcommand that does something (not a group such as `agents`), and what it does once the
// client is connected.
struct Command {
  CLI::App* app;
  std::function<int(AdminClient& client, const ClientConfig& config, const Args& args)> run;
};
using Commands = std::vector<Command>;

void AddGlobalOptions(CLI::App& app, ClientConfig& flags) {
  app.add_option("--server", flags.server, "control plane gRPC address host:port [SLUICE_SERVER]");
  app.add_option("--ca-file", flags.ca_file, "CA certificate to trust [SLUICE_CA_FILE]");
  app.add_option("--token", flags.token, "admin token [SLUICE_TOKEN]");
  app.add_option("--token-file", flags.token_file,
                 "file holding the admin token [SLUICE_TOKEN_FILE]");
  app.add_option("--config", flags.config_file,
                 "config file with server, ca_file, token_file [SLUICE_CONFIG; default "
                 "~/.config/sluice/config.yaml]");
}

// apply, get, delete.
void AddPolicyCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* apply = app.add_subcommand("apply", "validate and store policy documents (all or nothing)");
  apply->add_option("-f,--filename", args.file, "multi-document YAML file, or - for stdin")
      ->required();
  apply->add_option("--canary", args.canary,
                    "start a staged rollout: only agents with these labels (k=v,k=v) get the "
                    "change until `rollout promote`");
  commands.push_back({apply, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return Apply(c, a.file, a.canary);
                      }});
  auto* get = app.add_subcommand("get",
                                 "show resources (KIND: connection, issuer, access_rule, "
                                 "guardrail, masking_rule, approval_policy, webhook, all)");
  get->add_option("kind", args.kind, "resource kind")->required();
  get->add_option("name", args.name, "resource name (all of the kind when omitted)");
  get->add_option("-o,--output", args.output, "table, yaml or json");
  commands.push_back({get, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return Get(c, a.kind, a.name, a.output);
                      }});
  auto* del = app.add_subcommand("delete", "delete one resource");
  del->add_option("kind", args.kind, "resource kind")->required();
  del->add_option("name", args.name, "resource name")->required();
  commands.push_back({del, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return Delete(c, a.kind, a.name);
                      }});
}

// agents enroll, agents list.
void AddAgentCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* agents = app.add_subcommand("agents", "enroll and list agents");
  agents->require_subcommand(1);
  auto* enroll = agents->add_subcommand("enroll", "mint a one-time enrollment token");
  enroll->add_option("--labels", args.labels, "labels granted to the agent, k=v,k=v")->required();
  enroll->add_option("--name", args.agent_name, "agent id (generated when omitted)");
  enroll->add_option("--ttl-seconds", args.ttl, "token lifetime (default 24h)");
  enroll->add_option("--tls-names", args.tls_names,
                     "host names and IPs the agent's listener certificate may carry, a,b (loopback "
                     "names are always allowed)");
  commands.push_back({enroll, [](AdminClient& c, const ClientConfig& config, const Args& a) {
                        return Enroll(c, config, a.labels, a.agent_name, a.ttl, a.tls_names);
                      }});
  auto* list = agents->add_subcommand("list", "agents, their connection state and applied version");
  list->add_option("-o,--output", args.output, "table or json");
  commands.push_back({list, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return ListAgents(c, a.output);
                      }});
}

// rollout status, promote, abort.
void AddRolloutCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* rollout = app.add_subcommand(
      "rollout", "staged rollouts of policy changes (apply --canary starts one)");
  rollout->require_subcommand(1);
  auto* status = rollout->add_subcommand(
      "status", "the latest rollout and every agent's answer (ACK, NACK) to its version");
  status->add_option("--id", args.rollout_id, "another rollout than the latest");
  status->add_option("-o,--output", args.output, "table or json");
  commands.push_back({status, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return RolloutStatus(c, a.rollout_id, a.output);
                      }});
  auto* promote = rollout->add_subcommand(
      "promote", "send the rollout's version to every agent (once every canary ACKed it)");
  promote->add_flag("--force", args.force,
                    "promote a halted rollout, or one whose canaries did not all ACK");
  promote->add_option("--reason", args.reason, "recorded with the promotion");
  commands.push_back({promote, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return PromoteRollout(c, a.force, a.reason);
                      }});
  auto* abort = rollout->add_subcommand(
      "abort", "return the canaries, and the stored policy, to the version before the rollout");
  abort->add_option("--reason", args.reason, "recorded with the abort");
  commands.push_back({abort, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return AbortRollout(c, a.reason);
                      }});
}

// sessions list, show, replay, hold, release.
void AddSessionCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* sessions = app.add_subcommand("sessions", "data-path sessions and their statements");
  sessions->require_subcommand(1);
  auto* slist = sessions->add_subcommand("list", "sessions, newest first");
  slist->add_option("--identity", args.identity, "only this caller (token subject)");
  slist->add_option("--connection", args.connection, "only this connection");
  slist->add_option("--since", args.since, "started after: 1h, 30m, 2d ago, or an RFC 3339 time");
  slist->add_option("--until", args.until, "started before: same forms as --since");
  slist->add_option("--limit", args.limit, "at most this many (default 100)");
  slist->add_option("-o,--output", args.output, "table or json");
  slist->add_option(
      "--decision", args.decision,
      "only sessions with a statement so decided (blocked, denied, refused, alerted, approved)");
  slist->add_option("--rule", args.rule,
                    "only sessions where this guardrail, masking rule or approval policy acted");
  slist->add_option("--attribution", args.attribution,
                    "only sessions with this attribution claim, e.g. run_id=1234");
  commands.push_back({slist, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        v1::ListSessionsRequest filters;
                        filters.set_decision(a.decision);
                        filters.set_rule(a.rule);
                        filters.set_attribution(a.attribution);
                        return ListSessions(c, a.identity, a.connection, a.since, a.until, a.limit,
                                            a.output, filters);
                      }});
  auto* sshow = sessions->add_subcommand("show", "one session with its statements");
  sshow->add_option("id", args.session_id, "session id")->required();
  sshow->add_option("-o,--output", args.output, "table or json");
  commands.push_back({sshow, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return ShowSession(c, a.session_id, a.output);
                      }});
  auto* sreplay = sessions->add_subcommand("replay",
                                           "a session's transcript from its recording: statements, "
                                           "decisions, results (as masked), notices, errors");
  sreplay->add_option("id", args.session_id, "session id")->required();
  sreplay->add_flag("--follow", args.follow,
                    "keep printing while the session goes on, until it ends");
  commands.push_back({sreplay, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return ReplaySession(c, a.session_id, a.follow);
                      }});
  auto* shold = sessions->add_subcommand(
      "hold", "put a session under legal hold: retention will not purge it");
  shold->add_option("id", args.session_id, "session id")->required();
  shold->add_option("--reason", args.hold_reason, "why (e.g. a case number); required")->required();
  commands.push_back({shold, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return HoldSession(c, a.session_id, a.hold_reason, false);
                      }});
  auto* srelease = sessions->add_subcommand("release", "release a session's legal hold");
  srelease->add_option("id", args.session_id, "session id")->required();
  commands.push_back({srelease, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return HoldSession(c, a.session_id, "", true);
                      }});
}

// retention purge.
void AddRetentionCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* retention =
      app.add_subcommand("retention", "the retention purge (RetentionPolicy resources)");
  retention->require_subcommand(1);
  auto* purge = retention->add_subcommand(
      "purge",
      "purge now the sessions their RetentionPolicy no longer keeps (legal holds excepted)");
  purge->add_flag("--dry-run", args.dry_run, "only say what is due");
  purge->add_option("-o,--output", args.output, "table or json");
  commands.push_back({purge, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return PurgeExpired(c, a.dry_run, a.output);
                      }});
}

// approvals list, show, approve, deny.
void AddApprovalCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* approvals = app.add_subcommand(
      "approvals",
      "statements held at agents for a decision (approve and deny need your own OIDC token "
      "in SLUICE_TOKEN or --token)");
  approvals->require_subcommand(1);
  auto* alist = approvals->add_subcommand("list", "approval requests, newest first");
  alist->add_option("--status", args.status, "pending, approved, denied, expired or withdrawn");
  alist->add_option("--limit", args.limit, "at most this many (default 100)");
  alist->add_option("-o,--output", args.output, "table or json");
  commands.push_back({alist, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return ListApprovals(c, a.status, a.limit, a.output);
                      }});
  auto* ashow =
      approvals->add_subcommand("show", "one request with its votes and webhook deliveries");
  ashow->add_option("id", args.approval_id, "approval request id")->required();
  ashow->add_option("-o,--output", args.output, "table or json");
  commands.push_back({ashow, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return ShowApproval(c, a.approval_id, a.output);
                      }});
  auto* aapprove = approvals->add_subcommand("approve", "approve a held statement");
  aapprove->add_option("id", args.approval_id, "approval request id")->required();
  aapprove->add_option("--reason", args.reason, "why (kept with the decision)");
  commands.push_back({aapprove, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return DecideApproval(c, a.approval_id, true, a.reason);
                      }});
  auto* adeny =
      approvals->add_subcommand("deny", "deny a held statement; the caller sees the reason");
  adeny->add_option("id", args.approval_id, "approval request id")->required();
  adeny->add_option("--reason", args.reason, "why (shown to the caller)");
  commands.push_back({adeny, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return DecideApproval(c, a.approval_id, false, a.reason);
                      }});
}

// audit verify.
void AddAuditCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* audit = app.add_subcommand("audit", "the control plane's stored audit events");
  audit->require_subcommand(1);
  auto* verify = audit->add_subcommand("verify",
                                       "re-verify checksums, hash chains and completeness (signed "
                                       "heads, tombstones, session index) from storage");
  verify->add_option("--from", args.verify_from,
                     "report problems in events after: 1h, 2d, or an RFC 3339 time");
  verify->add_option("--to", args.verify_to, "... and before: same forms");
  verify->add_option("-o,--output", args.output, "table or json");
  commands.push_back({verify, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return VerifyAudit(c, a.verify_from, a.verify_to, a.output);
                      }});
}

// evidence export.
void AddEvidenceCommands(CLI::App& app, Args& args, Commands& commands) {
  auto* evidence =
      app.add_subcommand("evidence", "NIST SP 800-53 evidence from the control plane's store");
  evidence->require_subcommand(1);
  auto* eexport = evidence->add_subcommand("export",
                                           "the evidence report of a time window, by control (exit "
                                           "status 1 when the audit chain does not verify)");
  eexport
      ->add_option("--from", args.evidence_from, "window start: 1h, 2d (ago), or an RFC 3339 time")
      ->required();
  eexport->add_option("--to", args.evidence_to, "window end (exclusive): same forms, or now")
      ->required();
  eexport->add_option("--format", args.evidence_format, "json (default), markdown or html");
  eexport->add_option("--output", args.evidence_file,
                      "write the report to this file (0600) instead of stdout");
  commands.push_back({eexport, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return ExportEvidence(c, a.evidence_from, a.evidence_to, a.evidence_format,
                                              a.evidence_file);
                      }});
}

// token.
void AddTokenCommand(CLI::App& app, Args& args, Commands& commands) {
  auto* token = app.add_subcommand(
      "token", "mint a caller token from the control plane's dev issuer (--dev-issuer only)");
  token->add_option("--subject", args.subject, "the caller identity (sub)")->required();
  token->add_option("--groups", args.groups, "comma-separated groups");
  token->add_option("--ttl", args.token_ttl, "lifetime, e.g. 30m (default 1h, at most 24h)");
  token->add_option("--claim", args.claims, "extra claim k=v (repeatable), e.g. run_id=1234");
  commands.push_back({token, [](AdminClient& c, const ClientConfig&, const Args& a) {
                        return MintToken(c, a.subject, a.groups, a.token_ttl, a.claims);
                      }});
}

// Connects to the control plane and runs the subcommand that was given.
int Dispatch(const Commands& commands, const Args& args) {
  auto config = ResolveConfig(args.flags);
  if (!config.ok()) return Fail(std::string(config.status().message()));
  auto client = AdminClient::Connect(*config);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  for (const Command& command : commands) {
    if (command.app->parsed()) return command.run(**client, *config, args);
  }
  return 2;
}

}  // namespace
}  // namespace sluice::cli

int main(int argc, char** argv) {
  using namespace sluice::cli;
  CLI::App app{"sluicectl: administer a Sluice control plane"};
  app.require_subcommand(1);
  Args args;
  Commands commands;
  AddGlobalOptions(app, args.flags);
  AddPolicyCommands(app, args, commands);
  AddAgentCommands(app, args, commands);
  AddRolloutCommands(app, args, commands);
  AddSessionCommands(app, args, commands);
  AddRetentionCommands(app, args, commands);
  AddApprovalCommands(app, args, commands);
  AddAuditCommands(app, args, commands);
  AddEvidenceCommands(app, args, commands);
  AddTokenCommand(app, args, commands);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports usage errors by exception; this is the one place they are caught.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return Dispatch(commands, args);
}
