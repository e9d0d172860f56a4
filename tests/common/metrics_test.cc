#include "common/metrics.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sluice::metrics {
namespace {

TEST(Metrics, CountersAndGaugesWithHelpTypeAndLabelsInOrder) {
  Registry r;
  auto* statements = r.AddCounter("sluice_test_statements_total", "Statements by decision.",
                                  {"connection", "decision"});
  statements->Get({"demo", "allowed"})->Inc(3);
  statements->Get({"demo", "blocked"})->Inc();
  statements->Get({"demo", "allowed"})->Inc();
  r.AddGauge("sluice_test_depth", "Depth now.")->Get()->Set(2.5);
  EXPECT_EQ(r.Render(),
            "# HELP sluice_test_statements_total Statements by decision.\n"
            "# TYPE sluice_test_statements_total counter\n"
            "sluice_test_statements_total{connection=\"demo\",decision=\"allowed\"} 4\n"
            "sluice_test_statements_total{connection=\"demo\",decision=\"blocked\"} 1\n"
            "# HELP sluice_test_depth Depth now.\n"
            "# TYPE sluice_test_depth gauge\n"
            "sluice_test_depth 2.5\n");
}

TEST(Metrics, AFamilyWithNoSeriesYetHasItsHeaderOnly) {
  Registry r;
  r.AddCounter("sluice_test_total", "Nothing yet.", {"connection"});
  EXPECT_EQ(r.Render(),
            "# HELP sluice_test_total Nothing yet.\n"
            "# TYPE sluice_test_total counter\n");
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  Registry r;
  auto* c = r.AddCounter("sluice_test_total", "A \\ backslash\nand a newline \"kept\".", {"v"});
  c->Get({"a\\b\"c\nd"})->Inc();
  const std::string text = r.Render();
  EXPECT_NE(text.find("# HELP sluice_test_total A \\\\ backslash\\nand a newline \"kept\".\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sluice_test_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"), std::string::npos) << text;
}

TEST(Metrics, InvalidUtf8InALabelValueBecomesTheReplacementCharacter) {
  std::string out;
  AppendLabelValue(&out, std::string("ok\xff\xc3\xa9\xe0\x80\x80z", 9));
  EXPECT_EQ(out, "ok\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz");
}

TEST(Metrics, LongLabelValuesAreCut) {
  std::string out;
  AppendLabelValue(&out, std::string(1000, 'x'));
  EXPECT_EQ(out.size(), kMaxLabelValueBytes);
}

TEST(Metrics, ValuesAreWrittenAsPrometheusReadsThem) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");  // as Go's clients write a bucket's bound
  EXPECT_EQ(FormatValue(5e-5), "5e-05");
  EXPECT_EQ(FormatValue(1e6), "1e+06");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(0.0 / 0.0), "NaN");
}

TEST(Metrics, NamesFollowTheFormat) {
  EXPECT_TRUE(ValidMetricName("sluice_agent_sessions_total"));
  EXPECT_TRUE(ValidMetricName("a:b_c9"));
  EXPECT_FALSE(ValidMetricName("9a"));
  EXPECT_FALSE(ValidMetricName("a-b"));
  EXPECT_FALSE(ValidMetricName(""));
  EXPECT_TRUE(ValidLabelName("connection"));
  EXPECT_FALSE(ValidLabelName("__name__"));
  EXPECT_FALSE(ValidLabelName("a:b"));
  EXPECT_FALSE(ValidLabelName("1a"));
}

