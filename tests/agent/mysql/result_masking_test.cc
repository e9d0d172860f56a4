#include "agent/mysql/result_masking.h"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/wire/mysql/packets.h"

namespace sluice::agent::mysql {
namespace {

using wire::mysql::ColumnDefinition;
using wire::mysql::PutInt1;
using wire::mysql::PutInt2;
using wire::mysql::PutInt4;
using wire::mysql::PutInt8;
using wire::mysql::PutLenencString;

constexpr uint16_t kUtf8 = 45;
constexpr uint16_t kBinary = 63;

// Rules: customers.ssn redact, customers.pin null, and (unless `detectors` is false) email and
// credit-card detectors.
masking::MaskingPolicy Policy(bool detectors = true, bool columns = true) {
  v1::PolicySnapshot snap;
  snap.set_masking_hash_key("0123456789abcdef0123456789abcdef");
  snap.add_connections()->set_name("demo");
  if (columns) {
    auto* r = snap.add_masking_rules();
    r->set_name("cols");
    r->mutable_connections()->add_names("demo");
    r->add_columns("customers.ssn");
    r->set_strategy(v1::MASKING_STRATEGY_REDACT);
    r = snap.add_masking_rules();
    r->set_name("pins");
    r->mutable_connections()->add_names("demo");
    r->add_columns("customers.pin");
    r->set_strategy(v1::MASKING_STRATEGY_NULL);
  }
  if (detectors) {
    auto* r = snap.add_masking_rules();
    r->set_name("detect");
    r->mutable_connections()->add_names("demo");
    r->add_detectors("email");
    r->add_detectors("credit_card");
    r->set_strategy(v1::MASKING_STRATEGY_REDACT);
  }
  return masking::MaskingPolicy(snap, snap.connections(0), "idp", "alice", {});
}

ColumnDefinition Col(const std::string& name, const std::string& org_table,
                     const std::string& org_name, uint8_t type, uint16_t charset = kUtf8,
                     uint16_t flags = 0) {
  ColumnDefinition d;
  d.name = name;
  d.table = org_table;
  d.org_table = org_table;
  d.org_name = org_name;
  d.type = type;
  d.charset = charset;
  d.flags = flags;
  return d;
}

const std::vector<session::Relation> kCustomers = {{"", "customers"}};

// ---- Plans ----

TEST(MysqlResultMaskingPlan, BaseColumnsByOrgNameNotByLabel) {
  auto policy = Policy();
  ResultPlan plan = PlanResult({Col("x", "customers", "ssn", 253), Col("id", "customers", "id", 3),
                                Col("pin", "customers", "pin", 253)},
                               kCustomers, policy);
  ASSERT_EQ(plan.columns.size(), 3u);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);  // `SELECT ssn AS x`
  EXPECT_EQ(plan.columns[0].strategy, v1::MASKING_STRATEGY_REDACT);
  EXPECT_TRUE(plan.columns[0].text_like);
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kDetect);
  EXPECT_FALSE(plan.columns[1].text_like);
  EXPECT_EQ(plan.columns[2].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[2].strategy, v1::MASKING_STRATEGY_NULL);
  EXPECT_TRUE(plan.active);
  EXPECT_EQ(plan.rules, (std::vector<std::string>{"cols", "pins", "detect"}));
  EXPECT_EQ(plan.masked_columns, (std::vector<std::string>{"x", "pin"}));
}

TEST(MysqlResultMaskingPlan, TableNamesAreCaseInsensitive) {
  auto policy = Policy(false);
  ResultPlan plan = PlanResult({Col("SSN", "Customers", "SSN", 253)}, kCustomers, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
}

TEST(MysqlResultMaskingPlan, ExpressionsAreMaskedByEveryNamedTable) {
  auto policy = Policy(false);
  // `SELECT concat(ssn), count(*), id FROM customers`: the computed columns are masked whole with
  // the strictest rule of customers (null, from customers.pin), count(*) included (over-masked,
  // deliberately); the base column id is not.
  ResultPlan plan =
      PlanResult({Col("concat(ssn)", "", "", 253), Col("count(*)", "", "", 8, kBinary),
                  Col("id", "customers", "id", 3)},
                 kCustomers, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[0].strategy, v1::MASKING_STRATEGY_NULL);
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[2].kind, ColumnPlan::kPass);
  EXPECT_EQ(plan.masked_columns, (std::vector<std::string>{"concat(ssn)", "count(*)"}));
  EXPECT_EQ(plan.rules, (std::vector<std::string>{"pins"}));
  // The same expressions over a table without masked columns pass.
  plan = PlanResult({Col("concat(note)", "", "", 253), Col("count(*)", "", "", 8, kBinary)},
                    {{"shop", "orders"}}, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kPass);
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kPass);
  EXPECT_FALSE(plan.active);
  // A schema-only relation (a database) names no table.
  plan = PlanResult({Col("x", "", "", 253)}, {{"customers", ""}}, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kPass);
}

