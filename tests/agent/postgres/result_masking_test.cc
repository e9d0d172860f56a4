#include "agent/postgres/result_masking.h"

#include <gtest/gtest.h>

#include "common/wire/postgres/wire.h"

namespace sluice::agent::postgres {

using wire::postgres::DataRow;
using wire::postgres::RowDescription;

namespace {

masking::MaskingPolicy Policy() {
  static v1::PolicySnapshot* s = [] {
    auto* snap = new v1::PolicySnapshot();
    snap->set_masking_hash_key("0123456789abcdef0123456789abcdef");
    snap->add_connections()->set_name("demo");
    auto* r = snap->add_masking_rules();
    r->set_name("cols");
    r->mutable_connections()->add_names("demo");
    r->add_columns("customers.ssn");
    r->add_columns("*.card");
    r->set_strategy(v1::MASKING_STRATEGY_REDACT);
    r = snap->add_masking_rules();
    r->set_name("detect");
    r->mutable_connections()->add_names("demo");
    r->add_detectors("email");
    r->set_strategy(v1::MASKING_STRATEGY_REDACT);
    return snap;
  }();
  return masking::MaskingPolicy(*s, s->connections(0), "idp", "alice", {});
}

RowDescription::Field F(const char* name, int32_t table, int16_t column, int32_t type,
                        int16_t format = 0) {
  RowDescription::Field f;
  f.name = name;
  f.table_oid = table;
  f.column = column;
  f.type_oid = type;
  f.format = format;
  return f;
}

absl::flat_hash_map<uint32_t, std::shared_ptr<const TableNames>> Tables() {
  auto t = std::make_shared<TableNames>();
  t->schema = "public";
  t->table = "customers";
  t->columns = {"id", "ssn", "", "card", "email"};
  return {{16384u, t}};
}

std::string Payload(const std::string& message) { return message.substr(5); }

TEST(ResultMasking, PlansByTableColumnNotByLabel) {
  auto policy = Policy();
  ResultPlan plan = PlanResult(
      {F("x", 16384, 2, 25), F("id", 16384, 1, 23), F("card", 0, 0, 25), F("email", 16384, 5, 25)},
      Tables(), policy);
  ASSERT_EQ(plan.columns.size(), 4u);
  EXPECT_EQ(plan.columns[0].kind, ColumnPlan::kWhole);   // ssn, called x
  EXPECT_EQ(plan.columns[1].kind, ColumnPlan::kDetect);  // id: detectors only
  EXPECT_EQ(plan.columns[2].kind, ColumnPlan::kWhole);   // an expression labelled card
  EXPECT_EQ(plan.columns[3].kind, ColumnPlan::kDetect);
  EXPECT_TRUE(plan.active);
  EXPECT_EQ(plan.rules, (std::vector<std::string>{"cols", "detect"}));
  EXPECT_EQ(plan.masked_columns, (std::vector<std::string>{"x", "card"}));
}

TEST(ResultMasking, RewritesDataRowsInTextAndBinary) {
  auto policy = Policy();
  ResultPlan plan = PlanResult({F("ssn", 16384, 2, 25), F("card", 16384, 4, 20, 1),
                                F("note", 0, 0, 25, 1), F("n", 0, 0, 23), F("nothing", 0, 0, 25)},
                               Tables(), policy);
  DataRow row;
  row.values = {std::string("123-45-6789"), std::string("\0\0\0\0\0\0\0\1", 8),
                std::string("mail a@b.example!"), std::string("42"), std::nullopt};
  std::string out;
  auto changed = MaskDataRow(Payload(row.Encode()), plan, policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  auto got = DataRow::Decode(Payload(out));
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->values.size(), 5u);
  EXPECT_EQ(got->values[0], "[REDACTED]");
  EXPECT_EQ(got->values[1], std::nullopt);  // a binary bigint in a masked column: NULL
  EXPECT_EQ(got->values[2], "mail [REDACTED]!");
  EXPECT_EQ(got->values[3], "42");
  EXPECT_EQ(got->values[4], std::nullopt);
  EXPECT_EQ(out.size(), 1 + 4 + Payload(out).size());
  // A row with nothing to mask is not rewritten.
  ResultPlan detect_only = PlanResult({F("n", 0, 0, 25)}, {}, policy);
  DataRow clean;
  clean.values = {std::string("fine")};
  changed = MaskDataRow(Payload(clean.Encode()), detect_only, policy, &out);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
  // A finding in a number in text format makes it NULL (the client parses numbers).
  ResultPlan numbers = PlanResult({F("n", 0, 0, 1700)}, {}, policy);
  DataRow odd;
  odd.values = {std::string("1e5")};
  changed = MaskDataRow(Payload(odd.Encode()), numbers, policy, &out);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
}

TEST(ResultMasking, RowsThatDoNotFitThePlanAreErrors) {
  auto policy = Policy();
  ResultPlan plan = PlanResult({F("ssn", 16384, 2, 25)}, Tables(), policy);
  DataRow two;
  two.values = {std::string("a"), std::string("b")};
  std::string out;
  EXPECT_FALSE(MaskDataRow(Payload(two.Encode()), plan, policy, &out).ok());
  std::string truncated = Payload(DataRow{{std::string("abcdef")}}.Encode());
  truncated.pop_back();
  EXPECT_FALSE(MaskDataRow(truncated, plan, policy, &out).ok());
  EXPECT_FALSE(MaskDataRow("", plan, policy, &out).ok());
}

TEST(ResultMasking, CopyTextRowsKeepTheirEscapes) {
  auto policy = Policy();
  ResultPlan plan = PlanCopy("customers", {"id", "ssn", "note"}, 3, policy);
  CopyFormat text;
  std::string out;
  auto changed =
      MaskCopyRow("7\t123-45-6789\tline\\none a@b.example\\\\x\n", plan, text, policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  EXPECT_EQ(out.substr(5), "7\t[REDACTED]\tline\\none [REDACTED]\\\\x\n");
  EXPECT_EQ(out[0], 'd');
  // NULL stays NULL; a row without findings is not rewritten.
  changed = MaskCopyRow("8\t\\N\tplain\n", plan, text, policy, &out);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
  EXPECT_FALSE(MaskCopyRow("1\t2\n", plan, text, policy, &out).ok());  // a column short
}

TEST(ResultMasking, CopyCsvRowsAreUnquotedMaskedAndRequoted) {
  auto policy = Policy();
  ResultPlan plan = PlanCopy("customers", {"id", "ssn", "note"}, 3, policy);
  CopyFormat csv;
  csv.csv = true;
  csv.delimiter = ',';
  csv.null_string = "";
  std::string out;
  auto changed = MaskCopyRow("1,123-45-6789,\"a, \"\"quoted\"\" a@b.example\nnext line\"\n", plan,
                             csv, policy, &out);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(*changed);
  EXPECT_EQ(out.substr(5), "1,\"[REDACTED]\",\"a, \"\"quoted\"\" [REDACTED]\nnext line\"\n");
  changed = MaskCopyRow("2,,\"\"\n", plan, csv, policy, &out);  // NULL and an empty string
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
  EXPECT_FALSE(MaskCopyRow("3,\"open,x\n", plan, csv, policy, &out).ok());
}

}  // namespace
}  // namespace sluice::agent::postgres
