#include "agent/masking/values.h"

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::agent::masking {
namespace {

std::string DigitsOf(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (absl::ascii_isdigit(c)) out.push_back(c);
  }
  return out;
}

// Extra checks on a candidate match a pattern cannot express.
bool Confirm(Detector d, absl::string_view match) {
  switch (d) {
    case Detector::kCreditCard: {
      std::string digits = DigitsOf(match);
      return digits.size() >= 13 && digits.size() <= 19 && LuhnValid(digits);
    }
    case Detector::kUsSsn: {
      // Area 000, 666 and 900-999, group 00 and serial 0000 are never issued.
      std::string d9 = DigitsOf(match);
      if (d9.size() != 9) return false;
      absl::string_view area(d9.data(), 3), group(d9.data() + 3, 2), serial(d9.data() + 5, 4);
      return area != "000" && area != "666" && area[0] != '9' && group != "00" && serial != "0000";
    }
    case Detector::kIban:
      return IbanValid(match);
    default:
      return true;
  }
}

// What the cheap tests look at, from one pass over the text.
struct TextStats {
  size_t digits = 0;
  bool at = false;
  bool dash = false;
  bool iban_start = false;  // two upper-case letters followed by two digits
};

TextStats StatsOf(absl::string_view t) {
  TextStats s;
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (absl::ascii_isdigit(c)) {
      ++s.digits;
    } else if (c == '@') {
      s.at = true;
    } else if (c == '-') {
      s.dash = true;
    } else if (!s.iban_start && absl::ascii_isupper(c) && i + 3 < t.size() &&
               absl::ascii_isupper(t[i + 1]) && absl::ascii_isdigit(t[i + 2]) &&
               absl::ascii_isdigit(t[i + 3])) {
      s.iban_start = true;
    }
  }
  return s;
}

// The literal starts of the secret patterns (see PatternOf).
bool MayHoldSecret(absl::string_view t) {
  if (t.size() < 16) return false;
  for (absl::string_view start : {"eyJ", "AKIA", "ASIA", "xox", "AIza", "-----BEGIN"}) {
    if (t.find(start) != absl::string_view::npos) return true;
  }
  for (size_t at = t.find("gh"); at != absl::string_view::npos; at = t.find("gh", at + 1)) {
    if (at + 3 < t.size() && t[at + 3] == '_') return true;
  }
  return false;
}

// Cheap tests that rule a text out before RE2 runs: what each pattern cannot match without.
bool MayContain(Detector d, absl::string_view text, const TextStats& s) {
  switch (d) {
    case Detector::kEmail:
      return s.at;
    case Detector::kCreditCard:
      return s.digits >= 13;
    case Detector::kUsSsn:
      return s.dash && s.digits >= 9;
    case Detector::kPhone:
      return s.digits >= 10;
    case Detector::kIban:
      return s.iban_start;
    case Detector::kSecret:
      return MayHoldSecret(text);
  }
  return true;
}

const char* PatternOf(Detector d) {
  switch (d) {
    case Detector::kEmail:
      return R"([A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,})";
    case Detector::kCreditCard:
      return R"(\b\d(?:[ \-]?\d){12,18}\b)";
    case Detector::kUsSsn:
      return R"(\b\d{3}-\d{2}-\d{4}\b)";
    case Detector::kPhone:
      return R"((?:\+\d{1,3}[ .\-]?)?(?:\(\d{3}\)|\b\d{3})[ .\-]?\d{3}[ .\-]?\d{4}\b)";
    case Detector::kIban:
      return R"(\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b)";
    case Detector::kSecret:
      // JWTs, AWS access key ids, GitHub and Slack tokens, Google API keys, PEM private keys.
      return R"(\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bxox[abprs]-[A-Za-z0-9\-]{10,}|\bAIza[0-9A-Za-z_\-]{35}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z ]*PRIVATE KEY-----)";
  }
  return "a^";
}

