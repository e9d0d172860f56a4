// Value-level masking: content detectors for sensitive data in text, and the masking strategies.
// Pure functions, no protocol knowledge; the PostgreSQL relay decides which values go through
// them. Not wired into the data path yet: MaskingRules are not enforced (docs/masking.md).
//
// Detectors run RE2 (linear time whatever the input) behind cheap byte prefilters, and check
// what a pattern alone cannot: the Luhn digit of card numbers, the mod-97 check of IBANs, the
// reserved ranges of US SSNs.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "sluice/v1/policy.pb.h"

namespace sluice::agent::masking {

enum class Detector { kEmail, kCreditCard, kUsSsn, kPhone, kIban, kSecret };

// "email", "credit_card", "us_ssn", "phone", "iban", "secret".
std::optional<Detector> DetectorByName(absl::string_view name);
const char* DetectorName(Detector d);

// A sensitive span of a text: [begin, end).
struct Finding {
  size_t begin = 0;
  size_t end = 0;
  Detector detector = Detector::kEmail;
};

class Detectors {
 public:
  explicit Detectors(const std::vector<Detector>& enabled);
  ~Detectors();
  Detectors(const Detectors&) = delete;
  Detectors& operator=(const Detectors&) = delete;

  // Every finding in `text`, in order, not overlapping (the first detector to claim bytes wins).
  std::vector<Finding> Find(absl::string_view text) const;

 private:
  struct Compiled;
  struct AnySet;
  std::vector<std::unique_ptr<Compiled>> detectors_;
  // All patterns in one automaton: one pass tells which detectors can match at all (most
  // values match none), so the others never run.
  std::unique_ptr<AnySet> any_;
};

// The key of the `hash` strategy: equal values under the same key give equal tokens.
struct HashKey {
  std::string key;  // at least 16 bytes
};

// A whole value masked by `strategy`; nullopt means NULL (the `null` strategy).
//   redact  -> "[REDACTED]"
//   partial -> every character but the last 4 replaced by '*' (characters, not bytes)
//   hash    -> "tok_" + 16 hex digits of HMAC-SHA256(key, value)
std::optional<std::string> MaskValue(absl::string_view value, v1::MaskingStrategy strategy,
                                     const HashKey& key);

// `text` with each finding masked by `strategy` in place (the rest of the text kept); nullopt
// (NULL) for the `null` strategy when there is any finding. No findings: `text` unchanged.
std::optional<std::string> MaskFindings(absl::string_view text,
                                        const std::vector<Finding>& findings,
                                        v1::MaskingStrategy strategy, const HashKey& key);

// The Luhn check of a digit string.
bool LuhnValid(absl::string_view digits);
// The ISO 13616 mod-97 check of an IBAN (spaces allowed).
bool IbanValid(absl::string_view iban);

}  // namespace sluice::agent::masking
