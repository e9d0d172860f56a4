#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/postgres/lineage_masking.h"
#include "agent/postgres/session_internal.h"
#include "agent/postgres/session_settings.h"

namespace sluice::agent::postgres::session_internal {

using wire::postgres::ParameterStatus;
using wire::postgres::RowDescription;
using wire::postgres::WireReader;

asio::awaitable<absl::StatusOr<Session::BackendStep>> Session::RouteBackend(const RawMessage& m) {
  switch (m.type) {
    case 'D': {
      PendingResult* front = router_.Front();
      if (front == nullptr) co_return BackendStep::kForward;
      if (!front->planned && front->kind == PendingResult::kExecute && front->store &&
          MaskingOn()) {
        absl::string_view described;
        const ResultFormats* formats = nullptr;
        if (!router_.ExecuteDescription(&described, &formats)) {
          co_return absl::InternalError(
              "the columns of this result are unknown, so it cannot be masked");
        }
        if (!PlanFromCache(front, described, formats)) {
          std::string payload(described);
          ResultFormats bind_formats;
          if (formats != nullptr) bind_formats = *formats;
          absl::Status st =
              co_await PlanRows(front, payload, formats != nullptr ? &bind_formats : nullptr);
          if (!st.ok()) co_return st;
        }
      }
      if (!front->planned || !front->plan->active) co_return BackendStep::kForward;
      auto changed = MaskDataRow(m.payload, *front->plan, masking_, &replacement_);
      if (!changed.ok()) co_return changed.status();
      if (!*changed) co_return BackendStep::kForward;
      tracker_.OnMaskedRow(front->plan->rules);
      co_return BackendStep::kReplace;
    }
    case 'T':
    case 'n': {
      if (router_.OnDescription(m.type, m.payload)) co_return BackendStep::kSwallow;
      PendingResult* front = router_.Front();
      if (m.type == 'T' && front != nullptr && front->kind == PendingResult::kQuery &&
          front->store && MaskingOn()) {
        if (!PlanFromCache(front, m.payload, nullptr)) {
          std::string payload(m.payload);
          absl::Status st = co_await PlanRows(front, payload, nullptr);
          if (!st.ok()) co_return st;
        }
      }
      co_return BackendStep::kForward;
    }
    case 'H': {
      PendingResult* front = router_.Front();
      if (front == nullptr) co_return BackendStep::kForward;
      int index = front->copies++;
      if (!front->store || !MaskingOn()) co_return BackendStep::kForward;
      absl::Status st = co_await PlanCopyOut(front, index, m.payload);
      if (!st.ok()) co_return st;
      co_return BackendStep::kForward;
    }
    case 'd': {
      PendingResult* front = router_.Front();
      if (front == nullptr || !front->copy_active) co_return BackendStep::kForward;
      if (front->copy_header_pending) {
        front->copy_header_pending = false;
        co_return BackendStep::kForward;
      }
      auto changed =
          MaskCopyRow(m.payload, *front->plan, front->copy_format, masking_, &replacement_);
      if (!changed.ok()) co_return changed.status();
      if (!*changed) co_return BackendStep::kForward;
      tracker_.OnMaskedRow(front->plan->rules);
      co_return BackendStep::kReplace;
    }
    case 'c': {
      if (PendingResult* front = router_.Front()) front->copy_active = false;
      co_return BackendStep::kForward;
    }
    case 'C':
    case 'I':
    case 's':
      router_.OnCompletion();
      co_return BackendStep::kForward;
    case 'E':
    case 'N':
      co_return RouteErrorOrNotice(m);
    case 'Z':
      router_.OnReady();
      co_return BackendStep::kForward;
    case 'S': {
      // A setting the agent pins changed under it (code it could not see into): the session
      // cannot go on, since the agent would no longer read statements as the server does.
      auto status = ParameterStatus::Decode(m.payload);
      if (!status.ok()) co_return status.status();
      absl::Status problem = ParameterStatusProblem(status->name, status->value, gate_.read_only());
      if (!problem.ok()) {
        co_return absl::FailedPreconditionError(
            absl::StrCat("the session's settings changed in a way the agent does not allow (",
                         problem.message(), "); the session ends"));
      }
      [[fallthrough]];
    }
    case 'A': {
      // Values outside any result: a setting reported back, a notification from any session.
      if (!MaskingOn()) co_return BackendStep::kForward;
      auto changed = MaskSideChannel(m.type, m.payload, masking_, &replacement_);
      if (!changed.ok()) co_return changed.status();
      co_return *changed ? BackendStep::kReplace : BackendStep::kForward;
    }
    default:
      co_return BackendStep::kForward;
  }
}

absl::StatusOr<Session::BackendStep> Session::RouteErrorOrNotice(const RawMessage& m) {
  if (!MaskingOn()) {
    if (m.type == 'E') router_.OnError();
    return BackendStep::kForward;
  }
  // The text of an error or notice can quote a value the statement read: withheld when
  // it reads masked columns.
  if (masking_.has_column_rules()) {
    if (PendingResult* front = router_.Front()) {
      const std::string* text = TextOf(*front);
      if (text != nullptr && !text->empty()) {
        LineageVerdict v = JudgeLineage(Statements().Get(*text), masking_);
        if (v.reads_masked) {
          auto withheld = WithholdErrorOrNotice(m.type, m.payload, v.masked);
          if (m.type == 'E') router_.OnError();
          if (!withheld.ok()) return withheld.status();
          replacement_ = *std::move(withheld);
          return BackendStep::kReplace;
        }
      }
    }
  }
  if (m.type == 'E') router_.OnError();
  auto changed = MaskErrorOrNotice(m.type, m.payload, masking_, &replacement_);
  if (!changed.ok()) return changed.status();
  return *changed ? BackendStep::kReplace : BackendStep::kForward;
}

const std::string& Session::PlanKey(absl::string_view payload, const ResultFormats* formats) {
  plan_key_.assign(payload.data(), payload.size());
  if (formats != nullptr) {
    plan_key_.push_back('\xff');
    for (int16_t f : *formats) plan_key_.push_back(static_cast<char>(f));
  }
  if (!computed_.empty()) {
    plan_key_.push_back('\xfe');
    for (const auto& c : computed_) {
      plan_key_.push_back(c ? static_cast<char>(c->strategy) : '\xfd');
      if (c) plan_key_.append(reinterpret_cast<const char*>(&c->rule), sizeof(c->rule));
    }
  }
  return plan_key_;
}

absl::Status Session::ComputeOverrides(const PendingResult* front, absl::string_view description) {
  computed_.clear();
  if (!masking_.has_column_rules()) return absl::OkStatus();
  const std::string* text = TextOf(*front);
  if (text == nullptr) return absl::OkStatus();
  WireReader r(description);
  int16_t fields = r.Int16();
  if (!r.ok() || fields < 0) return absl::InvalidArgumentError("malformed RowDescription");
  auto computed =
      ComputedColumnStrategies(Statements().Get(*text), masking_, static_cast<size_t>(fields));
  if (!computed.ok()) return computed.status();
  computed_ = *std::move(computed);
  return absl::OkStatus();
}

bool Session::PlanFromCache(PendingResult* front, absl::string_view payload,
                            const ResultFormats* formats) {
  if (!ComputeOverrides(front, payload).ok()) return false;  // PlanRows reports it
  auto it = plan_cache_.find(PlanKey(payload, formats));
  if (it == plan_cache_.end() || it->second.expires <= absl::Now()) return false;
  front->plan = it->second.plan;
  front->planned = true;
  return true;
}

asio::awaitable<absl::Status> Session::PlanRows(PendingResult* front, const std::string& payload,
                                                const ResultFormats* formats) {
  absl::Status placed = ComputeOverrides(front, payload);
  if (!placed.ok()) co_return placed;
  std::string key = PlanKey(payload, formats);
  absl::Time now = absl::Now();
  if (auto it = plan_cache_.find(key); it != plan_cache_.end() && it->second.expires > now) {
    front->plan = it->second.plan;
    front->planned = true;
    co_return absl::OkStatus();
  }
  auto described = RowDescription::Decode(payload);
  if (!described.ok()) co_return described.status();
  std::vector<RowDescription::Field> fields = std::move(described->fields);
  if (formats != nullptr) {
    for (size_t i = 0; i < fields.size(); ++i) {
      fields[i].format = formats->empty()       ? 0
                         : formats->size() == 1 ? (*formats)[0]
                         : i < formats->size()  ? (*formats)[i]
                                                : 0;
    }
  }
  absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>> tables;
  std::vector<uint32_t> oids;
  if (masking_.has_column_rules()) {
    for (const auto& f : fields) {
      if (f.table_oid != 0) oids.push_back(static_cast<uint32_t>(f.table_oid));
    }
  }
  if (!oids.empty()) {
    auto looked_up = co_await catalog_->Tables(oids);
    if (!looked_up.ok()) {
      co_return absl::UnavailableError(absl::StrCat(
          "cannot look up the tables of this result for masking: ", looked_up.status().message()));
    }
    tables = *std::move(looked_up);
  }
  auto plan = std::make_shared<const ResultPlan>(PlanResult(fields, tables, masking_, computed_));
  constexpr size_t kMaxPlans = 256;
  if (plan_cache_.size() >= kMaxPlans) plan_cache_.clear();
  plan_cache_[key] = CachedPlan{plan, now + absl::Minutes(1)};
  front->plan = std::move(plan);
  front->planned = true;
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Session::PlanCopyOut(PendingResult* front, int index,
                                                   absl::string_view payload) {
  const std::string* sql = TextOf(*front);
  std::vector<CopyOutFacts> copies =
      sql != nullptr ? CopyOutputs(*sql) : std::vector<CopyOutFacts>{};
  WireReader r(payload);
  int overall = r.Byte();
  int16_t columns = r.Int16();
  if (!r.ok() || index >= static_cast<int>(copies.size())) {
    co_return absl::InternalError(
        "COPY output this agent cannot match to its statement, so it cannot be masked");
  }
  const CopyOutFacts& f = copies[index];
  if (overall != 0 || f.binary || !f.problem.empty()) {
    co_return absl::InternalError("COPY output in a form this agent cannot mask");
  }
  std::vector<std::string> names = f.columns;
  std::string table = f.relation.table;
  if (f.query) {
    if (masking_.has_column_rules())
      co_return absl::InternalError("COPY (query) output cannot be masked by column");
  } else if (names.empty() && masking_.has_column_rules()) {
    Relation relation = f.relation;
    auto found = co_await catalog_->TableByName(relation);
    if (!found.ok()) co_return found.status();
    if (*found == nullptr)
      co_return absl::InternalError("the table of this COPY cannot be found for masking");
    for (const auto& c : (*found)->columns) {
      if (!c.empty()) names.push_back(c);
    }
  }
  if (masking_.has_column_rules() && !f.query && names.size() != static_cast<size_t>(columns)) {
    co_return absl::InternalError(
        "the columns of this COPY do not match its table's, so it cannot be masked");
  }
  auto plan = std::make_shared<const ResultPlan>(
      PlanCopy(table, names, static_cast<size_t>(columns), masking_));
  front->copy_active = plan->active;
  front->plan = std::move(plan);
  front->copy_header_pending = f.header;
  front->copy_format = CopyFormat{f.csv, f.delimiter, f.null_string, f.quote, f.escape, f.header};
  co_return absl::OkStatus();
}

}  // namespace sluice::agent::postgres::session_internal
