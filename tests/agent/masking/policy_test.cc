#include "agent/masking/policy.h"

#include <gtest/gtest.h>

namespace sluice::agent::masking {
namespace {

v1::PolicySnapshot Snapshot() {
  v1::PolicySnapshot s;
  s.set_masking_hash_key("0123456789abcdef0123456789abcdef");
  auto* c = s.add_connections();
  c->set_name("demo");
  auto add = [&](const std::string& name, std::vector<std::string> columns,
                 std::vector<std::string> detectors, v1::MaskingStrategy strategy) {
    auto* r = s.add_masking_rules();
    r->set_name(name);
    r->mutable_connections()->add_names("demo");
    for (auto& col : columns) r->add_columns(col);
    for (auto& d : detectors) r->add_detectors(d);
    r->set_strategy(strategy);
    r->mutable_exempt()->add_groups("dpo");
    return r;
  };
  add("emails", {"*.email"}, {}, v1::MASKING_STRATEGY_HASH);
  add("ids", {"Customers.SSN", "cust*.card_*"}, {"us_ssn"}, v1::MASKING_STRATEGY_PARTIAL);
  add("strict-ids", {"customers.ssn"}, {"us_ssn", "email"}, v1::MASKING_STRATEGY_REDACT);
  auto* other = add("elsewhere", {"*.*"}, {}, v1::MASKING_STRATEGY_NULL);
  other->mutable_connections()->clear_names();
  other->mutable_connections()->add_names("other");
  return s;
}

TEST(MaskingPolicy, ColumnsByGlobCaseInsensitiveAndTheStrictestWins) {
  v1::PolicySnapshot s = Snapshot();
  MaskingPolicy p(s, s.connections(0), "idp", "alice", {"analyst"});
  ASSERT_FALSE(p.empty());
  auto email = p.ForColumn("orders", "email");
  ASSERT_TRUE(email);
  EXPECT_EQ(email->strategy, v1::MASKING_STRATEGY_HASH);
  EXPECT_EQ(*email->rule, "emails");
  auto ssn = p.ForColumn("customers", "ssn");
  ASSERT_TRUE(ssn);
  EXPECT_EQ(ssn->strategy, v1::MASKING_STRATEGY_REDACT);  // redact beats partial
  EXPECT_EQ(*ssn->rule, "strict-ids");
  EXPECT_EQ(p.ForColumn("CUSTOMERS_2024", "Card_Last")->strategy, v1::MASKING_STRATEGY_PARTIAL);
  EXPECT_FALSE(p.ForColumn("customers", "name"));
  EXPECT_FALSE(p.ForColumn("orders", "ssn"));  // only customers.ssn; "*.*" is another connection's
  // Labels match only patterns whose table part is '*'.
  EXPECT_TRUE(p.ForLabel("email"));
  EXPECT_FALSE(p.ForLabel("ssn"));
}

TEST(MaskingPolicy, AnyColumnOfATableForWholeRowReferences) {
  v1::PolicySnapshot s = Snapshot();
  MaskingPolicy p(s, s.connections(0), "idp", "alice", {"analyst"});
  // customers: "*.email" (hash), "Customers.SSN" (partial), "customers.ssn" (redact): redact wins.
  auto customers = p.ForAnyColumnOf("Customers");
  ASSERT_TRUE(customers);
  EXPECT_EQ(customers->strategy, v1::MASKING_STRATEGY_REDACT);
  EXPECT_EQ(*customers->rule, "strict-ids");
  // "cust*.card_*" (partial) and "*.email" (hash): hash reveals less.
  EXPECT_EQ(p.ForAnyColumnOf("cust_2024")->strategy, v1::MASKING_STRATEGY_HASH);
  // Only "*.email" selects a column of orders.
  auto orders = p.ForAnyColumnOf("orders");
  ASSERT_TRUE(orders);
  EXPECT_EQ(*orders->rule, "emails");
  // Without a "*." pattern nothing selects an unrelated table.
  v1::PolicySnapshot narrow = Snapshot();
  narrow.mutable_masking_rules()->DeleteSubrange(0, 1);  // drop "emails"
  MaskingPolicy q(narrow, narrow.connections(0), "idp", "alice", {"analyst"});
  EXPECT_FALSE(q.ForAnyColumnOf("orders"));
  EXPECT_TRUE(q.ForAnyColumnOf("customers"));
  // An exempt caller: no rule.
  MaskingPolicy exempt(s, s.connections(0), "idp", "bob", {"dpo"});
  EXPECT_FALSE(exempt.ForAnyColumnOf("customers"));
}

TEST(MaskingPolicy, DetectorsUseTheStrictestStrategyOfTheirRules) {
  v1::PolicySnapshot s = Snapshot();
  MaskingPolicy p(s, s.connections(0), "idp", "alice", {"analyst"});
  std::string out;
  EXPECT_EQ(p.MaskText("ssn 123-45-6789, mail a@b.example", &out),
            MaskingPolicy::Outcome::kReplaced);
  EXPECT_EQ(out, "ssn [REDACTED], mail [REDACTED]");
  EXPECT_EQ(p.MaskText("nothing here", &out), MaskingPolicy::Outcome::kUnchanged);
  EXPECT_EQ(p.detector_rules(), (std::vector<std::string>{"ids", "strict-ids"}));
}

TEST(MaskingPolicy, JsonFindingsOutsideStringsBecomeStrings) {
  v1::PolicySnapshot s;
  s.add_connections()->set_name("demo");
  auto* r = s.add_masking_rules();
  r->set_name("cards");
  r->mutable_connections()->add_names("demo");
  r->add_detectors("credit_card");
  r->set_strategy(v1::MASKING_STRATEGY_REDACT);
  MaskingPolicy p(s, s.connections(0), "idp", "alice", {});
  std::string out;
  ASSERT_EQ(p.MaskText(R"({"n":4111111111111111,"s":"4111 1111 1111 1111 \"x"})", &out, true),
            MaskingPolicy::Outcome::kReplaced);
  EXPECT_EQ(out, R"({"n":"[REDACTED]","s":"[REDACTED] \"x"})");
}

TEST(MaskingPolicy, ExemptCallersAndOtherConnectionsGetNoRules) {
  v1::PolicySnapshot s = Snapshot();
  EXPECT_TRUE(MaskingPolicy(s, s.connections(0), "idp", "bob", {"dpo"}).empty());
  v1::Connection other;
  other.set_name("other");
  MaskingPolicy p(s, other, "idp", "bob", {"analyst"});
  EXPECT_FALSE(p.has_detectors());
  EXPECT_EQ(p.ForColumn("t", "c")->strategy, v1::MASKING_STRATEGY_NULL);
  EXPECT_TRUE(MaskingPolicy().empty());
}

}  // namespace
}  // namespace sluice::agent::masking
