#include "controlplane/store/backup.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/store/disk_fault.h"

namespace sluice::controlplane {
namespace {

namespace fs = std::filesystem;

struct DbClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbClose>;

absl::StatusOr<Db> OpenDb(const std::string& path, int flags, absl::string_view what) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(
        absl::StrCat("cannot open ", what, " ", path, ": ",
                     raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db.get(), 10000);
  return db;
}

absl::StatusOr<uint64_t> PolicyVersionOf(sqlite3* db) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'policy_version'", -1, &s,
                         nullptr) != SQLITE_OK) {
    return SqliteError(db, "the copy has no policy version");
  }
  uint64_t version = 0;
  if (sqlite3_step(s) == SQLITE_ROW) version = static_cast<uint64_t>(sqlite3_column_int64(s, 0));
  sqlite3_finalize(s);
  return version;
}

// The database as of one instant: every page in one step of the backup API (one read
// transaction on the source), then checked.
absl::StatusOr<uint64_t> CopyDatabase(const std::string& from, const std::string& to) {
  ASSIGN_OR_RETURN(Db src, OpenDb(from, SQLITE_OPEN_READONLY, "the store"));
  ASSIGN_OR_RETURN(Db dst, OpenDb(to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "the copy"));
  sqlite3_backup* b = sqlite3_backup_init(dst.get(), "main", src.get(), "main");
  if (b == nullptr) return SqliteError(dst.get(), "cannot start the copy");
  int rc;
  do {
    rc = sqlite3_backup_step(b, -1);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(50);
  } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    return absl::UnavailableError(
        absl::StrCat("copying the store to ", to, " failed: ", sqlite3_errstr(rc)));
  }
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(dst.get(), "PRAGMA quick_check", -1, &s, nullptr) != SQLITE_OK) {
    return SqliteError(dst.get(), "cannot check the copy");
  }
  std::string check = sqlite3_step(s) == SQLITE_ROW
                          ? reinterpret_cast<const char*>(sqlite3_column_text(s, 0))
                          : "no answer";
  sqlite3_finalize(s);
  if (check != "ok") {
    return absl::DataLossError(absl::StrCat("the copy of the store fails its check: ", check));
  }
  return PolicyVersionOf(dst.get());
}

}  // namespace

absl::StatusOr<BackupSummary> BackUpStore(const std::string& data_dir, const std::string& dest) {
  const std::string db_path = data_dir + "/sluice.db";
  std::error_code ec;
  if (!fs::is_regular_file(db_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("--backup-to: there is no store (sluice.db) in --data-dir ", data_dir));
  }
  if (fs::exists(dest, ec)) {
    if (!fs::is_directory(dest, ec) || !fs::is_empty(dest, ec)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "--backup-to: ", dest, " exists and is not an empty directory; give a new one"));
    }
  } else if (::mkdir(dest.c_str(), 0700) != 0) {
    return FileError("--backup-to: cannot create the directory", dest, errno);
  }
  // Whatever fails leaves no partial backup that could pass for a whole one.
  bool done = false;
  absl::Cleanup remove_partial = [&] {
    if (done) return;
    std::error_code ignored;
    for (const auto& entry : fs::directory_iterator(dest, ignored)) fs::remove_all(entry, ignored);
  };

  BackupSummary summary;
  ASSIGN_OR_RETURN(summary.policy_version, CopyDatabase(db_path, dest + "/sluice.db"));
  summary.database_bytes = fs::file_size(dest + "/sluice.db", ec);

  const std::string recordings = data_dir + "/recordings";
  if (fs::is_directory(recordings, ec)) {
    const std::string to = dest + "/recordings";
    if (::mkdir(to.c_str(), 0700) != 0) return FileError("cannot create", to, errno);
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(recordings, ec)) {
      if (entry.is_regular_file() && absl::EndsWith(entry.path().filename().string(), ".rec"))
        files.push_back(entry.path());
    }
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot list ", recordings, ": ", ec.message()));
    }
    for (const fs::path& f : files) {
      const std::string target = to + "/" + f.filename().string();
      if (!fs::copy_file(f, target, ec)) {
        return absl::UnavailableError(
            absl::StrCat("cannot copy ", f.string(), " to ", target, ": ", ec.message()));
      }
      ++summary.recording_files;
      summary.recording_bytes += fs::file_size(target, ec);
    }
  }
  done = true;
  return summary;
}

}  // namespace sluice::controlplane
