#include "agent/postgres/session_settings.h"

#include <gtest/gtest.h>

namespace sluice::agent::postgres {
namespace {

TEST(SessionSettings, ClientEncodingsWhoseBytesBelow0x80AreAscii) {
  for (const char* e :
       {"UTF8", "utf-8", "LATIN1", "win1252", "EUC_JP", "SQL_ASCII", "Unicode", "KOI8-R"}) {
    EXPECT_TRUE(AsciiSafeClientEncoding(e)) << e;
  }
  for (const char* e :
       {"SJIS", "shift_jis", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "mskanji", "win932", ""}) {
    EXPECT_FALSE(AsciiSafeClientEncoding(e)) << e;
  }
}

TEST(SessionSettings, StartupOptionsArePinnedAndChecked) {
  EXPECT_EQ(*CheckStartupOptions("", false), "");
  EXPECT_EQ(*CheckStartupOptions("-c statement_timeout=5s  --work-mem=64MB", false),
            "-c statement_timeout=5s -c work_mem=64MB");
  EXPECT_EQ(*CheckStartupOptions("-csearch_path=a\\ b", false), "-c search_path=a\\ b");
  EXPECT_EQ(*CheckStartupOptions("-c standard_conforming_strings=on", false),
            "-c standard_conforming_strings=on");
  for (const char* bad : {"-c standard_conforming_strings=off", "--standard-conforming-strings=off",
                          "-c Standard_Conforming_Strings=0", "-c backslash_quote=on",
                          "-c client_encoding=SJIS", "-e", "-c", "-c noequals", "-o something"}) {
    auto st = CheckStartupOptions(bad, false);
    EXPECT_FALSE(st.ok()) << bad;
  }
  EXPECT_FALSE(CheckStartupOptions("-c default_transaction_read_only=off", true).ok());
  EXPECT_FALSE(
      CheckStartupOptions("-c default_transaction_read_only=on", true).ok());  // the agent sets it
  EXPECT_TRUE(CheckStartupOptions("-c default_transaction_read_only=off", false)
                  .ok());  // a write grant may
  EXPECT_NE(PinnedOptions(true).find("default_transaction_read_only=on"), std::string::npos);
  EXPECT_EQ(PinnedOptions(false).find("default_transaction_read_only"), std::string::npos);
  EXPECT_NE(PinnedOptions(false).find("standard_conforming_strings=on"), std::string::npos);
}

std::string Problem(const char* sql, bool read_only) {
  SettingsVerdict v = SettingsProblem(AnalyzeStatement(sql), read_only);
  EXPECT_EQ(v.lifts_read_only,
            !v.problem.empty() && read_only && v.problem.find("read-only") != std::string::npos)
      << sql;
  return v.problem;
}

TEST(SessionSettings, StatementsThatWouldChangeAPinnedSettingAreRefused) {
  for (const char* sql :
       {"SET standard_conforming_strings = off", "SET LOCAL standard_conforming_strings TO off",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config(' Standard_Conforming_Strings', 'off', true)",
        "SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)",
        "SELECT set_config(name, 'off', false) FROM pg_settings", "SET backslash_quote = on",
        "SET client_encoding = 'SJIS'", "SET NAMES 'BIG5'",
        "SELECT 1; SET standard_conforming_strings = 0"}) {
    EXPECT_NE(Problem(sql, false), "") << sql;
  }
  for (const char* sql :
       {"SET standard_conforming_strings = on", "RESET standard_conforming_strings", "RESET ALL",
        "SET client_encoding = 'UTF8'", "SET search_path = public",
        "SELECT set_config('application_name', 'x', false)", "SET statement_timeout = 0"}) {
    EXPECT_EQ(Problem(sql, false), "") << sql;
  }
}

TEST(SessionSettings, ReadOnlyCannotBeLiftedOnAReadGrant) {
  for (const char* sql :
       {"SET default_transaction_read_only = off", "SET default_transaction_read_only TO 0",
        "SET SESSION default_transaction_read_only = false",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT set_config('transaction_read_only', 'off', true)", "BEGIN READ WRITE",
        "START TRANSACTION READ WRITE", "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "SET TRANSACTION READ WRITE", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET transaction_read_only = off", "RESET transaction_read_only",
        "SELECT set_config('default_transaction_read_only', x, false) FROM t"}) {
    EXPECT_NE(Problem(sql, true), "") << sql;
    EXPECT_EQ(Problem(sql, false), "") << sql;  // a write grant may
  }
  for (const char* sql :
       {"BEGIN", "BEGIN READ ONLY", "SET TRANSACTION READ ONLY",
        "RESET default_transaction_read_only", "SET default_transaction_read_only = on",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE"}) {
    EXPECT_EQ(Problem(sql, true), "") << sql;
  }
}

TEST(SessionSettings, ServerReportsThatEndTheSession) {
  EXPECT_FALSE(ParameterStatusProblem("standard_conforming_strings", "off", false).ok());
  EXPECT_TRUE(ParameterStatusProblem("standard_conforming_strings", "on", false).ok());
  EXPECT_FALSE(ParameterStatusProblem("client_encoding", "SJIS", false).ok());
  EXPECT_TRUE(ParameterStatusProblem("client_encoding", "UTF8", false).ok());
  EXPECT_FALSE(ParameterStatusProblem("default_transaction_read_only", "off", true).ok());
  EXPECT_TRUE(ParameterStatusProblem("default_transaction_read_only", "off", false).ok());
  EXPECT_TRUE(ParameterStatusProblem("application_name", "x", true).ok());
}

// The messages go on the wire (the refusal at login, the error that ends the session).
TEST(SessionSettings, ServerReportsSayWhy) {
  absl::Status off = ParameterStatusProblem("standard_conforming_strings", "off", false);
  EXPECT_EQ(off.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(off.message(), "the server reports standard_conforming_strings off");
  absl::Status sjis = ParameterStatusProblem("Client_Encoding", "SJIS", false);
  EXPECT_EQ(sjis.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sjis.message(), "the server reports client_encoding SJIS");
  absl::Status writable = ParameterStatusProblem("default_transaction_read_only", "off", true);
  EXPECT_EQ(writable.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(writable.message(),
            "the server reports default_transaction_read_only off on a read-only session");
}

TEST(SessionSettings, WhichTextsAreLookedAtForSettings) {
  for (const char* t :
       {"SET x = 1", "reset all", "select set_config('a','b',false)", "BEGIN", "start transaction",
        "select U&\"\\0073et_config\"('a', 'b', false)", "UPDATE t SET a = 1"}) {
    EXPECT_TRUE(MayChangeSettings(t)) << t;
  }
  EXPECT_FALSE(MayChangeSettings("SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
}

}  // namespace
}  // namespace sluice::agent::postgres
