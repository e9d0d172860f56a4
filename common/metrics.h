// Prometheus metrics for the control plane and the agent: a small thread-safe registry of
// counters, gauges and histograms with fixed buckets, and the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format) that /metrics
// serves. Written here rather than taken from prometheus-cpp (not in Debian 12): it only writes
// the format, it parses nothing.
//
// Cost on the data path: a series is looked up once (Family::Get takes the family's lock) and its
// pointer kept; each update is then a relaxed atomic operation, with no lock. Series are never
// removed (a counter that vanished and came back would be read as a reset).
//
// Bounded cardinality: each family holds at most `max_series` label sets; past that, every new
// set is counted in one overflow series whose label values are all kOverflowValue, so a label fed
// by names from outside (connections from the policy, agents from enrollment) cannot grow memory
// or a scrape without bound. Never put secrets, tokens or statement text in a label.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace sluice::metrics {

// The label values of the overflow series.
inline constexpr char kOverflowValue[] = "_other";
// Label sets per family unless its registration says otherwise.
inline constexpr size_t kDefaultMaxSeries = 1000;
// Label values are cut to this many bytes.
inline constexpr size_t kMaxLabelValueBytes = 256;

enum class Type { kCounter, kGauge, kHistogram };

// A value that only goes up.
class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted in fixed buckets (upper bounds, ascending; +Inf is implicit), with their
// sum.
class Histogram {
 public:
  // `bounds` belongs to the family and outlives the histogram.
  explicit Histogram(const std::vector<double>* bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (the count)
    double sum = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_->size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

// Writes the text format: families (HELP and TYPE lines) and their samples. Label values are
// escaped (backslash, double quote, newline), invalid UTF-8 is replaced by U+FFFD and long values
// are cut to kMaxLabelValueBytes.
class ExpositionWriter {
 public:
  struct Label {
    absl::string_view name;
    absl::string_view value;
  };

  void Family(absl::string_view name, absl::string_view help, Type type);
  void Sample(absl::string_view name, absl::Span<const Label> labels, double value);
  void Sample(absl::string_view name, absl::Span<const Label> labels, uint64_t value);
  void Sample(absl::string_view name, absl::Span<const Label> labels, int64_t value);
  void Sample(absl::string_view name, absl::Span<const Label> labels, int value) {
    Sample(name, labels, static_cast<int64_t>(value));
  }
  // A histogram's samples: name_bucket{...,le=...}, name_sum, name_count.
  void HistogramSamples(absl::string_view name, absl::Span<const Label> labels,
                        const std::vector<double>& bounds, const Histogram::Snapshot& snapshot);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Begin(absl::string_view name, absl::Span<const Label> labels, const Label* extra = nullptr);
  std::string out_;
};

// Appends `value` as a label value's text (without the quotes).
void AppendLabelValue(std::string* out, absl::string_view value);
// Appends `help` as a HELP line's text (backslash and newline escaped).
void AppendHelp(std::string* out, absl::string_view help);
// A sample value: the shortest text that reads back as `v`; "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);
// Whether `name` is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or label name
// ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__").
bool ValidMetricName(absl::string_view name);
bool ValidLabelName(absl::string_view name);

// What every family shares: its name, help, type, label names and series cap.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names,
             size_t max_series);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  virtual void Render(ExpositionWriter& out) const = 0;

 protected:
  // The label values as kept: one per label name (cut to kMaxLabelValueBytes).
  std::vector<std::string> Key(absl::Span<const absl::string_view> values) const;
  void WriteHeader(ExpositionWriter& out) const { out.Family(name_, help_, type_); }
  std::vector<ExpositionWriter::Label> LabelsOf(const std::vector<std::string>& values) const;

  const std::string name_;
  const std::string help_;
  const Type type_;
  const std::vector<std::string> label_names_;
  const size_t max_series_;
};

// The series of one metric by label values. M is Counter, Gauge or Histogram.
template <typename M>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         size_t max_series, std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(help), TypeOf(), std::move(label_names), max_series),
        bounds_(std::move(bounds)) {}

  // The series of `values` (one per label name, in order), made on first use; the overflow
  // series once the family holds max_series label sets. The pointer lives as long as the family:
  // keep it rather than calling Get per update on a hot path.
  M* Get(absl::Span<const absl::string_view> values) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::string> key = Key(values);
    absl::MutexLock lock(&mu_);
    auto it = index_.find(key);
    if (it != index_.end()) return it->second;
    if (index_.size() >= max_series_) {
      key.assign(label_names_.size(), kOverflowValue);
      it = index_.find(key);
      if (it != index_.end()) return it->second;
    }
    if constexpr (std::is_same_v<M, Histogram>) {
      series_.emplace_back(&bounds_);
    } else {
      series_.emplace_back();
    }
    M* made = &series_.back();
    index_.emplace(std::move(key), made);
    return made;
  }
  M* Get(std::initializer_list<absl::string_view> values) {
    return Get(absl::Span<const absl::string_view>(values.begin(), values.size()));
  }
  // The series of a family without labels.
  M* Get() { return Get(absl::Span<const absl::string_view>()); }

  void Render(ExpositionWriter& out) const override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  static Type TypeOf() {
    if constexpr (std::is_same_v<M, Counter>) return Type::kCounter;
    if constexpr (std::is_same_v<M, Gauge>) return Type::kGauge;
    return Type::kHistogram;
  }

  const std::vector<double> bounds_;  // histograms only
  mutable absl::Mutex mu_;
  std::deque<M> series_ ABSL_GUARDED_BY(mu_);  // a deque: appending moves nothing
  std::map<std::vector<std::string>, M*> index_ ABSL_GUARDED_BY(mu_);  // sorted: stable output
};

// Families registered by name, rendered in registration order, then what collectors write.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registration: a name or label name that is not valid, or a name taken, is a programming
  // error (the process aborts, naming it). The family lives as long as the registry.
  Family<Counter>* AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {},
                              size_t max_series = kDefaultMaxSeries);
  Family<Gauge>* AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {},
                          size_t max_series = kDefaultMaxSeries);
  // `bounds`: the buckets' upper bounds, ascending.
  Family<Histogram>* AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names, std::vector<double> bounds,
                                  size_t max_series = kDefaultMaxSeries);
  // Families whose values are read at scrape time (queue depths, per-agent state): `collect`
  // writes them, headers included, on the scraping thread.
  void AddCollector(std::function<void(ExpositionWriter&)> collect) ABSL_LOCKS_EXCLUDED(mu_);

  // The exposition text of every family.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  template <typename M>
  Family<M>* Add(std::unique_ptr<Family<M>> family) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(ExpositionWriter&)>> collectors_ ABSL_GUARDED_BY(mu_);
};

// The process's registry, what /metrics serves.
Registry& DefaultRegistry();

// Bucket bounds, in seconds, for durations from half a millisecond to a minute.
std::vector<double> LatencyBuckets();

// The content type of the text format.
inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace sluice::metrics