TEST(MysqlResultMaskingPlan, ExpressionsAreMaskedByLabel) {
  v1::PolicySnapshot snap;
  snap.add_connections()->set_name("demo");
  auto* r = snap.add_masking_rules();
  r->set_name("emails");
  r->mutable_connections()->add_names("demo");
  r->add_columns("*.email");
  r->set_strategy(v1::MASKING_STRATEGY_PARTIAL);
  masking::MaskingPolicy policy(snap, snap.connections(0), "idp", "alice", {});
  // `SELECT lower(email) AS email` with no table known: caught by its label.
  ResultPlan plan = PlanResult({Col("email", "", "", 253), Col("n", "", "", 3)}, {}, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[0].strategy, v1::MASKING_STRATEGY_PARTIAL);
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kPass);
}

TEST(MysqlResultMaskingPlan, DerivedTableAliasesAreConservative) {
  auto policy = Policy(false);
  // `SELECT t.s FROM (SELECT ssn AS s FROM customers) t`: MariaDB reports org_table t, which the
  // statement does not name as a table.
  ResultPlan plan =
      PlanResult({Col("s", "t", "s", 253), Col("id", "t", "id", 3)}, kCustomers, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[0].strategy, v1::MASKING_STRATEGY_NULL);
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kWhole);
  // A merged derived table reports the base column: followed as such.
  plan = PlanResult({Col("ssn", "customers", "ssn", 253), Col("id", "customers", "id", 3)},
                    kCustomers, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[0].strategy, v1::MASKING_STRATEGY_REDACT);
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kPass);
  // With no relations at all, the column's own origin still counts.
  plan = PlanResult({Col("ssn", "customers", "ssn", 253)}, {}, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
  EXPECT_EQ(plan.columns[0].strategy, v1::MASKING_STRATEGY_REDACT);
}

TEST(MysqlResultMaskingPlan, DefinedNamesShadowTables) {
  auto policy = Policy(false);
  // `WITH customers AS (SELECT ssn AS name FROM customers) SELECT name FROM customers`: MariaDB
  // reports customers.name. Told that `customers` is a CTE, the plan masks it.
  ResultPlan plan =
      PlanResult({Col("name", "customers", "name", 253)}, kCustomers, policy, {"customers"});
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);
  // Not told, it is taken for the base column it claims to be.
  plan = PlanResult({Col("name", "customers", "name", 253)}, kCustomers, policy);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kPass);
}

TEST(MysqlResultMaskingPlan, DetectorsOnlyAndNothing) {
  ResultPlan plan =
      PlanResult({Col("note", "orders", "note", 253)}, {{"", "orders"}}, Policy(true, false));
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kDetect);
  EXPECT_TRUE(plan.active);
  EXPECT_EQ(plan.rules, (std::vector<std::string>{"detect"}));
  plan = PlanResult({Col("ssn", "customers", "ssn", 253)}, kCustomers, masking::MaskingPolicy());
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kPass);
  EXPECT_FALSE(plan.active);
  EXPECT_TRUE(plan.rules.empty());
}

