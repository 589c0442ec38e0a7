// Prometheus metrics for the guard server: counters, gauges and histograms with labels, rendered in the Prometheus
// text exposition format (version 0.0.4). Thread-safe; small on purpose (no client library in Debian).
#pragma once
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace guardkit::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

class MetricsRegistry {
 public:
  // Declares a family once (HELP and TYPE lines). Histograms take their bucket upper bounds (ascending).
  void describe_counter(const std::string& name, const std::string& help);
  void describe_gauge(const std::string& name, const std::string& help);
  void describe_histogram(const std::string& name, const std::string& help, std::vector<double> buckets);

  void increment(const std::string& name, const Labels& labels, double by = 1.0);  // counter
  void set(const std::string& name, const Labels& labels, double value);           // gauge
  void observe(const std::string& name, const Labels& labels, double value);       // histogram
  // A gauge read when the metrics are rendered (queue depth, in-flight requests).
  void gauge_callback(const std::string& name, const Labels& labels, std::function<double()> read);
  // A counter kept elsewhere (a client's per-endpoint totals), read when the metrics are rendered.
  void counter_callback(const std::string& name, const Labels& labels, std::function<double()> read);

  // Current value of a counter or gauge series (0 if absent); a histogram's count. For tests and the bench.
  double value(const std::string& name, const Labels& labels) const;

  std::string render() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct HistogramSeries {
    std::vector<double> bucket_counts;  // non-cumulative per bucket, plus one for +Inf
    double sum = 0.0;
    double count = 0.0;
  };
  struct Family {
    Kind kind = Kind::kCounter;
    std::string help;
    std::vector<double> buckets;
    std::map<std::string, double> values;  // rendered label set -> value (counters, gauges)
    std::map<std::string, std::function<double()>> callbacks;
    std::map<std::string, HistogramSeries> histograms;
  };
  Family& family(const std::string& name, Kind kind);
  void describe(const std::string& name, Kind kind, const std::string& help, std::vector<double> buckets);

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
};

// `{a="x",b="y"}` with Prometheus escaping; "" for no labels.
std::string render_labels(const Labels& labels);

}  // namespace guardkit::serve
