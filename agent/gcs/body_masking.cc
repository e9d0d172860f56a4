#include "agent/gcs/body_masking.h"

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice::agent::gcs {

using Outcome = masking::MaskingPolicy::Outcome;

bool SearchableContentType(absl::string_view content_type) {
  std::string type = absl::AsciiStrToLower(content_type.substr(0, content_type.find(';')));
  absl::StripAsciiWhitespace(&type);
  if (absl::StartsWith(type, "text/")) return true;
  for (const char* t :
       {"application/json", "application/x-ndjson", "application/ndjson", "application/jsonl",
        "application/csv", "application/xml", "application/yaml", "application/x-yaml"}) {
    if (type == t) return true;
  }
  return absl::EndsWith(type, "+json") || absl::EndsWith(type, "+xml");
}

namespace {

void DropHashes(nlohmann::json& j) {
  if (j.is_object()) {
    j.erase("md5Hash");
    j.erase("crc32c");
    for (auto& [key, value] : j.items()) DropHashes(value);
  } else if (j.is_array()) {
    for (auto& value : j) DropHashes(value);
  }
}

}  // namespace

absl::StatusOr<int64_t> MaskJsonAnswer(const masking::MaskingPolicy& policy, std::string* body,
                                       bool drop_hashes) {
  if (body->empty()) return 0;
  std::string masked;
  const Outcome o = policy.MaskText(*body, &masked, /*json=*/true);
  if (o == Outcome::kNull) {
    return absl::FailedPreconditionError(
        "a value in the answer is masked by a rule whose strategy is null, which a JSON answer "
        "cannot show");
  }
  if (drop_hashes) {
    nlohmann::json j = nlohmann::json::parse(o == Outcome::kReplaced ? masked : *body, nullptr,
                                             /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return absl::FailedPreconditionError(
          "the service's JSON answer could not be read to mask it");
    }
    DropHashes(j);
    *body = j.dump();
  } else if (o == Outcome::kReplaced) {
    *body = std::move(masked);
  }
  return o == Outcome::kReplaced ? 1 : 0;
}

absl::Status LineMasker::MaskLine(absl::string_view line, std::string* out) {
  const Outcome o = policy_->MaskText(line, &scratch_, /*json=*/false);
  if (o == Outcome::kNull) {
    return absl::FailedPreconditionError(
        "a line of the object is masked by a rule whose strategy is null, which an object's bytes "
        "cannot show");
  }
  if (o == Outcome::kReplaced) {
    ++masked_lines_;
    out->append(scratch_);
  } else {
    out->append(line.data(), line.size());
  }
  return absl::OkStatus();
}

absl::Status LineMasker::Feed(absl::string_view data, std::string* out) {
  while (!data.empty()) {
    const size_t eol = data.find('\n');
    const size_t take = eol == absl::string_view::npos ? data.size() : eol;
    if (pending_.size() + take > max_line_) {
      return absl::FailedPreconditionError(
          absl::StrCat("a line of the object is over ", max_line_,
                       " bytes, more than the agent searches at once"));
    }
    pending_.append(data.data(), take);
    if (eol == absl::string_view::npos) break;
    data.remove_prefix(eol + 1);
    absl::Status s = MaskLine(pending_, out);
    if (!s.ok()) return s;
    out->push_back('\n');
    pending_.clear();
  }
  return absl::OkStatus();
}

absl::Status LineMasker::Finish(std::string* out) {
  if (pending_.empty()) return absl::OkStatus();
  absl::Status s = MaskLine(pending_, out);
  pending_.clear();
  return s;
}

}  // namespace sluice::agent::gcs
