#include "agent/postgres/statement_tracker.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sluice::agent::postgres {
namespace {

// Clients that never Close their statements must not grow the agent without bound.
constexpr size_t kMaxNamedStatements = 10000;
constexpr size_t kMaxPendingStatements = 100000;

// Rows affected or returned, from a command tag ("SELECT 3", "INSERT 0 1", "UPDATE 2").
int64_t RowsOf(absl::string_view tag) {
  size_t space = tag.rfind(' ');
  int64_t n = 0;
  if (space != absl::string_view::npos && absl::SimpleAtoi(tag.substr(space + 1), &n)) return n;
  return 0;
}

const std::shared_ptr<const std::string>& Empty() {
  static const auto* empty =
      new std::shared_ptr<const std::string>(std::make_shared<const std::string>());
  return *empty;
}

}  // namespace

void StatementTracker::OnQuery(absl::string_view sql, absl::Time now) {
  if (pending_.size() >= kMaxPendingStatements) return;
  StatementRecord& r = pending_.emplace_back();
  r.text = std::make_shared<const std::string>(sql);
  r.started = now;
}

void StatementTracker::OnParse(absl::string_view name, absl::string_view sql) {
  auto it = statements_.find(name);
  if (it != statements_.end()) {
    // Drivers re-parse the same unnamed statement for every execution: keep the text object
    // (and whatever is cached by it) when the text is unchanged.
    if (*it->second != sql) it->second = std::make_shared<const std::string>(sql);
    return;
  }
  if (!name.empty() && statements_.size() >= kMaxNamedStatements) return;
  statements_.emplace(std::string(name), std::make_shared<const std::string>(sql));
}

void StatementTracker::OnBind(absl::string_view portal, absl::string_view statement) {
  auto it = statements_.find(statement);
  if (portals_.size() >= kMaxNamedStatements && !portals_.contains(portal)) return;
  portals_[portal] = it == statements_.end() ? Empty() : it->second;
}

void StatementTracker::OnExecute(absl::string_view portal, absl::Time now) {
  if (pending_.size() >= kMaxPendingStatements) return;
  StatementRecord& r = pending_.emplace_back();
  auto it = portals_.find(portal);
  r.text = it == portals_.end() ? Empty() : it->second;
  r.extended = true;
  r.started = now;
}

void StatementTracker::OnCloseStatement(absl::string_view name) { statements_.erase(name); }

void StatementTracker::OnDataRow(size_t bytes) {
  if (!pending_.empty()) pending_.front().row_bytes += static_cast<int64_t>(bytes);
}

void StatementTracker::OnMaskedRow(const std::vector<std::string>& rules) {
  if (pending_.empty()) return;
  StatementRecord& r = pending_.front();
  ++r.masked_rows;
  for (const auto& rule : rules) {
    if (std::find(r.masked_by.begin(), r.masked_by.end(), rule) == r.masked_by.end())
      r.masked_by.push_back(rule);
  }
}

void StatementTracker::OnCommandComplete(absl::string_view tag, absl::Time now) {
  if (pending_.empty()) return;
  StatementRecord& r = pending_.front();
  r.rows += RowsOf(tag);
  absl::StrAppend(&r.tags, r.tags.empty() ? "" : ";", tag);
  if (r.extended) Finish(now);
}

void StatementTracker::OnEmptyQuery(absl::Time now) {
  if (!pending_.empty() && pending_.front().extended) Finish(now);
}

void StatementTracker::OnPortalSuspended(absl::Time now) {
  if (pending_.empty()) return;
  pending_.front().suspended = true;
  if (pending_.front().extended) Finish(now);
}

void StatementTracker::OnError(absl::string_view sqlstate, absl::string_view message,
                               absl::Time now) {
  if (pending_.empty()) return;
  StatementRecord& r = pending_.front();
  r.sqlstate = std::string(sqlstate);
  r.error = std::string(message);
  if (r.extended) {
    Finish(now);
    failed_in_pipeline_ = true;
  }
}

void StatementTracker::OnReadyForQuery(absl::Time now) {
  // A simple Query ends here; extended Executes still pending were skipped after an error.
  while (!pending_.empty()) {
    StatementRecord& r = pending_.front();
    if (r.extended && r.error.empty() && r.tags.empty()) {
      r.error = failed_in_pipeline_ ? "not executed: an earlier statement in the pipeline failed"
                                    : "no result before ReadyForQuery";
    }
    Finish(now);
  }
  failed_in_pipeline_ = false;
  portals_.erase("");  // the unnamed portal does not survive the transaction step
}

void StatementTracker::Abandon(absl::Time now) {
  while (!pending_.empty()) {
    if (pending_.front().error.empty())
      pending_.front().error = "the session ended before the statement completed";
    Finish(now);
  }
}

void StatementTracker::Finish(absl::Time now) {
  StatementRecord r = std::move(pending_.front());
  pending_.pop_front();
  r.duration = now - r.started;
  sink_(std::move(r));
}

}  // namespace sluice::agent::postgres