TEST(MysqlResultMaskingPlan, TextLikeTypes) {
  for (uint8_t t : {15, 253, 254, 247, 248, 245}) {
    EXPECT_TRUE(TextLikeType(t, kBinary)) << int{t};
  }
  for (uint8_t t : {249, 250, 251, 252}) {
    EXPECT_TRUE(TextLikeType(t, kUtf8)) << int{t};
    EXPECT_FALSE(TextLikeType(t, kBinary)) << int{t};
  }
  for (uint8_t t : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 246, 255}) {
    EXPECT_FALSE(TextLikeType(t, kUtf8)) << int{t};
  }
  ResultPlan plan = PlanResult({Col("u", "", "", 8, kBinary, 32)}, {}, Policy(true, false));
  EXPECT_TRUE(plan.columns[0].is_unsigned);
}

// ---- Text rows ----

// A text row: each value a lenenc string, nullopt for NULL.
std::string TextRow(const std::vector<std::optional<std::string>>& values) {
  std::string out;
  for (const auto& v : values) {
    if (v) {
      PutLenencString(&out, *v);
    } else {
      PutInt1(&out, 0xFB);
    }
  }
  return out;
}

ResultPlan Plan(const std::vector<ColumnPlan::Kind>& kinds, const std::vector<uint8_t>& types,
                v1::MaskingStrategy strategy = v1::MASKING_STRATEGY_REDACT) {
  ResultPlan plan;
  for (size_t i = 0; i < kinds.size(); ++i) {
    ColumnPlan c;
    c.kind = kinds[i];
    c.type = types[i];
    c.text_like = TextLikeType(types[i], kUtf8);
    c.strategy = strategy;
    plan.columns.push_back(c);
    plan.active = plan.active || c.kind != ColumnPlan::kPass;
  }
  return plan;
}

TEST(MysqlResultMaskingText, UnchangedRowsAreNotRewritten) {
  auto policy = Policy();
  std::string long_value(300, 'x');  // a 0xFC length
  std::string row = TextRow({std::string("1"), std::nullopt, std::string("hello"), long_value,
                             std::string(""), std::string("2024-01-02")});
  std::vector<uint8_t> types = {3, 253, 253, 252, 254, 10};
  std::string out = "untouched";
  for (auto kind : {ColumnPlan::kPass, ColumnPlan::kDetect}) {
    ResultPlan plan = Plan(std::vector<ColumnPlan::Kind>(types.size(), kind), types);
    auto changed = MaskTextRow(row, plan, policy, &out);
    ASSERT_TRUE(changed.ok()) << changed.status();
    EXPECT_FALSE(*changed);
  }
  // An empty result row of no columns.
  auto changed = MaskTextRow("", ResultPlan(), policy, &out);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
}

