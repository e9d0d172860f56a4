#include "agent/postgres/result_router.h"

#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres {

using wire::postgres::WireReader;

namespace {

constexpr size_t kMaxNames = 10000;

}  // namespace

void ResultRouter::OnQuery(absl::string_view sql, bool store) {
  PendingResult& p = pending_.emplace_back();
  p.kind = PendingResult::kQuery;
  p.store = store;
  if (store) p.sql = std::string(sql);
}

void ResultRouter::OnParse(absl::string_view name) {
  if (statements_.size() >= kMaxNames && !statements_.contains(name)) statements_.clear();
  Statement& s = statements_[name];
  s.parse_id = ++next_id_;
  s.described = false;
}

void ResultRouter::OnBind(absl::string_view payload, std::shared_ptr<const std::string> text) {
  WireReader r(payload);
  absl::string_view portal = r.CStringView();
  absl::string_view statement = r.CStringView();
  int16_t n = r.Int16();
  for (int i = 0; i < n && r.ok(); ++i) r.Int16();
  n = r.Int16();
  for (int i = 0; i < n && r.ok(); ++i) {
    int32_t len = r.Int32();
    if (len > 0) r.Skip(static_cast<size_t>(len));
  }
  ResultFormats formats;
  n = r.Int16();
  for (int i = 0; i < n && r.ok(); ++i) formats.push_back(r.Int16());
  if (portals_.size() >= kMaxNames && !portals_.contains(portal)) portals_.clear();
  Portal& p = portals_[portal];
  p.bind_id = ++next_id_;
  auto it = statements_.find(statement);
  p.parse_id = it != statements_.end() ? it->second.parse_id : 0;
  p.described = it != statements_.end() && it->second.described;
  p.formats = r.ok() ? std::move(formats) : ResultFormats{};
  p.text = std::move(text);
}

void ResultRouter::OnDescribe(absl::string_view payload, bool store) {
  WireReader r(payload);
  char target = static_cast<char>(r.Byte());
  absl::string_view name = r.CStringView();
  PendingResult& p = pending_.emplace_back();
  p.store = store;
  if (target == 'S') {
    p.kind = PendingResult::kDescribeStatement;
    auto it = statements_.find(name);
    if (it != statements_.end()) {
      p.id = it->second.parse_id;
      if (store) it->second.described = true;
    }
  } else {
    p.kind = PendingResult::kDescribePortal;
    auto it = portals_.find(name);
    if (it != portals_.end()) {
      p.id = it->second.bind_id;
      if (store) it->second.described = true;
    }
  }
}

void ResultRouter::OnClose(absl::string_view payload) {
  WireReader r(payload);
  char target = static_cast<char>(r.Byte());
  absl::string_view name = r.CStringView();
  if (target == 'S') {
    statements_.erase(name);
  } else {
    portals_.erase(name);
  }
}

bool ResultRouter::NeedsDescribe(absl::string_view portal) const {
  auto it = portals_.find(portal);
  return it != portals_.end() && !it->second.described;
}

void ResultRouter::OnInjectedDescribe(absl::string_view portal) {
  PendingResult& p = pending_.emplace_back();
  p.kind = PendingResult::kDescribePortal;
  p.store = true;
  p.injected = true;
  auto it = portals_.find(portal);
  if (it != portals_.end()) {
    p.id = it->second.bind_id;
    it->second.described = true;
  }
}

void ResultRouter::OnExecute(absl::string_view portal) {
  PendingResult& p = pending_.emplace_back();
  p.kind = PendingResult::kExecute;
  auto it = portals_.find(portal);
  if (it != portals_.end()) {
    p.id = it->second.bind_id;
    p.parse_id = it->second.parse_id;
    p.formats = it->second.formats;
    p.text = it->second.text;
  }
  p.store = it != portals_.end() && it->second.described;
}

void ResultRouter::OnSync() {
  PendingResult& p = pending_.emplace_back();
  p.kind = PendingResult::kSync;
}

void ResultRouter::OnFunctionCall() {
  PendingResult& p = pending_.emplace_back();
  p.kind = PendingResult::kFunctionCall;
}

bool ResultRouter::OnDescription(char type, absl::string_view payload) {
  if (pending_.empty()) return false;
  PendingResult& front = pending_.front();
  if (front.kind != PendingResult::kDescribeStatement &&
      front.kind != PendingResult::kDescribePortal) {
    return false;  // a Query's own RowDescription, or an Execute's (none is sent): the caller's
  }
  bool injected = front.injected;
  if (front.store && front.id != 0) {
    auto& map =
        front.kind == PendingResult::kDescribeStatement ? statement_fields_ : portal_fields_;
    map[front.id] = type == 'T' ? std::string(payload) : std::string();
  }
  pending_.pop_front();
  return injected;
}

bool ResultRouter::ExecuteDescription(absl::string_view* payload, const ResultFormats** formats) {
  if (pending_.empty() || pending_.front().kind != PendingResult::kExecute) return false;
  const PendingResult& front = pending_.front();
  if (auto it = portal_fields_.find(front.id); front.id != 0 && it != portal_fields_.end()) {
    *payload = it->second;
    *formats = nullptr;
    return true;
  }
  auto it = statement_fields_.find(front.parse_id);
  if (front.parse_id == 0 || it == statement_fields_.end()) return false;
  *payload = it->second;
  *formats = &front.formats;
  return true;
}

void ResultRouter::OnCompletion() {
  if (pending_.empty()) return;
  PendingResult& front = pending_.front();
  if (front.kind == PendingResult::kExecute) {
    pending_.pop_front();
  } else if (front.kind == PendingResult::kQuery) {
    front.planned = false;  // the next statement of the string brings its own RowDescription
    front.plan.reset();
    front.copy_active = false;
  }
}

void ResultRouter::OnError() {
  if (pending_.empty()) return;
  PendingResult::Kind k = pending_.front().kind;
  if (k == PendingResult::kQuery || k == PendingResult::kFunctionCall || k == PendingResult::kSync)
    return;
  // The server skips everything up to the next Sync.
  while (!pending_.empty() && pending_.front().kind != PendingResult::kSync) pending_.pop_front();
}

void ResultRouter::OnReady() {
  while (!pending_.empty()) {
    PendingResult::Kind k = pending_.front().kind;
    pending_.pop_front();
    if (k == PendingResult::kSync || k == PendingResult::kQuery ||
        k == PendingResult::kFunctionCall)
      break;
  }
  if (pending_.empty()) Prune();
}

void ResultRouter::Prune() {
  // Descriptions no statement or portal refers to any more (nothing is in flight now).
  if (statement_fields_.size() > statements_.size()) {
    absl::flat_hash_map<uint64_t, bool> live;
    for (const auto& [name, s] : statements_) live[s.parse_id] = true;
    for (const auto& [name, p] : portals_) live[p.parse_id] = true;
    absl::erase_if(statement_fields_, [&](const auto& e) { return !live.contains(e.first); });
  }
  if (portal_fields_.size() > portals_.size()) {
    absl::flat_hash_map<uint64_t, bool> live;
    for (const auto& [name, p] : portals_) live[p.bind_id] = true;
    absl::erase_if(portal_fields_, [&](const auto& e) { return !live.contains(e.first); });
  }
}

}  // namespace sluice::agent::postgres
