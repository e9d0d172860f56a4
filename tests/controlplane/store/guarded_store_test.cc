#include "controlplane/store/guarded_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cerrno>
#include <filesystem>

#include "controlplane/store/disk_fault.h"
#include "controlplane/store/sqlite_store.h"

namespace sluice::controlplane {
namespace {

std::string FreshDir(const std::string& name) {
  std::string dir =
      (std::filesystem::path(::testing::TempDir()) / ("guarded_store_test_" + name)).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A store whose writes fail with `fault` while it is set (GuardedStore forwards everything to the
// real store below; this one intercepts two writes and the probe).
class FaultyStore : public GuardedStore {
 public:
  using GuardedStore::GuardedStore;
  absl::Status fault;
  absl::Status probe;
  absl::Status read_fault;
  int audit_calls = 0;
  int probes = 0;

  absl::StatusOr<int64_t> AppendAudit(const AuditRecord& record) override {
    ++audit_calls;
    if (!fault.ok()) return fault;
    return GuardedStore::AppendAudit(record);
  }
  absl::StatusOr<uint64_t> UpsertResources(const std::vector<StoredResource>& batch,
                                           const std::string& actor, int64_t now_ms) override {
    if (!fault.ok()) return fault;
    return GuardedStore::UpsertResources(batch, actor, now_ms);
  }
  absl::StatusOr<std::vector<AgentRecord>> ListAgents() override {
    if (!read_fault.ok()) return read_fault;
    return GuardedStore::ListAgents();
  }
  absl::Status ProbeWrites() override {
    ++probes;
    if (!probe.ok()) return probe;
    return GuardedStore::ProbeWrites();
  }
};

StoredResource Webhook(const std::string& name) {
  StoredResource r;
  r.resource.mutable_webhook()->set_name(name);
  r.resource.mutable_webhook()->set_url("https://hooks.example/" + name);
  return r;
}

struct Fixture {
  explicit Fixture(const std::string& name) : dir(FreshDir(name)) {
    auto opened = SqliteStore::Open(dir + "/sluice.db");
    EXPECT_TRUE(opened.ok()) << opened.status();
    sqlite = *std::move(opened);
    faulty = std::make_unique<FaultyStore>(sqlite.get(), dir);
    guard = std::make_unique<GuardedStore>(faulty.get(), dir);
  }
  std::string dir;
  std::unique_ptr<SqliteStore> sqlite;
  std::unique_ptr<FaultyStore> faulty;
  std::unique_ptr<GuardedStore> guard;
};

const AuditRecord kRecord{0, 1000, "tester", "Test.write", "", "ok", ""};

TEST(GuardedStore, ADiskFaultRefusesEveryWriteUntilTheProbeSucceeds) {
  Fixture f("refuse");
  ASSERT_TRUE(f.guard->AppendAudit(kRecord).ok());
  EXPECT_FALSE(f.guard->WriteFault());

  f.faulty->fault = DiskFaultError(
      "cannot write recording file /d/recordings/0000000001.rec: No space left on device");
  auto refused = f.guard->AppendAudit(kRecord);
  ASSERT_TRUE(IsDiskFault(refused.status())) << refused.status();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("the control plane's store refuses writes since "),
            std::string::npos);
  EXPECT_NE(refused.status().message().find("0000000001.rec: No space left on device"),
            std::string::npos);
  EXPECT_NE(refused.status().message().find("once " + f.dir + " can be written"),
            std::string::npos);
  auto fault = f.guard->WriteFault();
  ASSERT_TRUE(fault);
  EXPECT_NE(fault->error.find("No space left on device"), std::string::npos);
  EXPECT_GT(fault->since_ms, 0);

  // Every later write is refused at once, with the same error, without reaching the store.
  f.faulty->fault = absl::OkStatus();
  const int calls = f.faulty->audit_calls;
  auto again = f.guard->AppendAudit(kRecord);
  EXPECT_EQ(again.status(), refused.status());
  EXPECT_EQ(f.faulty->audit_calls, calls);
  EXPECT_TRUE(IsDiskFault(f.guard->UpsertResources({Webhook("w")}, "tester", 1000).status()));
  EXPECT_EQ(f.guard->refused_writes(), 3u);
  EXPECT_EQ(f.guard->faults(), 1u);
  EXPECT_EQ(f.guard->audit_records_lost(), 2u);  // the two audit records refused
  // Reads go on; one that fails meanwhile (a failing disk's reads may look like anything) says
  // why writes are refused as well.
  EXPECT_TRUE(f.guard->ListResources("").ok());
  EXPECT_TRUE(f.guard->PolicyVersion().ok());
  f.faulty->read_fault = absl::InternalError("sqlite: database disk image is malformed");
  auto read = f.guard->ListAgents();
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(read.status().message(), absl::StrCat("sqlite: database disk image is malformed (",
                                                  refused.status().message(), ")"));
  f.faulty->read_fault = absl::OkStatus();

  // The probe fails: still refusing, and why is kept.
  f.faulty->probe = DiskFaultError("cannot create /d/.sluice-write-probe: Read-only file system");
  EXPECT_FALSE(f.guard->TryResume(10'000));
  EXPECT_EQ(f.guard->WriteFault()->waiting,
            "cannot create /d/.sluice-write-probe: Read-only file system");
  // At most once a second.
  f.faulty->probe = absl::OkStatus();
  EXPECT_FALSE(f.guard->TryResume(10'500));
  EXPECT_EQ(f.faulty->probes, 1);
  // The probe succeeds (the real store's: a file written and synced, a write transaction).
  EXPECT_TRUE(f.guard->TryResume(11'000));
  EXPECT_EQ(f.faulty->probes, 2);
  EXPECT_FALSE(f.guard->WriteFault());
  EXPECT_FALSE(f.guard->TryResume(12'000));  // once
  EXPECT_TRUE(f.guard->AppendAudit(kRecord).ok());
  auto version = f.guard->UpsertResources({Webhook("w")}, "tester", 1000);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 1u);
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/.sluice-write-probe"));
}

TEST(GuardedStore, OtherErrorsAreTheRequestsAndRefuseNothing) {
  Fixture f("other");
  f.faulty->read_fault = absl::InternalError("sqlite: no such table");
  EXPECT_EQ(f.guard->ListAgents().status(), f.faulty->read_fault);  // as it is: writes are taken
  f.faulty->fault = absl::InvalidArgumentError("bad record");
  EXPECT_EQ(f.guard->AppendAudit(kRecord).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(f.guard->WriteFault());
  EXPECT_EQ(f.guard->refused_writes(), 0u);
  EXPECT_EQ(f.guard->audit_records_lost(), 1u);  // counted (and logged) all the same
  f.faulty->fault = absl::OkStatus();
  EXPECT_TRUE(f.guard->AppendAudit(kRecord).ok());
  EXPECT_EQ(f.guard->audit_records_lost(), 1u);
}

TEST(DiskFault, ErrnosOfTheDiskAreFaultsNamingTheFile) {
  for (int err : {ENOSPC, EDQUOT, EROFS, EIO, EFBIG}) {
    absl::Status st = FileError("cannot write recording file", "/d/r.rec", err);
    EXPECT_TRUE(IsDiskFault(st)) << st;
    EXPECT_EQ(st.message().substr(0, 37), "cannot write recording file /d/r.rec:");
  }
  absl::Status st = FileError("cannot open", "/d/x", ENOENT);
  EXPECT_FALSE(IsDiskFault(st));
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(IsDiskFault(absl::UnavailableError("not a disk fault")));
}

TEST(DiskFault, AFullSqliteDatabaseIsADiskFaultNamingTheFile) {
  std::string path = FreshDir("sqlite_full") + "/full.db";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  // A page limit gives the SQLITE_FULL a full disk gives.
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA max_page_count = 8; CREATE TABLE t (v BLOB)", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  int rc = SQLITE_OK;
  for (int i = 0; i < 100 && rc == SQLITE_OK; ++i) {
    rc = sqlite3_exec(db, "INSERT INTO t VALUES (zeroblob(4000))", nullptr, nullptr, nullptr);
  }
  ASSERT_EQ(rc, SQLITE_FULL);
  absl::Status st = SqliteError(db);
  EXPECT_TRUE(IsDiskFault(st)) << st;
  EXPECT_EQ(st.message(),
            absl::StrCat(
                "cannot write the store ", path,
                " (or its -wal or -shm file): database or disk is full (No space left on device)"));
  sqlite3_exec(db, "SELECT * FROM nowhere", nullptr, nullptr, nullptr);
  EXPECT_EQ(SqliteError(db).code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(IsDiskFault(SqliteError(db)));
  sqlite3_close(db);
}

TEST(DiskFault, ProbeWriteLeavesNothingBehind) {
  std::string dir = FreshDir("probe");
  EXPECT_TRUE(ProbeWrite(dir + "/probe", 1 << 20).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/probe"));
  EXPECT_FALSE(ProbeWrite(dir + "/missing/probe", 4096).ok());
  auto space = VolumeSpaceOf(dir);
  ASSERT_TRUE(space.ok());
  EXPECT_GT(space->total_bytes, 0u);
  EXPECT_FALSE(space->read_only);
  EXPECT_EQ(FormatBytes(32 << 20), "32.0 MiB");
}

}  // namespace
}  // namespace sluice::controlplane