TEST(MysqlResultMaskingText, MaskedWholeStringOrNull) {
  auto policy = Policy();
  // ssn (varchar), card (bigint), a NULL in a masked column, a passed column, a blob of text.
  ResultPlan plan = Plan({ColumnPlan::kWhole, ColumnPlan::kWhole, ColumnPlan::kWhole,
                          ColumnPlan::kPass, ColumnPlan::kWhole},
                         {253, 8, 253, 3, 252});
  std::string row = TextRow({std::string("123-45-6789"), std::string("4111111111111111"),
                             std::nullopt, std::string("7"), std::string("blob text")});
  std::string out;
  auto changed = MaskTextRow(row, plan, policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  EXPECT_EQ(out, TextRow({std::string("[REDACTED]"), std::nullopt, std::nullopt, std::string("7"),
                          std::string("[REDACTED]")}));
  // The null strategy makes a text-like value NULL too.
  plan = Plan({ColumnPlan::kWhole}, {253}, v1::MASKING_STRATEGY_NULL);
  changed = MaskTextRow(TextRow({std::string("123-45-6789")}), plan, policy, &out);
  ASSERT_TRUE(changed.ok());
  ASSERT_TRUE(*changed);
  EXPECT_EQ(out, TextRow({std::nullopt}));
  // A NULL stays NULL, and is no change.
  changed = MaskTextRow(TextRow({std::nullopt}), plan, policy, &out);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
}

TEST(MysqlResultMaskingText, DetectorFindings) {
  auto policy = Policy();
  ResultPlan plan = Plan({ColumnPlan::kDetect, ColumnPlan::kDetect, ColumnPlan::kDetect,
                          ColumnPlan::kDetect, ColumnPlan::kDetect},
                         {253, 8, 246, 245, 252});
  std::string long_note = std::string(260, '.') + " ada@example.com";
  std::string row = TextRow({std::string("mail ada@example.com!"), std::string("4111111111111111"),
                             std::string("4111111111111111.00"),
                             std::string("{\"n\": 4111111111111111}"), long_note});
  std::string out;
  auto changed = MaskTextRow(row, plan, policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  EXPECT_EQ(out, TextRow({std::string("mail [REDACTED]!"), std::nullopt, std::nullopt,
                          std::string("{\"n\": \"[REDACTED]\"}"),
                          std::string(260, '.') + " [REDACTED]"}));
}

TEST(MysqlResultMaskingText, RowsThatDoNotFitAreErrors) {
  auto policy = Policy();
  std::vector<uint8_t> types = {253, 3, 253, 252};
  std::string row = TextRow(
      {std::string("ada@example.com"), std::nullopt, std::string(""), std::string(300, 'x')});
  for (auto kind : {ColumnPlan::kPass, ColumnPlan::kDetect, ColumnPlan::kWhole}) {
    ResultPlan plan = Plan(std::vector<ColumnPlan::Kind>(types.size(), kind), types);
    std::string out;
    ASSERT_TRUE(MaskTextRow(row, plan, policy, &out).ok());
    for (size_t n = 0; n < row.size(); ++n) {
      EXPECT_FALSE(MaskTextRow(row.substr(0, n), plan, policy, &out).ok()) << n;
    }
    EXPECT_FALSE(MaskTextRow(row + "x", plan, policy, &out).ok());
    EXPECT_FALSE(MaskTextRow(row + TextRow({std::nullopt}), plan, policy, &out).ok());
  }
  // 0xFF is no length; a length beyond the row is an error, not an allocation.
  ResultPlan one = Plan({ColumnPlan::kDetect}, {253});
  std::string out;
  EXPECT_FALSE(MaskTextRow(std::string("\xff", 1), one, policy, &out).ok());
  EXPECT_FALSE(
      MaskTextRow(std::string("\xfe\xff\xff\xff\xff\xff\xff\xff\xff", 9), one, policy, &out).ok());
}

// ---- Binary rows ----

struct BinValue {
  uint8_t type;
  std::optional<std::string> encoded;  // the value's bytes as sent; nullopt: NULL
};

std::string Lenenc(const std::string& s) {
  std::string out;
  PutLenencString(&out, s);
  return out;
}
std::string Le(uint64_t v, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}
std::string Double(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return Le(bits, 8);
}
std::string Float(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return Le(bits, 4);
}

std::string BinaryRow(const std::vector<BinValue>& values) {
  std::string out(1, '\0');
  std::string bitmap((values.size() + 9) / 8, '\0');
  std::string body;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!values[i].encoded) {
      bitmap[(i + 2) / 8] = static_cast<char>(bitmap[(i + 2) / 8] | (1 << ((i + 2) % 8)));
    } else {
      body += *values[i].encoded;
    }
  }
  return out + bitmap + body;
}

ResultPlan BinaryPlan(const std::vector<BinValue>& values, ColumnPlan::Kind kind,
                      v1::MaskingStrategy strategy = v1::MASKING_STRATEGY_REDACT) {
  std::vector<uint8_t> types;
  for (const auto& v : values) types.push_back(v.type);
  return Plan(std::vector<ColumnPlan::Kind>(values.size(), kind), types, strategy);
}

