#include "agent/masking/policy.h"

#include <fnmatch.h>

#include <array>

#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "common/policy/selectors.h"

namespace sluice::agent::masking {
namespace {

constexpr Detector kAllDetectors[] = {Detector::kEmail, Detector::kCreditCard, Detector::kUsSsn,
                                      Detector::kPhone, Detector::kIban,       Detector::kSecret};

int Rank(v1::MaskingStrategy s) {
  switch (s) {
    case v1::MASKING_STRATEGY_NULL:
      return 4;
    case v1::MASKING_STRATEGY_REDACT:
      return 3;
    case v1::MASKING_STRATEGY_HASH:
      return 2;
    case v1::MASKING_STRATEGY_PARTIAL:
      return 1;
    default:
      return 3;  // unspecified is refused by validation; treated as redact
  }
}

bool Glob(const std::string& pattern, absl::string_view name) {
  std::string lower = absl::AsciiStrToLower(name);
  return fnmatch(pattern.c_str(), lower.c_str(), 0) == 0;
}

// Compiled detector sets are shared by every session that uses the same set: compiling the
// patterns costs far more than a short session.
std::shared_ptr<const Detectors> SharedDetectors(unsigned mask) {
  static absl::Mutex mu;
  static std::array<std::shared_ptr<const Detectors>, 64> cache ABSL_GUARDED_BY(mu);
  absl::MutexLock lock(&mu);
  auto& entry = cache[mask & 63];
  if (entry == nullptr) {
    std::vector<Detector> enabled;
    for (Detector d : kAllDetectors) {
      if (mask & (1u << static_cast<int>(d))) enabled.push_back(d);
    }
    entry = std::make_shared<const Detectors>(enabled);
  }
  return entry;
}

}  // namespace

v1::MaskingStrategy Stricter(v1::MaskingStrategy a, v1::MaskingStrategy b) {
  return Rank(b) > Rank(a) ? b : a;
}

MaskingPolicy::MaskingPolicy(const v1::PolicySnapshot& snapshot, const v1::Connection& connection,
                             const std::string& issuer_name, const std::string& subject,
                             const std::vector<std::string>& groups) {
  key_.key = snapshot.masking_hash_key();
  unsigned mask = 0;
  for (const auto& rule : snapshot.masking_rules()) {
    if (!policy::SelectsConnection(rule.connections(), connection)) continue;
    const auto& exempt = rule.exempt();
    if ((!exempt.subjects().empty() || !exempt.groups().empty()) &&
        policy::SelectsCaller(exempt, issuer_name, subject, groups)) {
      continue;
    }
    for (const auto& c : rule.columns()) {
      size_t dot = c.find('.');
      if (dot == std::string::npos) continue;  // refused by validation
      columns_.push_back(ColumnPattern{absl::AsciiStrToLower(c.substr(0, dot)),
                                       absl::AsciiStrToLower(c.substr(dot + 1)), rule.strategy(),
                                       rule.name()});
    }
    bool any = false;
    for (const auto& name : rule.detectors()) {
      auto d = DetectorByName(name);
      if (!d) continue;  // refused by validation
      int i = static_cast<int>(*d);
      by_detector_[i] =
          (mask & (1u << i)) ? Stricter(by_detector_[i], rule.strategy()) : rule.strategy();
      mask |= 1u << i;
      any = true;
    }
    if (any) detector_rules_.push_back(rule.name());
  }
  if (mask != 0) detectors_ = SharedDetectors(mask);
}

std::optional<Selected> MaskingPolicy::ForColumn(absl::string_view table,
                                                 absl::string_view column) const {
  std::optional<Selected> best;
  for (const auto& p : columns_) {
    if (!Glob(p.column, column) || !Glob(p.table, table)) continue;
    if (!best || Rank(p.strategy) > Rank(best->strategy)) best = Selected{p.strategy, &p.rule};
  }
  return best;
}

std::optional<Selected> MaskingPolicy::ForLabel(absl::string_view label) const {
  std::optional<Selected> best;
  for (const auto& p : columns_) {
    if (p.table != "*" || !Glob(p.column, label)) continue;
    if (!best || Rank(p.strategy) > Rank(best->strategy)) best = Selected{p.strategy, &p.rule};
  }
  return best;
}

std::optional<Selected> MaskingPolicy::ForAnyColumnOf(absl::string_view table) const {
  std::optional<Selected> best;
  for (const auto& p : columns_) {
    if (!Glob(p.table, table)) continue;
    if (!best || Rank(p.strategy) > Rank(best->strategy)) best = Selected{p.strategy, &p.rule};
  }
  return best;
}

MaskingPolicy::Outcome MaskingPolicy::MaskText(absl::string_view text, std::string* out,
                                               bool json) const {
  if (detectors_ == nullptr) return Outcome::kUnchanged;
  std::vector<Finding> findings = detectors_->Find(text);
  if (findings.empty()) return Outcome::kUnchanged;
  out->clear();
  out->reserve(text.size());
  size_t at = 0;
  size_t scanned = 0;      // JSON: text before this offset has been scanned
  bool in_string = false;  // ... and ends inside a string
  for (const Finding& f : findings) {
    if (f.begin < at || f.end > text.size()) continue;
    v1::MaskingStrategy s = by_detector_[static_cast<int>(f.detector)];
    auto masked = MaskValue(text.substr(f.begin, f.end - f.begin), s, key_);
    if (!masked) return Outcome::kNull;
    out->append(text.data() + at, f.begin - at);
    if (json) {
      for (; scanned < f.begin; ++scanned) {
        if (text[scanned] == '\\' && in_string) {
          ++scanned;  // the escaped character
        } else if (text[scanned] == '"') {
          in_string = !in_string;
        }
      }
    }
    if (json && !in_string) {
      // Markers, tokens and partial values hold no quote or backslash.
      out->push_back('"');
      out->append(*masked);
      out->push_back('"');
    } else {
      out->append(*masked);
    }
    at = f.end;
  }
  out->append(text.data() + at, text.size() - at);
  return Outcome::kReplaced;
}

}  // namespace sluice::agent::masking
