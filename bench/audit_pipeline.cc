// bench/audit_pipeline: how many statement events per second the two ends of the audit path
// take on this machine, with the real code and nothing else running:
//
//   spool   — one agent's EventSink with its Spool (journal copy, segment writes; fdatasync
//             every 100 ms on the spool's own thread): events emitted from 2 threads until each
//             is written to a segment, chunks taken and acknowledged as a control plane would.
//   ingest  — the control plane's SqliteStore: the agent's chunks (1 MiB of framed records)
//             decoded as the stream handler does, then through AppendAgentEvents (chain check,
//             recording files, session index).
//
// Each runs with and without a recording slice per event (a typical pgbench -S exchange after
// masking). Events look like the agent's: a statement event of ~200 bytes of JSON, sessions of 50
// statements. Prints events/s for each. Usage: audit_pipeline_bench [--events N] [--dir D]
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/audit/event_sink.h"
#include "agent/audit/spool.h"
#include "common/audit/recording.h"
#include "common/audit/records.h"
#include "controlplane/store/sqlite_store.h"

namespace sluice::bench {
namespace {

using agent::EventSink;
using agent::Spool;

constexpr int kStatementsPerSession = 50;

std::string StatementJson(int n) {
  return absl::StrCat(
      R"({"statement":"SELECT abalance FROM pgbench_accounts WHERE aid = )", 10000 + n,
      R"(;","fingerprint":"5c1e0d6a2f0b9e31","classification":"read","protocol":"simple",)",
      R"("rows":1,"bytes":11,"duration_ms":0.081,"command_tags":"SELECT 1"})");
}

std::string RecordingSlice(int n) {
  std::string out;
  std::string sql =
      absl::StrCat("SELECT abalance FROM pgbench_accounts WHERE aid = ", 10000 + n, ";");
  sql.push_back('\0');
  audit::AppendRecordedMessage(&out, audit::kRecordedFromClient, 1000 + n, 'Q', sql);
  audit::AppendRecordedMessage(
      &out, audit::kRecordedToClient, 1080 + n, 'T',
      std::string("\0\1abalance\0\0\0\0\0\0\0\0\0\0\0\x17\0\4\xff\xff\xff\xff\0\0", 29));
  audit::AppendRecordedMessage(&out, audit::kRecordedToClient, 1080 + n, 'D',
                               std::string("\0\1\0\0\0\4-123", 10));
  audit::AppendRecordedMessage(&out, audit::kRecordedToClient, 1080 + n, 'C',
                               std::string("SELECT 1\0", 9));
  audit::AppendRecordedMessage(&out, audit::kRecordedToClient, 1080 + n, 'Z', "I");
  return out;
}

double SpoolRate(const std::string& dir, int events, bool recording) {
  std::filesystem::remove_all(dir);
  Spool::Options o;
  o.dir = dir;
  auto spool = Spool::Open(o);
  if (!spool.ok()) {
    std::fprintf(stderr, "spool: %s\n", std::string(spool.status().message()).c_str());
    return 0;
  }
  EventSink sink;
  sink.StartSpooling(spool->get());
  std::atomic<bool> done{false};
  // The control plane's part: take every spooled chunk and acknowledge it.
  std::thread sender([&] {
    while (!done.load() || sink.stats().queued_events > 0) {
      if (!sink.WaitForEvents(absl::Milliseconds(5))) continue;
      while (auto chunk = sink.TakeChunk()) sink.Ack(chunk->last_sequence);
    }
  });
  const std::string slice = RecordingSlice(1);
  absl::Time start = absl::Now();
  std::vector<std::thread> emitters;
  for (int t = 0; t < 2; ++t) {
    emitters.emplace_back([&, t] {
      std::string session = absl::StrCat("bench-session-", t);
      for (int i = t; i < events; i += 2) {
        while (!sink.Emit("statement", session, StatementJson(i), false, recording ? slice : "")) {
          sink.WaitUntilSpooled(absl::Seconds(1));  // memory full: the spool thread catches up
        }
      }
    });
  }
  for (auto& e : emitters) e.join();
  while (!sink.WaitUntilSpooled(absl::Seconds(1))) {
  }
  absl::Duration took = absl::Now() - start;
  done.store(true);
  sender.join();
  return events / absl::ToDoubleSeconds(took);
}