// One non-NULL value of every type the binary protocol carries, none of them sensitive.
std::vector<BinValue> EveryType() {
  return {
      {0, Lenenc("12.50")},                                      // DECIMAL
      {246, Lenenc("1.5")},                                      // NEWDECIMAL
      {15, Lenenc("varchar")},                                   // VARCHAR
      {16, Lenenc(std::string("\x05", 1))},                      // BIT
      {245, Lenenc("{\"a\":1}")},                                // JSON
      {247, Lenenc("red")},                                      // ENUM
      {248, Lenenc("a,b")},                                      // SET
      {249, Lenenc("tiny")},                                     // TINY_BLOB
      {250, Lenenc("medium")},                                   // MEDIUM_BLOB
      {251, Lenenc(std::string(70000, 'L'))},                    // LONG_BLOB (a 0xFD length)
      {252, Lenenc(std::string(300, 'b'))},                      // BLOB (a 0xFC length)
      {253, Lenenc("var_string")},                               // VAR_STRING
      {254, Lenenc("string")},                                   // STRING
      {255, Lenenc(std::string("\0\0\0\0\1\1", 6))},             // GEOMETRY
      {1, Le(0x7f, 1)},                                          // TINY
      {2, Le(0x1234, 2)},                                        // SHORT
      {13, Le(2024, 2)},                                         // YEAR
      {3, Le(123456, 4)},                                        // LONG
      {9, Le(70000, 4)},                                         // INT24
      {4, Float(1.25f)},                                         // FLOAT
      {8, Le(1234567890123ull, 8)},                              // LONGLONG
      {5, Double(2.5)},                                          // DOUBLE
      {10, std::string("\x04\xe8\x07\x01\x02", 5)},              // DATE
      {12, std::string("\x07\xe8\x07\x01\x02\x03\x04\x05", 8)},  // DATETIME
      {7, std::string("\x0b\xe8\x07\x01\x02\x03\x04\x05\x01\x00\x00\x00", 12)},  // TIMESTAMP
      {11, std::string("\x08\x00\x01\x00\x00\x00\x02\x03\x04", 9)},              // TIME
      {10, std::string("\x00", 1)},                                              // DATE zero
      {6, std::string()},   // NULL type, not flagged in the bitmap
      {253, std::nullopt},  // a NULL
  };
}

TEST(MysqlResultMaskingBinary, EveryTypeRoundTripsUnchanged) {
  auto policy = Policy();
  auto values = EveryType();
  std::string row = BinaryRow(values);
  for (auto kind : {ColumnPlan::kPass, ColumnPlan::kDetect}) {
    std::string out;
    auto changed = MaskBinaryRow(row, BinaryPlan(values, kind), policy, &out);
    ASSERT_TRUE(changed.ok()) << changed.status();
    EXPECT_FALSE(*changed);
  }
}

