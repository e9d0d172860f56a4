#include "agent/masking/values.h"

#include <gtest/gtest.h>

namespace sluice::agent::masking {
namespace {

const HashKey kKey{"0123456789abcdef0123456789abcdef"};

std::vector<std::string> Found(const Detectors& d, absl::string_view text) {
  std::vector<std::string> out;
  for (const Finding& f : d.Find(text)) {
    out.push_back(std::string(DetectorName(f.detector)) + ":" +
                  std::string(text.substr(f.begin, f.end - f.begin)));
  }
  return out;
}

TEST(Masking, ChecksumsOfCardsAndIbans) {
  EXPECT_TRUE(LuhnValid("4111111111111111"));
  EXPECT_FALSE(LuhnValid("4111111111111112"));
  EXPECT_FALSE(LuhnValid("41x1"));
  EXPECT_TRUE(IbanValid("GB82 WEST 1234 5698 7654 32"));
  EXPECT_TRUE(IbanValid("DE89370400440532013000"));
  EXPECT_FALSE(IbanValid("DE89370400440532013001"));
  EXPECT_FALSE(IbanValid("DE89"));
}

TEST(Masking, DetectorsFindWhatIsThereAndOnlyThat) {
  Detectors all({Detector::kEmail, Detector::kCreditCard, Detector::kUsSsn, Detector::kPhone,
                 Detector::kIban, Detector::kSecret});
  EXPECT_EQ(Found(all, "contact user7@example.com today"),
            (std::vector<std::string>{"email:user7@example.com"}));
  EXPECT_EQ(Found(all, "card 4111 1111 1111 1111 exp"),
            (std::vector<std::string>{"credit_card:4111 1111 1111 1111"}));
  EXPECT_EQ(Found(all, "card 4111-1111-1111-1112"), (std::vector<std::string>{}));  // Luhn fails
  EXPECT_EQ(Found(all, "ssn 123-45-6789."), (std::vector<std::string>{"us_ssn:123-45-6789"}));
  EXPECT_EQ(Found(all, "ssn 000-45-6789 666-12-3456 123-00-6789"), (std::vector<std::string>{}));
  EXPECT_EQ(Found(all, "call (555) 123-4567 or +1 555.987.6543"),
            (std::vector<std::string>{"phone:(555) 123-4567", "phone:+1 555.987.6543"}));
  EXPECT_EQ(Found(all, "IBAN GB82 WEST 1234 5698 7654 32 ok"),
            (std::vector<std::string>{"iban:GB82 WEST 1234 5698 7654 32"}));
  EXPECT_EQ(Found(all, "key AKIAIOSFODNN7EXAMPLE"),
            (std::vector<std::string>{"secret:AKIAIOSFODNN7EXAMPLE"}));
  std::string jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
  EXPECT_EQ(Found(all, "Bearer " + jwt), (std::vector<std::string>{"secret:" + jwt}));
  EXPECT_EQ(Found(all, "order 42 shipped on 2026-11-25, total 19.99"),
            (std::vector<std::string>{}));
  EXPECT_EQ(Found(all, ""), (std::vector<std::string>{}));
  // Only the enabled detectors run.
  Detectors email_only({Detector::kEmail});
  EXPECT_EQ(Found(email_only, "a@b.io 123-45-6789"), (std::vector<std::string>{"email:a@b.io"}));
}

TEST(Masking, HostileInputStaysLinear) {
  // Inputs that make backtracking engines explode are ordinary for RE2.
  Detectors all({Detector::kEmail, Detector::kCreditCard, Detector::kUsSsn, Detector::kPhone,
                 Detector::kIban, Detector::kSecret});
  std::string many_at = std::string(200000, 'a') + "@" + std::string(200000, 'a');
  std::string digits(300000, '1');
  std::string dashes;
  for (int i = 0; i < 50000; ++i) dashes += "1-";
  for (const std::string* s : {&many_at, &digits, &dashes}) {
    auto found = all.Find(*s);
    EXPECT_LE(found.size(), s->size());
  }
}

TEST(Masking, Strategies) {
  using S = v1::MaskingStrategy;
  EXPECT_EQ(*MaskValue("123-45-6789", S::MASKING_STRATEGY_REDACT, kKey), "[REDACTED]");
  EXPECT_EQ(*MaskValue("123-45-6789", S::MASKING_STRATEGY_PARTIAL, kKey), "*******6789");
  EXPECT_EQ(*MaskValue("ab", S::MASKING_STRATEGY_PARTIAL, kKey), "ab");
  EXPECT_EQ(*MaskValue("müller@ex.de", S::MASKING_STRATEGY_PARTIAL, kKey), "********x.de");
  EXPECT_FALSE(MaskValue("x", S::MASKING_STRATEGY_NULL, kKey).has_value());
  std::string a = *MaskValue("alice@example.com", S::MASKING_STRATEGY_HASH, kKey);
  EXPECT_EQ(a.size(), 20u);
  EXPECT_EQ(a.substr(0, 4), "tok_");
  EXPECT_EQ(*MaskValue("alice@example.com", S::MASKING_STRATEGY_HASH, kKey),
            a);  // joins still work
  EXPECT_NE(*MaskValue("bob@example.com", S::MASKING_STRATEGY_HASH, kKey), a);
  EXPECT_NE(
      *MaskValue("alice@example.com", S::MASKING_STRATEGY_HASH, HashKey{"another key, 16+ bytes"}),
      a);
}

TEST(Masking, FindingsAreMaskedInPlace) {
  Detectors d({Detector::kEmail, Detector::kUsSsn});
  std::string text = "{\"email\": \"user1@example.com\", \"ssn\": \"123-45-6789\", \"n\": 1}";
  auto found = d.Find(text);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(*MaskFindings(text, found, v1::MASKING_STRATEGY_REDACT, kKey),
            "{\"email\": \"[REDACTED]\", \"ssn\": \"[REDACTED]\", \"n\": 1}");
  EXPECT_EQ(*MaskFindings(text, found, v1::MASKING_STRATEGY_PARTIAL, kKey),
            "{\"email\": \"*************.com\", \"ssn\": \"*******6789\", \"n\": 1}");
  EXPECT_FALSE(MaskFindings(text, found, v1::MASKING_STRATEGY_NULL, kKey).has_value());
  EXPECT_EQ(*MaskFindings("nothing here", {}, v1::MASKING_STRATEGY_NULL, kKey), "nothing here");
}

}  // namespace
}  // namespace sluice::agent::masking