double IngestRate(const std::string& dir, int events, bool recording) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto store = controlplane::SqliteStore::Open(dir + "/sluice.db");
  if (!store.ok()) return 0;
  (void)(*store)->CreateEnrollment({"h", "bench", {}, 0, 1LL << 60, {}});
  (void)(*store)->ConsumeEnrollment("h", "s", 1, {});
  // The batches, built first (as the agent's EventSink would have): chunks of ~1 MiB.
  std::vector<controlplane::EventBatch> batches;
  std::string head;
  const std::string slice = RecordingSlice(1);
  const std::string start_json =
      R"({"connection":"bench","client_addr":"127.0.0.1:5000","tls":false,"user":"app","subject":"bench-bot","issuer":"bench-idp","groups":["bench"],"attribution":{},"access":"write","rule":"bench"})";
  controlplane::EventBatch* b = nullptr;
  for (int i = 0; i < events; ++i) {
    if (b == nullptr || b->records.size() >= agent::EventSink::kDefaultChunkBytes)
      b = &batches.emplace_back();
    const int session = i / (kStatementsPerSession + 2);
    const int pos = i % (kStatementsPerSession + 2);
    v1::AuditEvent e;
    e.set_sequence(static_cast<uint64_t>(i) + 1);
    e.set_time_unix_ms(1700000000000 + i);
    e.set_session_id(absl::StrCat("s", session));
    e.set_type(pos == 0                           ? "session_start"
               : pos == kStatementsPerSession + 1 ? "session_end"
                                                  : "statement");
    e.set_json(pos == 0                           ? start_json
               : pos == kStatementsPerSession + 1 ? R"({"reason":"closed"})"
                                                  : StatementJson(i));
    e.set_prev_hash(head);
    if (recording) {
      e.set_recording_bytes(static_cast<uint32_t>(slice.size()));
      e.set_recording(slice);
    }
    std::string payload = e.SerializeAsString();
    head = audit::ChainHash(payload);
    audit::AppendRecord(&b->records, payload);
  }
  absl::Time start = absl::Now();
  std::vector<v1::AuditEvent> recycled;
  for (const auto& built : batches) {
    // As the control plane's stream handler does: decode the records into a recycled vector,
    // store them, and recycle the vector.
    controlplane::EventBatch batch;
    batch.events = std::move(recycled);
    absl::Status decoded = audit::DecodeEventsInto(
        built.records, std::numeric_limits<size_t>::max(), &batch.events, &batch.offsets);
    if (!decoded.ok()) {
      std::fprintf(stderr, "decode: %s\n", std::string(decoded.message()).c_str());
      return 0;
    }
    batch.records = built.records;
    auto st = (*store)->AppendAgentEvents("bench", batch);
    recycled = std::move(batch.events);
    if (!st.ok()) {
      std::fprintf(stderr, "ingest: %s\n", std::string(st.status().message()).c_str());
      return 0;
    }
  }
  return events / absl::ToDoubleSeconds(absl::Now() - start);
}

}  // namespace
}  // namespace sluice::bench

int main(int argc, char** argv) {
  int events = 200000;
  std::string dir = "/tmp/sluice-audit-pipeline-bench";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--events" && absl::SimpleAtoi(argv[i + 1], &events) && events > 0) continue;
    if (flag == "--dir") {
      dir = argv[i + 1];
      continue;
    }
    std::fprintf(stderr, "usage: audit_pipeline_bench [--events N] [--dir D]\n");
    return 2;
  }
  using sluice::bench::IngestRate;
  using sluice::bench::SpoolRate;
  std::printf("%d statement events each, one process, %u cores\n", events,
              std::thread::hardware_concurrency());
  std::printf("%-40s %12s\n", "", "events/s");
  std::printf("%-40s %12.0f\n", "agent spool, no recording",
              SpoolRate(dir + "/spool", events, false));
  std::printf("%-40s %12.0f\n", "agent spool, with recording",
              SpoolRate(dir + "/spool", events, true));
  std::printf("%-40s %12.0f\n", "control plane ingest, no recording",
              IngestRate(dir + "/cp", events, false));
  std::printf("%-40s %12.0f\n", "control plane ingest, with recording",
              IngestRate(dir + "/cp", events, true));
  std::filesystem::remove_all(dir);
  return 0;
}
