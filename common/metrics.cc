#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice::metrics {
namespace {

// A registration that breaks the format is our bug, found by the first test that registers it.
void Require(bool ok, absl::string_view what) {
  if (ok) return;
  std::fprintf(stderr, "metrics: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

void AddDouble(std::atomic<double>& a, double d) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + d, std::memory_order_relaxed)) {
  }
}

// The length of the valid UTF-8 sequence at the start of `s`, or 0 when it is not one.
size_t Utf8Length(absl::string_view s) {
  const auto b = [&s](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t cp = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  // Overlong forms, surrogates and code points past U+10FFFF are not valid UTF-8.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
      (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
    return 0;
  }
  return n;
}

}  // namespace

void Gauge::Add(double d) { AddDouble(value_, d); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // The first bucket whose upper bound is at least v (le: less than or equal).
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), v) - bounds_->begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AddDouble(sum_, v);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.resize(bounds_->size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

void AppendLabelValue(std::string* out, absl::string_view value) {
  if (value.size() > kMaxLabelValueBytes) value = value.substr(0, kMaxLabelValueBytes);
  while (!value.empty()) {
    const char c = value[0];
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '"') {
      out->append("\\\"");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      const size_t n = Utf8Length(value);
      if (n == 0) {
        out->append("\xEF\xBF\xBD");  // U+FFFD for a byte that starts no valid sequence
        value.remove_prefix(1);
        continue;
      }
      out->append(value.data(), n);
      value.remove_prefix(n);
      continue;
    }
    value.remove_prefix(1);
  }
}

void AppendHelp(std::string* out, absl::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest text that reads back as v, in %g's style as Go's strconv.FormatFloat(v, 'g', -1)
  // writes it (Prometheus' own clients): a bucket's "le" is then spelled as users expect
  // ("0.0005", not "5e-04").
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general);
  if (ec != std::errc()) return absl::StrCat(v);
  return std::string(buf, end);
}

bool ValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool ValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// ---- ExpositionWriter ----

void ExpositionWriter::Family(absl::string_view name, absl::string_view help, Type type) {
  absl::StrAppend(&out_, "# HELP ", name, " ");
  AppendHelp(&out_, help);
  const char* type_name = type == Type::kCounter ? "counter"
                          : type == Type::kGauge ? "gauge"
                                                 : "histogram";
  absl::StrAppend(&out_, "\n# TYPE ", name, " ", type_name, "\n");
}

void ExpositionWriter::Begin(absl::string_view name, absl::Span<const Label> labels,
                             const Label* extra) {
  out_.append(name.data(), name.size());
  if (labels.empty() && extra == nullptr) {
    out_.push_back(' ');
    return;
  }
  out_.push_back('{');
  bool first = true;
  auto add = [&](const Label& l) {
    if (!first) out_.push_back(',');
    first = false;
    absl::StrAppend(&out_, l.name, "=\"");
    AppendLabelValue(&out_, l.value);
    out_.push_back('"');
  };
  for (const Label& l : labels) add(l);
  if (extra != nullptr) add(*extra);
  out_.append("} ");
}

void ExpositionWriter::Sample(absl::string_view name, absl::Span<const Label> labels,
                              double value) {
  Begin(name, labels);
  absl::StrAppend(&out_, FormatValue(value), "\n");
}

void ExpositionWriter::Sample(absl::string_view name, absl::Span<const Label> labels,
                              uint64_t value) {
  Begin(name, labels);
  absl::StrAppend(&out_, value, "\n");
}

void ExpositionWriter::Sample(absl::string_view name, absl::Span<const Label> labels,
                              int64_t value) {
  Begin(name, labels);
  absl::StrAppend(&out_, value, "\n");
}

void ExpositionWriter::HistogramSamples(absl::string_view name, absl::Span<const Label> labels,
                                        const std::vector<double>& bounds,
                                        const Histogram::Snapshot& snapshot) {
  const std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i <= bounds.size(); ++i) {
    const std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
    const Label extra{"le", le};
    Begin(bucket, labels, &extra);
    absl::StrAppend(&out_, snapshot.cumulative[i], "\n");
  }
  Sample(absl::StrCat(name, "_sum"), labels, snapshot.sum);
  Sample(absl::StrCat(name, "_count"), labels, snapshot.cumulative.back());
}

