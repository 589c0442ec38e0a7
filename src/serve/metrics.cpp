#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace guardkit::serve {

namespace {

std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{}", static_cast<long long>(value));
  return fmt::format("{}", value);
}

// Adds `extra` (e.g. le="0.5") inside a rendered label set.
std::string with_label(const std::string& rendered, const std::string& extra) {
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

}  // namespace

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ",";
    out += labels[i].first + "=\"" + escape_label_value(labels[i].second) + "\"";
  }
  return out + "}";
}

void MetricsRegistry::describe(const std::string& name, Kind kind, const std::string& help,
                               std::vector<double> buckets) {
  std::lock_guard lock(mutex_);
  Family& f = families_[name];
  f.kind = kind;
  f.help = help;
  std::sort(buckets.begin(), buckets.end());
  f.buckets = std::move(buckets);
}

void MetricsRegistry::describe_counter(const std::string& name, const std::string& help) {
  describe(name, Kind::kCounter, help, {});
}
void MetricsRegistry::describe_gauge(const std::string& name, const std::string& help) {
  describe(name, Kind::kGauge, help, {});
}
void MetricsRegistry::describe_histogram(const std::string& name, const std::string& help,
                                         std::vector<double> buckets) {
  describe(name, Kind::kHistogram, help, std::move(buckets));
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, Kind kind) {
  auto it = families_.find(name);
  if (it == families_.end()) fail("metric {} was not described", name);
  if (it->second.kind != kind) fail("metric {} used with the wrong type", name);
  return it->second;
}

void MetricsRegistry::increment(const std::string& name, const Labels& labels, double by) {
  std::lock_guard lock(mutex_);
  family(name, Kind::kCounter).values[render_labels(labels)] += by;
}

void MetricsRegistry::set(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mutex_);
  family(name, Kind::kGauge).values[render_labels(labels)] = value;
}

void MetricsRegistry::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mutex_);
  Family& f = family(name, Kind::kHistogram);
  HistogramSeries& series = f.histograms[render_labels(labels)];
  if (series.bucket_counts.empty()) series.bucket_counts.assign(f.buckets.size() + 1, 0.0);
  size_t bucket = std::lower_bound(f.buckets.begin(), f.buckets.end(), value) - f.buckets.begin();
  series.bucket_counts[bucket] += 1;
  series.sum += value;
  series.count += 1;
}

void MetricsRegistry::gauge_callback(const std::string& name, const Labels& labels, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  family(name, Kind::kGauge).callbacks[render_labels(labels)] = std::move(read);
}

void MetricsRegistry::counter_callback(const std::string& name, const Labels& labels, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  family(name, Kind::kCounter).callbacks[render_labels(labels)] = std::move(read);
}

double MetricsRegistry::value(const std::string& name, const Labels& labels) const {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0.0;
  const Family& f = it->second;
  std::string key = render_labels(labels);
  if (f.kind == Kind::kHistogram) {
    auto h = f.histograms.find(key);
    return h == f.histograms.end() ? 0.0 : h->second.count;
  }
  if (auto c = f.callbacks.find(key); c != f.callbacks.end()) return c->second();
  auto v = f.values.find(key);
  return v == f.values.end() ? 0.0 : v->second;
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    const char* type = f.kind == Kind::kCounter ? "counter" : f.kind == Kind::kGauge ? "gauge" : "histogram";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, f.help, name, type);
    if (f.kind == Kind::kHistogram) {
      for (const auto& [labels, series] : f.histograms) {
        double cumulative = 0;
        for (size_t b = 0; b < f.buckets.size(); ++b) {
          cumulative += series.bucket_counts[b];
          out += fmt::format("{}_bucket{} {}\n", name,
                             with_label(labels, "le=\"" + format_number(f.buckets[b]) + "\""),
                             format_number(cumulative));
        }
        out += fmt::format("{}_bucket{} {}\n", name, with_label(labels, "le=\"+Inf\""), format_number(series.count));
        out += fmt::format("{}_sum{} {}\n", name, labels, format_number(series.sum));
        out += fmt::format("{}_count{} {}\n", name, labels, format_number(series.count));
      }
      continue;
    }
    for (const auto& [labels, v] : f.values) out += fmt::format("{}{} {}\n", name, labels, format_number(v));
    for (const auto& [labels, read] : f.callbacks) out += fmt::format("{}{} {}\n", name, labels, format_number(read()));
  }
  return out;
}

}  // namespace guardkit::serve
