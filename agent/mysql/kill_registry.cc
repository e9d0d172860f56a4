#include "agent/mysql/kill_registry.h"

#include "absl/strings/numbers.h"
#include "agent/mysql/sql_lexer.h"

namespace sluice::agent::mysql {

void KillRegistry::Register(uint32_t agent_id, KillTarget target) {
  absl::MutexLock lock(&mu_);
  entries_[agent_id] = std::move(target);
}

void KillRegistry::Unregister(uint32_t agent_id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(agent_id);
}

std::optional<KillTarget> KillRegistry::Lookup(uint32_t agent_id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(agent_id);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> KillRegistry::OnlyConnectionOf(absl::string_view issuer,
                                                          absl::string_view subject) const {
  absl::MutexLock lock(&mu_);
  std::optional<std::string> found;
  for (const auto& [id, target] : entries_) {
    if (target.issuer != issuer || target.subject != subject) continue;
    if (found && *found != target.connection) return std::nullopt;
    found = target.connection;
  }
  return found;
}

std::optional<KillRequest> ParseKill(const std::string& sql, const LexMode& mode) {
  LexResult lexed = Lex(sql, mode);
  if (!lexed.error.empty()) return std::nullopt;
  auto& t = lexed.tokens;
  while (!t.empty() && t.back().IsPunct(";")) t.pop_back();
  size_t i = 0;
  if (i >= t.size() || !t[i].IsWord("kill")) return std::nullopt;
  ++i;
  if (i < t.size() && (t[i].IsWord("hard") || t[i].IsWord("soft"))) ++i;
  KillRequest request;
  if (i < t.size() && t[i].IsWord("query")) {
    request.query_only = true;
    ++i;
  } else if (i < t.size() && t[i].IsWord("connection")) {
    ++i;
  }
  if (i + 1 != t.size() || t[i].kind != TokenKind::kNumber) return std::nullopt;
  if (!absl::SimpleAtoi(t[i].text, &request.id)) return std::nullopt;
  return request;
}

}  // namespace sluice::agent::mysql
