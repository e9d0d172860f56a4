// What a MySQL client's KILL names. Each session's greeting gives the agent's own connection id;
// the mariadb CLI's Ctrl-C opens a second connection and sends `KILL QUERY <that id>`. The
// registry maps the agent's ids to the upstream thread each session runs on, and to who owns the
// session, so that a KILL stops the right statement and only one of the caller's own sessions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/mysql/sql_lexer.h"

namespace sluice::agent::mysql {

struct KillTarget {
  std::string connection;  // the Connection's name
  std::string issuer;      // who owns the session
  std::string subject;
  uint32_t upstream_thread = 0;  // the server's id of the session's upstream connection
  // Withdraws a statement the session holds for approval (true when there was one); any thread.
  std::function<bool()> cancel_hold;
};

class KillRegistry {
 public:
  void Register(uint32_t agent_id, KillTarget target);
  void Unregister(uint32_t agent_id);
  std::optional<KillTarget> Lookup(uint32_t agent_id) const;
  // The Connection that the caller `issuer` / `subject` has sessions on, when they are all on
  // one; nullopt when the caller has none, or has sessions on several.
  std::optional<std::string> OnlyConnectionOf(absl::string_view issuer,
                                              absl::string_view subject) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint32_t, KillTarget> entries_ ABSL_GUARDED_BY(mu_);
};

// A KILL statement's target: `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`. nullopt for any other
// form (KILL QUERY ID, KILL USER, an expression).
struct KillRequest {
  bool query_only = false;  // KILL QUERY: the statement, not the connection
  uint32_t id = 0;
};
std::optional<KillRequest> ParseKill(const std::string& sql, const LexMode& mode);

}  // namespace sluice::agent::mysql
