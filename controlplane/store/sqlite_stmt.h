// A prepared SQLite statement that finalizes itself (Bind* take 1-based indexes), for the store
// and its migrations; or one borrowed from a StmtCache, which is reset instead.
#pragma once

#include <sqlite3.h>

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "controlplane/store/disk_fault.h"

namespace sluice::controlplane {

// Statements prepared once for the life of a connection, for hot paths (event ingest runs the
// same few statements for every batch; preparing them each time was 6% of its time). Keyed by the
// address of the SQL text, which must be a string literal. Not thread-safe: the owner's lock
// guards it, and a statement is borrowed by one Stmt at a time. Clear() before the connection
// is closed.
class StmtCache {
 public:
  explicit StmtCache(sqlite3* db) : db_(db) {}
  ~StmtCache() { Clear(); }
  StmtCache(const StmtCache&) = delete;
  StmtCache& operator=(const StmtCache&) = delete;

  // The prepared statement for `sql` (prepared now on first use; null with *rc set on failure).
  sqlite3_stmt* Get(const char* sql, int* rc) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) {
      *rc = SQLITE_OK;
      return it->second;
    }
    sqlite3_stmt* stmt = nullptr;
    *rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
    if (*rc != SQLITE_OK) return nullptr;
    stmts_.emplace(sql, stmt);
    return stmt;
  }
  void Clear() {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    stmts_.clear();
  }

 private:
  sqlite3* db_;
  absl::flat_hash_map<const char*, sqlite3_stmt*> stmts_;
};

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  // Borrows the cache's statement for `sql`; it is reset (and its bindings cleared) when this
  // Stmt ends, however the caller returns.
  Stmt(sqlite3* db, StmtCache& cache, const char* sql) : db_(db), cached_(true) {
    stmt_ = cache.Get(sql, &rc_);
  }
  ~Stmt() {
    if (!cached_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_ != nullptr) {
      Reset();
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return SqliteError(db_, absl::StrCat("prepare: ", sqlite3_errmsg(db_)));
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, absl::string_view v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // Without a copy: `v` must stay valid until the statement is reset or ends.
  Stmt& BindBlobNoCopy(int i, absl::string_view v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  // Makes the statement ready to run again with new bindings.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  // A failure to write the database's files is a disk fault (disk_fault.h).
  absl::Status Run() {
    RETURN_IF_ERROR(status());
    int rc = Step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqliteError(db_);
    return absl::OkStatus();
  }
  std::string Text(int col) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p == nullptr ? std::string()
                        : std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
  bool cached_ = false;
};

}  // namespace sluice::controlplane