// ---- Families ----

FamilyBase::FamilyBase(std::string name, std::string help, Type type,
                       std::vector<std::string> label_names, size_t max_series)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)),
      max_series_(std::max<size_t>(max_series, 1)) {
  Require(ValidMetricName(name_), absl::StrCat("invalid metric name '", name_, "'"));
  for (const std::string& l : label_names_) {
    Require(ValidLabelName(l) && (type_ != Type::kHistogram || l != "le"),
            absl::StrCat("metric ", name_, ": invalid label name '", l, "'"));
  }
}

std::vector<std::string> FamilyBase::Key(absl::Span<const absl::string_view> values) const {
  Require(values.size() == label_names_.size(),
          absl::StrCat("metric ", name_, ": ", values.size(), " label values for ",
                       label_names_.size(), " labels"));
  std::vector<std::string> key;
  key.reserve(values.size());
  for (absl::string_view v : values) key.emplace_back(v.substr(0, kMaxLabelValueBytes));
  return key;
}

std::vector<ExpositionWriter::Label> FamilyBase::LabelsOf(
    const std::vector<std::string>& values) const {
  std::vector<ExpositionWriter::Label> labels;
  labels.reserve(values.size());
  for (size_t i = 0; i < values.size(); ++i) labels.push_back({label_names_[i], values[i]});
  return labels;
}

template <typename M>
void Family<M>::Render(ExpositionWriter& out) const {
  WriteHeader(out);
  absl::MutexLock lock(&mu_);
  for (const auto& [values, series] : index_) {
    const std::vector<ExpositionWriter::Label> labels = LabelsOf(values);
    if constexpr (std::is_same_v<M, Counter>) {
      out.Sample(name_, labels, series->value());
    } else if constexpr (std::is_same_v<M, Gauge>) {
      out.Sample(name_, labels, series->value());
    } else {
      out.HistogramSamples(name_, labels, bounds_, series->Read());
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry ----

template <typename M>
Family<M>* Registry::Add(std::unique_ptr<Family<M>> family) {
  absl::MutexLock lock(&mu_);
  for (const auto& f : families_) {
    Require(f->name() != family->name(),
            absl::StrCat("metric ", family->name(), " registered twice"));
  }
  Family<M>* out = family.get();
  families_.push_back(std::move(family));
  return out;
}

Family<Counter>* Registry::AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names, size_t max_series) {
  return Add(std::make_unique<Family<Counter>>(std::move(name), std::move(help),
                                               std::move(label_names), max_series));
}

Family<Gauge>* Registry::AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names, size_t max_series) {
  return Add(std::make_unique<Family<Gauge>>(std::move(name), std::move(help),
                                             std::move(label_names), max_series));
}

Family<Histogram>* Registry::AddHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> bounds, size_t max_series) {
  Require(!bounds.empty() && std::is_sorted(bounds.begin(), bounds.end()) &&
              std::adjacent_find(bounds.begin(), bounds.end()) == bounds.end() &&
              std::all_of(bounds.begin(), bounds.end(), [](double b) { return std::isfinite(b); }),
          absl::StrCat("histogram ", name, ": bounds must be finite and strictly ascending"));
  return Add(std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), std::move(label_names), max_series, std::move(bounds)));
}

void Registry::AddCollector(std::function<void(ExpositionWriter&)> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::Render() const {
  ExpositionWriter out;
  std::vector<std::function<void(ExpositionWriter&)>> collectors;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& f : families_) f->Render(out);
    collectors = collectors_;
  }
  // Outside the lock: a collector takes locks of its own (the agent hub's, the event sink's).
  for (const auto& c : collectors) c(out);
  return out.Take();
}

Registry& DefaultRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace sluice::metrics
