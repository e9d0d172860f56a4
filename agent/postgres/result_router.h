// Which request each result the server sends belongs to, so result rows can be masked by
// column: a simple Query's rows follow their own RowDescription, but an Execute's rows come with
// no description at all (the client got it from an earlier Describe of the statement or portal,
// or never asked). Pure: the session reports what it forwards to the server and what the server
// answers, in order; the router mirrors the server's request queue, including its skipping of
// everything up to Sync after an error.
//
// Descriptions are kept only when asked to (masking on): otherwise the router only counts.
// When masking is on and an Execute's columns would be unknown, the session asks the server
// itself (a Describe of the portal sent just before the Execute, whose answer the client does
// not see).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/postgres/fifo.h"
#include "agent/postgres/result_masking.h"
#include "common/wire/postgres/messages.h"

namespace sluice::agent::postgres {

// A Bind's result format codes (0 text, 1 binary): none, one for all columns, or one each.
using ResultFormats = absl::InlinedVector<int16_t, 4>;

// A request the server will answer, and the state of its answer while it streams.
struct PendingResult {
  enum Kind { kQuery, kExecute, kDescribeStatement, kDescribePortal, kSync, kFunctionCall };
  Kind kind = kQuery;
  bool store =
      false;  // masking was on when it was forwarded: Describe keeps its answer, Query its text
  bool injected = false;  // Describe sent by the agent: the client never sees its answer
  uint64_t id = 0;  // Describe statement: the Parse's id; Describe portal, Execute: the Bind's id
  uint64_t parse_id = 0;                    // Execute: the statement's Parse
  std::string sql;                          // Query (when stored): the text, for COPY
  std::shared_ptr<const std::string> text;  // Execute: the statement's text, for COPY
  ResultFormats formats;                    // Execute: the Bind's result formats

  // The result streaming now (a statement of a Query, or an Execute).
  bool planned = false;
  std::shared_ptr<const ResultPlan> plan;  // set when planned
  int copies = 0;                          // COPY TO STDOUT results seen so far in this request
  bool copy_active = false;
  bool copy_header_pending = false;
  CopyFormat copy_format;
};

class ResultRouter {
 public:
  // Frontend messages, as forwarded to the server (payloads as sent). `store`: masking is on.
  void OnQuery(absl::string_view sql, bool store);
  void OnParse(absl::string_view name);
  void OnBind(absl::string_view payload, std::shared_ptr<const std::string> text);
  void OnDescribe(absl::string_view payload, bool store);
  void OnClose(absl::string_view payload);
  // Whether the Execute of `portal` about to be forwarded would have unknown columns.
  bool NeedsDescribe(absl::string_view portal) const;
  // The agent's own Describe of `portal`, forwarded just before its Execute.
  void OnInjectedDescribe(absl::string_view portal);
  void OnExecute(absl::string_view portal);
  void OnSync();
  void OnFunctionCall();

  // Backend messages. The request their answer belongs to, or nullptr when none is expected.
  PendingResult* Front() { return pending_.empty() ? nullptr : &pending_.front(); }
  // 'T' or 'n' (payload empty): answers a Describe (stored when asked) or belongs to the Query
  // in front. Returns true when the message answers the agent's own Describe (not forwarded).
  bool OnDescription(char type, absl::string_view payload);
  // The description of the Execute in front: the RowDescription payload (empty for NoData), and
  // the Bind's result formats when the description is the statement's (whose formats are all
  // 0), else nullptr. False when unknown.
  bool ExecuteDescription(absl::string_view* payload, const ResultFormats** formats);
  // 'C', 'I', 's': a statement or portal run ended.
  void OnCompletion();
  void OnError();
  void OnReady();

  size_t pending() const { return pending_.size(); }

 private:
  struct Statement {
    uint64_t parse_id = 0;
    bool described = false;  // a stored Describe of it was sent
  };
  struct Portal {
    uint64_t bind_id = 0;
    uint64_t parse_id = 0;
    bool described = false;  // a stored Describe of it (or of its statement) was sent
    ResultFormats formats;
    std::shared_ptr<const std::string> text;
  };
  void Prune();

  Fifo<PendingResult> pending_;
  uint64_t next_id_ = 0;
  absl::flat_hash_map<std::string, Statement> statements_;
  absl::flat_hash_map<std::string, Portal> portals_;
  // RowDescription payloads by Parse / Bind id ("" for NoData).
  absl::flat_hash_map<uint64_t, std::string> statement_fields_;
  absl::flat_hash_map<uint64_t, std::string> portal_fields_;
};

}  // namespace sluice::agent::postgres
