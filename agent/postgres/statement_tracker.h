// Follows statements through one PostgreSQL session to produce one audit record per statement:
// its text (from Query, or from the Parse of the statement an Execute runs), and its outcome
// (rows, bytes, duration, error) from the backend messages that answer it. Pure: the session
// feeds it the messages it relays; it never changes them.
//
// Simple protocol: one record per Query message (a multi-statement string is one record, its
// rows summed) completed at ReadyForQuery. Extended protocol: one record per Execute, completed
// by CommandComplete / EmptyQueryResponse / PortalSuspended / ErrorResponse; Executes skipped
// by the server after an error (until Sync) are recorded as not executed.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/postgres/fifo.h"

namespace sluice::agent::postgres {

struct StatementRecord {
  // Shared with the prepared statement it came from: executing a prepared statement copies no
  // text.
  std::shared_ptr<const std::string> text;
  bool extended = false;
  absl::Time started;
  absl::Duration duration;
  int64_t rows = 0;                    // from the command tags ("SELECT 3", "INSERT 0 1")
  int64_t row_bytes = 0;               // DataRow bytes returned
  std::string tags;                    // command tags, ';'-joined
  std::string sqlstate;                // set on error
  std::string error;                   // error message, or "not executed ..." for skipped Executes
  bool suspended = false;              // the portal was suspended (row limit reached)
  std::vector<std::string> masked_by;  // MaskingRules that changed rows of its result
  int64_t masked_rows = 0;             // rows changed by masking
};

class StatementTracker {
 public:
  using Sink = std::function<void(StatementRecord&&)>;
  explicit StatementTracker(Sink sink) : sink_(std::move(sink)) {}

  // Frontend messages (payloads as relayed).
  void OnQuery(absl::string_view sql, absl::Time now);
  void OnParse(absl::string_view name, absl::string_view sql);
  void OnBind(absl::string_view portal, absl::string_view statement);
  void OnExecute(absl::string_view portal, absl::Time now);
  void OnCloseStatement(absl::string_view name);

  // Backend messages.
  void OnDataRow(size_t bytes);
  void OnCommandComplete(absl::string_view tag, absl::Time now);
  void OnEmptyQuery(absl::Time now);
  void OnPortalSuspended(absl::Time now);
  void OnError(absl::string_view sqlstate, absl::string_view message, absl::Time now);
  void OnReadyForQuery(absl::Time now);
  // The session ended: whatever is pending is recorded as not completed.
  void Abandon(absl::Time now);

  // Rows of the statement answering now were masked (one more row, under `rules`).
  void OnMaskedRow(const std::vector<std::string>& rules);

  size_t pending() const { return pending_.size(); }
  // The text of the request recorded last (OnQuery / OnExecute), "" when none is pending.
  absl::string_view newest_text() const {
    return pending_.empty() || pending_.back().text == nullptr ? absl::string_view()
                                                               : *pending_.back().text;
  }
  // The text of the prepared statement `name`, or nullptr.
  const std::string* StatementText(absl::string_view name) const {
    auto it = statements_.find(name);
    return it == statements_.end() ? nullptr : it->second.get();
  }
  // The same, shared (nullptr when unknown).
  std::shared_ptr<const std::string> SharedStatementText(absl::string_view name) const {
    auto it = statements_.find(name);
    return it == statements_.end() ? nullptr : it->second;
  }

 private:
  void Finish(absl::Time now);

  Sink sink_;
  Fifo<StatementRecord> pending_;
  absl::flat_hash_map<std::string, std::shared_ptr<const std::string>> statements_;  // name -> text
  absl::flat_hash_map<std::string, std::shared_ptr<const std::string>> portals_;  // portal -> text
  bool failed_in_pipeline_ = false;
};

}  // namespace sluice::agent::postgres