// The start of the last `n` characters of UTF-8 `s` (bytes when it is not UTF-8).
size_t LastChars(absl::string_view s, size_t n) {
  size_t pos = s.size();
  while (n > 0 && pos > 0) {
    --pos;
    while (pos > 0 && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
    --n;
  }
  return pos;
}

size_t CharCount(absl::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

}  // namespace

struct Detectors::AnySet {
  explicit AnySet(const RE2::Options& o) : set(o, RE2::UNANCHORED) {}
  RE2::Set set;
  bool ok = false;
};

struct Detectors::Compiled {
  Detector detector;
  RE2 re;
  Compiled(Detector d, const RE2::Options& o) : detector(d), re(PatternOf(d), o) {}
};

std::optional<Detector> DetectorByName(absl::string_view name) {
  for (Detector d : {Detector::kEmail, Detector::kCreditCard, Detector::kUsSsn, Detector::kPhone,
                     Detector::kIban, Detector::kSecret}) {
    if (name == DetectorName(d)) return d;
  }
  return std::nullopt;
}

const char* DetectorName(Detector d) {
  switch (d) {
    case Detector::kEmail:
      return "email";
    case Detector::kCreditCard:
      return "credit_card";
    case Detector::kUsSsn:
      return "us_ssn";
    case Detector::kPhone:
      return "phone";
    case Detector::kIban:
      return "iban";
    case Detector::kSecret:
      return "secret";
  }
  return "unknown";
}

Detectors::Detectors(const std::vector<Detector>& enabled) {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(8 << 20);
  // Secrets first (a JWT holds digit runs), then the checked detectors, phone last: a card or an
  // SSN would also look like a phone number.
  for (Detector d : {Detector::kSecret, Detector::kEmail, Detector::kIban, Detector::kCreditCard,
                     Detector::kUsSsn, Detector::kPhone}) {
    if (std::find(enabled.begin(), enabled.end(), d) != enabled.end()) {
      detectors_.push_back(std::make_unique<Compiled>(d, options));
    }
  }
  any_ = std::make_unique<AnySet>(options);
  bool added = true;
  for (const auto& c : detectors_)
    added = added && any_->set.Add(PatternOf(c->detector), nullptr) >= 0;
  any_->ok = added && any_->set.Compile();
}

Detectors::~Detectors() = default;

std::vector<Finding> Detectors::Find(absl::string_view text) const {
  std::vector<Finding> found;
  // Which detectors may match: the byte prefilters, then (when more than one is left) one pass
  // of the combined automaton.
  uint32_t candidates = 0;
  int count = 0;
  TextStats stats = StatsOf(text);
  for (size_t i = 0; i < detectors_.size(); ++i) {
    if (detectors_[i]->re.ok() && MayContain(detectors_[i]->detector, text, stats)) {
      candidates |= 1u << i;
      ++count;
    }
  }
  if (count == 0) return found;
  if (count > 1 && any_->ok) {
    std::vector<int> hits;
    if (!any_->set.Match(re2::StringPiece(text.data(), text.size()), &hits)) return found;
    uint32_t matched = 0;
    for (int h : hits) matched |= 1u << h;
    candidates &= matched;
  }
  for (size_t i = 0; i < detectors_.size(); ++i) {
    const auto& c = detectors_[i];
    if ((candidates & (1u << i)) == 0) continue;
    re2::StringPiece input(text.data(), text.size());
    size_t pos = 0;
    re2::StringPiece match;
    while (pos <= text.size() && c->re.Match(input, pos, text.size(), RE2::UNANCHORED, &match, 1)) {
      size_t begin = static_cast<size_t>(match.data() - text.data());
      size_t end = begin + match.size();
      if (end == begin) {  // cannot happen with these patterns; never loop forever
        pos = end + 1;
        continue;
      }
      bool overlaps = std::any_of(found.begin(), found.end(),
                                  [&](const Finding& f) { return begin < f.end && f.begin < end; });
      if (!overlaps && Confirm(c->detector, absl::string_view(text.data() + begin, end - begin))) {
        found.push_back(Finding{begin, end, c->detector});
      }
      pos = end;
    }
  }
  std::sort(found.begin(), found.end(),
            [](const Finding& a, const Finding& b) { return a.begin < b.begin; });
  return found;
}

std::optional<std::string> MaskValue(absl::string_view value, v1::MaskingStrategy strategy,
                                     const HashKey& key) {
  switch (strategy) {
    case v1::MASKING_STRATEGY_NULL:
      return std::nullopt;
    case v1::MASKING_STRATEGY_PARTIAL: {
      size_t keep = LastChars(value, 4);
      std::string out(CharCount(value.substr(0, keep)), '*');
      absl::StrAppend(&out, value.substr(keep));
      return out;
    }
    case v1::MASKING_STRATEGY_HASH:
      return absl::StrCat("tok_", HexEncode(HmacSha256(key.key, value)).substr(0, 16));
    default:
      return std::string("[REDACTED]");
  }
}

std::optional<std::string> MaskFindings(absl::string_view text,
                                        const std::vector<Finding>& findings,
                                        v1::MaskingStrategy strategy, const HashKey& key) {
  if (findings.empty()) return std::string(text);
  if (strategy == v1::MASKING_STRATEGY_NULL) return std::nullopt;
  std::string out;
  out.reserve(text.size());
  size_t at = 0;
  for (const Finding& f : findings) {
    if (f.begin < at || f.end > text.size()) continue;  // overlapping or out of range: skipped
    absl::StrAppend(&out, text.substr(at, f.begin - at));
    out.append(*MaskValue(text.substr(f.begin, f.end - f.begin), strategy, key));
    at = f.end;
  }
  absl::StrAppend(&out, text.substr(at));
  return out;
}

bool LuhnValid(absl::string_view digits) {
  if (digits.empty()) return false;
  int sum = 0;
  bool twice = false;
  for (size_t i = digits.size(); i-- > 0;) {
    if (!absl::ascii_isdigit(digits[i])) return false;
    int d = digits[i] - '0';
    if (twice) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

bool IbanValid(absl::string_view iban) {
  std::string s;
  for (char c : iban) {
    if (c != ' ') s.push_back(c);
  }
  if (s.size() < 15 || s.size() > 34) return false;
  std::string rearranged = s.substr(4) + s.substr(0, 4);
  int remainder = 0;
  for (char c : rearranged) {
    if (absl::ascii_isdigit(c)) {
      remainder = (remainder * 10 + (c - '0')) % 97;
    } else if (c >= 'A' && c <= 'Z') {
      int v = c - 'A' + 10;
      remainder = (remainder * 100 + v) % 97;
    } else {
      return false;
    }
  }
  return remainder == 1;
}

}  // namespace sluice::agent::masking