TEST(Metrics, HistogramBucketsAreCumulativeWithSumAndCount) {
  Registry r;
  auto* h = r.AddHistogram("sluice_test_seconds", "Durations.", {"connection"},
                           {0.0625, 0.125, 1});  // exact in binary: the sum is too
  Histogram* demo = h->Get({"demo"});
  demo->Observe(0.03125);
  demo->Observe(0.0625);  // le: an observation on a bound is in that bucket
  demo->Observe(0.5);
  demo->Observe(3);
  EXPECT_EQ(r.Render(),
            "# HELP sluice_test_seconds Durations.\n"
            "# TYPE sluice_test_seconds histogram\n"
            "sluice_test_seconds_bucket{connection=\"demo\",le=\"0.0625\"} 2\n"
            "sluice_test_seconds_bucket{connection=\"demo\",le=\"0.125\"} 2\n"
            "sluice_test_seconds_bucket{connection=\"demo\",le=\"1\"} 3\n"
            "sluice_test_seconds_bucket{connection=\"demo\",le=\"+Inf\"} 4\n"
            "sluice_test_seconds_sum{connection=\"demo\"} 3.59375\n"
            "sluice_test_seconds_count{connection=\"demo\"} 4\n");
}

TEST(Metrics, LabelSetsPastTheCapShareTheOverflowSeries) {
  Registry r;
  auto* c = r.AddCounter("sluice_test_total", "Capped.", {"connection", "decision"}, 3);
  Counter* a = c->Get({"a", "allowed"});
  c->Get({"b", "allowed"})->Inc();
  c->Get({"c", "allowed"})->Inc();
  Counter* d = c->Get({"d", "allowed"});
  Counter* e = c->Get({"e", "blocked"});
  EXPECT_EQ(d, e);
  EXPECT_EQ(c->Get({"a", "allowed"}), a);  // known sets keep their series
  d->Inc();
  e->Inc();
  const std::string text = r.Render();
  EXPECT_NE(text.find("sluice_test_total{connection=\"_other\",decision=\"_other\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("connection=\"d\""), std::string::npos) << text;
  // 3 label sets and the overflow series, however many more come.
  for (int i = 0; i < 100; ++i) c->Get({absl::StrCat("x", i), "allowed"})->Inc();
  size_t lines = 0;
  for (char ch : r.Render()) lines += ch == '\n';
  EXPECT_EQ(lines, 2u + 3u + 1u);
}

TEST(Metrics, CollectorsWriteAfterTheFamilies) {
  Registry r;
  r.AddCounter("sluice_test_a_total", "A.")->Get()->Inc();
  r.AddCollector([](ExpositionWriter& out) {
    out.Family("sluice_test_b", "B.", Type::kGauge);
    const ExpositionWriter::Label labels[] = {{"agent", "agent-a"}};
    out.Sample("sluice_test_b", labels, uint64_t{7});
  });
  EXPECT_EQ(r.Render(),
            "# HELP sluice_test_a_total A.\n"
            "# TYPE sluice_test_a_total counter\n"
            "sluice_test_a_total 1\n"
            "# HELP sluice_test_b B.\n"
            "# TYPE sluice_test_b gauge\n"
            "sluice_test_b{agent=\"agent-a\"} 7\n");
}

TEST(Metrics, UpdatesFromManyThreadsAreAllCounted) {
  Registry r;
  Counter* c = r.AddCounter("sluice_test_total", "C.")->Get();
  Gauge* g = r.AddGauge("sluice_test_gauge", "G.")->Get();
  Histogram* h = r.AddHistogram("sluice_test_seconds", "H.", {}, LatencyBuckets())->Get();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Inc();
        g->Add(1);
        h->Observe(0.002);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->value(), 40000u);
  EXPECT_EQ(g->value(), 40000);
  Histogram::Snapshot s = h->Read();
  EXPECT_EQ(s.cumulative.back(), 40000u);
  EXPECT_NEAR(s.sum, 80, 1e-6);
}

TEST(MetricsDeathTest, ANameTakenTwiceIsAProgrammingError) {
  Registry r;
  r.AddCounter("sluice_test_total", "C.");
  EXPECT_DEATH(r.AddGauge("sluice_test_total", "G."), "registered twice");
  EXPECT_DEATH(r.AddGauge("bad-name", "G."), "invalid metric name");
  EXPECT_DEATH(r.AddHistogram("sluice_test_seconds", "H.", {}, {1, 0.5}), "ascending");
}

}  // namespace
}  // namespace sluice::metrics