TEST(MysqlResultMaskingBinary, EveryTypeMaskedWhole) {
  auto policy = Policy();
  auto values = EveryType();
  std::string out;
  auto changed =
      MaskBinaryRow(BinaryRow(values), BinaryPlan(values, ColumnPlan::kWhole), policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  // Text-like types keep a string; every other value becomes NULL (its bytes dropped).
  std::vector<BinValue> want;
  for (const auto& v : values) {
    if (!v.encoded) {
      want.push_back(v);
    } else if (TextLikeType(v.type, kUtf8)) {
      want.push_back({v.type, Lenenc("[REDACTED]")});
    } else {
      want.push_back({v.type, std::nullopt});
    }
  }
  EXPECT_EQ(out, BinaryRow(want));
  // The masked row is itself a row that fits the plan.
  std::string unused;
  auto again = MaskBinaryRow(out, BinaryPlan(values, ColumnPlan::kPass), policy, &unused);
  EXPECT_TRUE(again.ok()) << again.status();
  // Under the null strategy, every value becomes NULL.
  changed = MaskBinaryRow(BinaryRow(values),
                          BinaryPlan(values, ColumnPlan::kWhole, v1::MASKING_STRATEGY_NULL), policy,
                          &out);
  ASSERT_TRUE(changed.ok());
  ASSERT_TRUE(*changed);
  std::vector<BinValue> all_null;
  for (const auto& v : values) all_null.push_back({v.type, std::nullopt});
  EXPECT_EQ(out, BinaryRow(all_null));
}

TEST(MysqlResultMaskingBinary, DetectorFindings) {
  auto policy = Policy();
  const uint64_t card = 4111111111111111ull;
  std::vector<BinValue> values = {
      {253, Lenenc("mail ada@example.com!")},      // text-like: masked in place
      {8, Le(card, 8)},                            // a card number in a BIGINT: NULL
      {5, Double(static_cast<double>(card))},      // ... in a DOUBLE: NULL
      {246, Lenenc("4111111111111111")},           // ... in a DECIMAL: NULL
      {252, Lenenc("{\"c\": 4111111111111111}")},  // JSON in a text blob: kept a document
      {3, Le(42, 4)},                              // nothing found
      {253, std::nullopt},                         // NULL kept
      {10, std::string("\x04\xe8\x07\x01\x02", 5)},
  };
  std::string out;
  auto changed =
      MaskBinaryRow(BinaryRow(values), BinaryPlan(values, ColumnPlan::kDetect), policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  EXPECT_EQ(out, BinaryRow({
                     {253, Lenenc("mail [REDACTED]!")},
                     {8, std::nullopt},
                     {5, std::nullopt},
                     {246, std::nullopt},
                     {252, Lenenc("{\"c\": \"[REDACTED]\"}")},
                     {3, Le(42, 4)},
                     {253, std::nullopt},
                     {10, std::string("\x04\xe8\x07\x01\x02", 5)},
                 }));
  // A signed BIGINT is rendered signed: -4111111111111111 holds the digits too.
  std::vector<BinValue> negative = {{8, Le(static_cast<uint64_t>(-static_cast<int64_t>(card)), 8)}};
  changed =
      MaskBinaryRow(BinaryRow(negative), BinaryPlan(negative, ColumnPlan::kDetect), policy, &out);
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(*changed);
}

TEST(MysqlResultMaskingBinary, NullBitmapBeyondItsFirstByte) {
  auto policy = Policy();
  // 12 columns: a bitmap of 2 bytes; mask the 10th (bit 11: the second byte).
  std::vector<BinValue> values;
  for (int i = 0; i < 12; ++i) values.push_back({3, Le(static_cast<uint64_t>(i), 4)});
  values[4].encoded = std::nullopt;
  ResultPlan plan = BinaryPlan(values, ColumnPlan::kPass);
  plan.columns[9].kind = ColumnPlan::kWhole;
  plan.active = true;
  std::string out;
  auto changed = MaskBinaryRow(BinaryRow(values), plan, policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  values[9].encoded = std::nullopt;
  EXPECT_EQ(out, BinaryRow(values));
}

TEST(MysqlResultMaskingBinary, RowsThatDoNotFitAreErrors) {
  auto policy = Policy();
  auto values = EveryType();
  values.resize(values.size() - 3);  // keep it short: only values with bytes
  // Short lenenc values, so every prefix is cheap.
  values[9].encoded = Lenenc("long blob");
  values[10].encoded = Lenenc(std::string(251, 'b'));
  std::string row = BinaryRow(values);
  for (auto kind : {ColumnPlan::kPass, ColumnPlan::kDetect, ColumnPlan::kWhole}) {
    ResultPlan plan = BinaryPlan(values, kind);
    std::string out;
    ASSERT_TRUE(MaskBinaryRow(row, plan, policy, &out).ok());
    for (size_t n = 0; n < row.size(); ++n) {
      EXPECT_FALSE(MaskBinaryRow(row.substr(0, n), plan, policy, &out).ok()) << n;
    }
    EXPECT_FALSE(MaskBinaryRow(row + "x", plan, policy, &out).ok());
  }
  std::string out;
  ResultPlan one = Plan({ColumnPlan::kDetect}, {253});
  // Not a binary row header.
  EXPECT_FALSE(MaskBinaryRow(std::string("\x01\x00\x01x", 4), one, policy, &out).ok());
  // 0xFB is no length in a binary row; 0xFF neither; a length beyond the row is an error.
  EXPECT_FALSE(MaskBinaryRow(std::string("\x00\x00\xfb", 3), one, policy, &out).ok());
  EXPECT_FALSE(MaskBinaryRow(std::string("\x00\x00\xff", 3), one, policy, &out).ok());
  EXPECT_FALSE(MaskBinaryRow(std::string("\x00\x00\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 11), one,
                             policy, &out)
                   .ok());
  // A type this codec does not know, even in a NULL value.
  ResultPlan unknown = Plan({ColumnPlan::kPass}, {242});
  EXPECT_FALSE(MaskBinaryRow(std::string("\x00\x04", 2), unknown, policy, &out).ok());
  EXPECT_FALSE(MaskBinaryRow(std::string("\x00\x00\x01x", 4), unknown, policy, &out).ok());
}

}  // namespace
}  // namespace sluice::agent::mysql
