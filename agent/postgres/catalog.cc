#include "agent/postgres/catalog.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/wire/postgres/messages.h"

namespace sluice::agent::postgres {

using wire::postgres::DataRow;
using wire::postgres::DecodeLimits;
using wire::postgres::Direction;
using wire::postgres::ErrorOrNotice;

namespace {

constexpr absl::Duration kCacheTtl = absl::Minutes(1);
constexpr size_t kMaxCacheEntries = 100000;
constexpr size_t kMaxOidsPerQuery = 1000;

std::string CacheKey(const std::string& scope, uint32_t oid) {
  return absl::StrCat(scope, "#", oid);
}

// "name" as a quoted identifier inside a string literal (standard_conforming_strings is on in
// the side connection: the agent never changes it).
std::string QuotedIdentifierLiteral(absl::string_view name) {
  std::string ident = absl::StrCat("\"", absl::StrReplaceAll(name, {{"\"", "\"\""}}), "\"");
  return absl::StrReplaceAll(ident, {{"'", "''"}});
}

constexpr char kSelect[] =
    "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT "
    "a.attisdropped "
    "WHERE ";

}  // namespace

CatalogCache& CatalogCache::Instance() {
  static CatalogCache* cache = new CatalogCache();
  return *cache;
}

std::shared_ptr<const TableNames> CatalogCache::Find(const std::string& scope, uint32_t oid,
                                                     absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(CacheKey(scope, oid));
  if (it == entries_.end() || it->second.expires <= now) return nullptr;
  return it->second.names;
}

void CatalogCache::Put(const std::string& scope, uint32_t oid,
                       std::shared_ptr<const TableNames> names, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (entries_.size() >= kMaxCacheEntries) entries_.clear();
  entries_[CacheKey(scope, oid)] = Entry{std::move(names), now + kCacheTtl};
}

CatalogResolver::CatalogResolver(UpstreamTarget target, UpstreamLogin login, DecodeLimits limits)
    : target_(std::move(target)), login_(std::move(login)), limits_(limits) {
  scope_ = absl::StrCat(target_.host, ":", target_.port, "/", login_.database);
  login_.parameters = {{"application_name", "sluice-catalog"}};
}

CatalogResolver::~CatalogResolver() {
  if (side_.stream) side_.stream->Close();
}

asio::awaitable<absl::StatusOr<absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>>>>
CatalogResolver::Tables(const std::vector<uint32_t>& oids) {
  absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>> found;
  std::vector<std::string> missing;
  absl::Time now = absl::Now();
  for (uint32_t oid : oids) {
    if (oid == 0 || found.contains(oid)) continue;
    auto names = CatalogCache::Instance().Find(scope_, oid, now);
    if (names != nullptr) {
      found[oid] = std::move(names);
    } else if (missing.size() < kMaxOidsPerQuery) {
      missing.push_back(absl::StrCat(oid));
    }
  }
  if (missing.empty()) co_return found;
  std::string sql = absl::StrCat(kSelect, "c.oid IN (", absl::StrJoin(missing, ","), ")");
  auto looked_up = co_await Query(sql);
  if (!looked_up.ok()) co_return looked_up.status();
  for (auto& [oid, names] : *looked_up) {
    CatalogCache::Instance().Put(scope_, oid, names, now);
    found[oid] = names;
  }
  co_return found;
}

asio::awaitable<absl::StatusOr<std::shared_ptr<const TableNames>>> CatalogResolver::TableByName(
    const Relation& relation) {
  std::string name = relation.schema.empty()
                         ? QuotedIdentifierLiteral(relation.table)
                         : absl::StrCat(QuotedIdentifierLiteral(relation.schema), ".",
                                        QuotedIdentifierLiteral(relation.table));
  std::string sql = absl::StrCat(kSelect, "c.oid = pg_catalog.to_regclass('", name, "')");
  auto looked_up = co_await Query(sql);
  if (!looked_up.ok()) co_return looked_up.status();
  if (looked_up->empty()) co_return std::shared_ptr<const TableNames>();
  co_return looked_up->begin()->second;
}

asio::awaitable<absl::StatusOr<std::optional<FunctionNames>>> CatalogResolver::Function(
    uint32_t oid) {
  std::string sql = absl::StrCat(
      "SELECT n.nspname, p.proname, p.provolatile FROM pg_catalog.pg_proc p "
      "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = ",
      oid);
  auto rows = co_await Rows(sql);
  if (!rows.ok()) co_return rows.status();
  if (rows->empty()) co_return std::optional<FunctionNames>();
  const Row& row = rows->front();
  if (row.size() != 3 || !row[0] || !row[1] || !row[2] || row[2]->size() != 1) {
    co_return absl::InternalError("unexpected function lookup answer");
  }
  co_return FunctionNames{*row[0], *row[1], (*row[2])[0]};
}

asio::awaitable<absl::StatusOr<std::vector<CatalogResolver::Row>>> CatalogResolver::Rows(
    const std::string& sql) {
  if (!side_.stream) {
    asio::any_io_executor executor = co_await asio::this_coro::executor;
    auto up = co_await ConnectUpstream(executor, target_, login_, limits_);
    if (!up.ok()) co_return up.status();
    side_ = *std::move(up);
  }
  std::string query = wire::postgres::Query{sql}.Encode();
  absl::Status st = co_await side_.stream->Write(query);
  if (!st.ok()) co_return st;
  std::vector<Row> rows;
  std::string error;
  while (true) {
    auto m = co_await side_.stream->ReadMessage(false, Direction::kBackend, limits_);
    if (!m.ok()) co_return m.status();
    if (m->type == 'Z') break;
    if (m->type == 'E') {
      auto e = ErrorOrNotice::Decode(m->payload);
      error = e.ok() ? e->Get('M').value_or("error") : "error";
      continue;
    }
    if (m->type != 'D') continue;
    auto row = DataRow::Decode(m->payload);
    if (!row.ok()) co_return absl::InternalError("unexpected catalog query answer");
    rows.push_back(std::move(row->values));
  }
  if (!error.empty()) co_return absl::InternalError(absl::StrCat("catalog query failed: ", error));
  co_return rows;
}

asio::awaitable<absl::StatusOr<absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>>>>
CatalogResolver::Query(const std::string& sql) {
  auto rows = co_await Rows(sql);
  if (!rows.ok()) co_return rows.status();
  absl::flat_hash_map<uint32_t, std::shared_ptr<TableNames>> building;
  for (const Row& row : *rows) {
    if (row.size() != 5 || !row[0] || !row[1] || !row[2]) {
      co_return absl::InternalError("unexpected catalog query answer");
    }
    uint32_t oid = 0;
    if (!absl::SimpleAtoi(*row[0], &oid)) co_return absl::InternalError("unexpected table OID");
    auto& names = building[oid];
    if (names == nullptr) {
      names = std::make_shared<TableNames>();
      names->schema = *row[1];
      names->table = *row[2];
    }
    int attnum = 0;
    if (row[3] && row[4] && absl::SimpleAtoi(*row[3], &attnum) && attnum >= 1 &&
        attnum <= 1664) {  // MaxHeapAttributeNumber
      if (names->columns.size() < static_cast<size_t>(attnum)) names->columns.resize(attnum);
      names->columns[attnum - 1] = *row[4];
    }
  }
  absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>> out;
  for (auto& [oid, names] : building) out[oid] = std::move(names);
  co_return out;
}

}  // namespace sluice::agent::postgres
