#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "util/error.h"

namespace guardkit::eval {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
double ratio(int64_t numerator, int64_t denominator, double zero_division) {
  return denominator == 0 ? zero_division : static_cast<double>(numerator) / static_cast<double>(denominator);
}
}  // namespace

const char* const kMetricNames[kMetricCount] = {"precision", "recall", "f1", "auprc", "auroc", "ece", "accuracy", "fpr"};

Confusion confusion(const std::vector<int>& labels, const std::vector<int>& predictions) {
  if (labels.size() != predictions.size()) fail("metrics: {} labels but {} predictions", labels.size(), predictions.size());
  Confusion c;
  for (size_t i = 0; i < labels.size(); ++i) {
    const bool positive = labels[i] == 1, predicted = predictions[i] == 1;
    c.tp += positive && predicted;
    c.fp += !positive && predicted;
    c.fn += positive && !predicted;
    c.tn += !positive && !predicted;
  }
  return c;
}

double precision_score(const Confusion& c, double zero_division) { return ratio(c.tp, c.tp + c.fp, zero_division); }
double recall_score(const Confusion& c, double zero_division) { return ratio(c.tp, c.tp + c.fn, zero_division); }
double f1_score(const Confusion& c, double zero_division) {
  return ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, zero_division);
}

namespace {
// Indices sorted by descending score (stable, so the result does not depend on the sort for tied scores).
std::vector<size_t> by_descending_score(const std::vector<double>& scores) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  return order;
}
void check_scores(const std::vector<int>& labels, const std::vector<double>& scores) {
  if (labels.size() != scores.size()) fail("metrics: {} labels but {} scores", labels.size(), scores.size());
  for (double s : scores)
    if (std::isnan(s)) fail("metrics: a score is NaN");
}
}  // namespace

double average_precision(const std::vector<int>& labels, const std::vector<double>& scores) {
  check_scores(labels, scores);
  const int64_t positives = std::count(labels.begin(), labels.end(), 1);
  if (positives == 0 || labels.empty()) return 0.0;  // sklearn: recall := 1 at every threshold, AP = 0
  std::vector<size_t> order = by_descending_score(scores);
  double ap = 0.0, previous_recall = 0.0;
  int64_t tp = 0, fp = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    (labels[order[k]] == 1 ? tp : fp) += 1;
    // A threshold is a distinct score: close it only after its last tied example.
    if (k + 1 < order.size() && scores[order[k + 1]] == scores[order[k]]) continue;
    const double recall = static_cast<double>(tp) / static_cast<double>(positives);
    const double precision = static_cast<double>(tp) / static_cast<double>(tp + fp);
    ap += (recall - previous_recall) * precision;
    previous_recall = recall;
  }
  return ap;
}

double roc_auc(const std::vector<int>& labels, const std::vector<double>& scores) {
  check_scores(labels, scores);
  const int64_t positives = std::count(labels.begin(), labels.end(), 1);
  const int64_t negatives = static_cast<int64_t>(labels.size()) - positives;
  if (positives == 0 || negatives == 0) return kNaN;
  // Mann-Whitney U with average ranks for ties == the trapezoidal area under sklearn's ROC curve.
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  double positive_rank_sum = 0.0;
  for (size_t start = 0; start < order.size();) {
    size_t end = start;
    while (end < order.size() && scores[order[end]] == scores[order[start]]) ++end;
    const double average_rank = 0.5 * static_cast<double>(start + 1 + end);  // ranks start+1 .. end
    for (size_t k = start; k < end; ++k)
      if (labels[order[k]] == 1) positive_rank_sum += average_rank;
    start = end;
  }
  const double p = static_cast<double>(positives), n = static_cast<double>(negatives);
  return (positive_rank_sum - p * (p + 1) / 2) / (p * n);
}

double expected_calibration_error(const std::vector<int>& labels, const std::vector<double>& scores, int bins) {
  check_scores(labels, scores);
  if (bins < 1) fail("metrics: ECE needs at least one bin, got {}", bins);
  if (labels.empty()) return kNaN;
  std::vector<double> score_sum(bins, 0.0), label_sum(bins, 0.0);
  std::vector<int64_t> count(bins, 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    const double p = std::clamp(scores[i], 0.0, 1.0);
    const int bin = std::min(bins - 1, static_cast<int>(std::floor(p * bins)));
    score_sum[bin] += p;
    label_sum[bin] += labels[i];
    ++count[bin];
  }
  double ece = 0.0;
  for (int b = 0; b < bins; ++b)
    if (count[b] > 0) ece += std::abs(label_sum[b] - score_sum[b]) / static_cast<double>(labels.size());
  return ece;
}

double percentile(std::vector<double> values, double q) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }), values.end());
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const double position = q / 100.0 * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - static_cast<double>(below)) * (values[above] - values[below]);
}

namespace {

void point_metrics(const std::vector<int>& labels, const std::vector<double>& scores, const std::vector<int>& predictions,
                   const MetricOptions& options, double* value, Confusion* confusion_out) {
  Confusion c = confusion(labels, predictions);
  value[kPrecision] = precision_score(c, options.zero_division);
  value[kRecall] = recall_score(c, options.zero_division);
  value[kF1] = f1_score(c, options.zero_division);
  value[kAuprc] = average_precision(labels, scores);
  value[kAuroc] = roc_auc(labels, scores);
  value[kEce] = expected_calibration_error(labels, scores, options.ece_bins);
  value[kAccuracy] = static_cast<double>(c.tp + c.tn) / static_cast<double>(labels.size());
  value[kFpr] = c.fp + c.tn > 0 ? static_cast<double>(c.fp) / static_cast<double>(c.fp + c.tn) : kNaN;
  if (confusion_out) *confusion_out = c;
}

void fill_intervals(MetricReport& report, const MetricOptions& options) {
  const size_t resamples = report.resamples.size() / kMetricCount;
  const double tail = 50.0 * (1.0 - options.confidence);
  for (int m = 0; m < kMetricCount; ++m) {
    if (resamples == 0) {
      report.interval[m] = Interval{kNaN, kNaN};
      continue;
    }
    std::vector<double> column(resamples);
    for (size_t r = 0; r < resamples; ++r) column[r] = report.resamples[r * kMetricCount + m];
    report.interval[m] = Interval{percentile(column, tail), percentile(column, 100.0 - tail)};
  }
}

}  // namespace

MetricReport compute_metrics(const std::vector<int>& labels, const std::vector<double>& scores,
                             const std::vector<int>& predictions, const MetricOptions& options) {
  if (labels.empty()) fail("metrics: no examples");
  if (labels.size() != scores.size() || labels.size() != predictions.size())
    fail("metrics: {} labels, {} scores, {} predictions", labels.size(), scores.size(), predictions.size());
  for (int label : labels)
    if (label != 0 && label != 1) fail("metrics: labels must be 0 or 1, got {}", label);
  if (!(options.confidence > 0.0 && options.confidence < 1.0)) fail("metrics: confidence must be in (0, 1)");

  MetricReport report;
  report.examples = static_cast<int64_t>(labels.size());
  report.positives = std::count(labels.begin(), labels.end(), 1);
  report.predicted_positives = std::count(predictions.begin(), predictions.end(), 1);
  point_metrics(labels, scores, predictions, options, report.value, &report.confusion);

  const size_t n = labels.size();
  std::mt19937_64 rng(options.seed);
  std::vector<int> sample_labels(n), sample_predictions(n);
  std::vector<double> sample_scores(n);
  report.resamples.assign(static_cast<size_t>(std::max(0, options.bootstrap_resamples)) * kMetricCount, 0.0);
  for (int r = 0; r < options.bootstrap_resamples; ++r) {
    for (size_t i = 0; i < n; ++i) {
      // 53 random bits scaled to [0, n): the same draws on every platform (std::uniform_int_distribution is not).
      const size_t j = static_cast<size_t>(static_cast<double>(rng() >> 11) * 0x1.0p-53 * static_cast<double>(n));
      sample_labels[i] = labels[j];
      sample_scores[i] = scores[j];
      sample_predictions[i] = predictions[j];
    }
    point_metrics(sample_labels, sample_scores, sample_predictions, options, &report.resamples[r * kMetricCount],
                  nullptr);
  }
  fill_intervals(report, options);
  return report;
}

MetricReport average_reports(const std::vector<MetricReport>& reports, const MetricOptions& options) {
  if (reports.empty()) fail("metrics: nothing to average");
  MetricReport average;
  const size_t resample_values = reports[0].resamples.size();
  for (const auto& report : reports) {
    if (report.resamples.size() != resample_values) fail("metrics: reports have different bootstrap resample counts");
    average.examples += report.examples;
    average.positives += report.positives;
    average.predicted_positives += report.predicted_positives;
    average.confusion.tp += report.confusion.tp;
    average.confusion.fp += report.confusion.fp;
    average.confusion.tn += report.confusion.tn;
    average.confusion.fn += report.confusion.fn;
  }
  auto mean_skipping_nan = [&](auto value_of) {
    double sum = 0.0;
    int count = 0;
    for (const auto& report : reports) {
      double v = value_of(report);
      if (!std::isnan(v)) sum += v, ++count;
    }
    return count ? sum / count : kNaN;
  };
  for (int m = 0; m < kMetricCount; ++m)
    average.value[m] = mean_skipping_nan([m](const MetricReport& r) { return r.value[m]; });
  average.resamples.assign(resample_values, 0.0);
  for (size_t k = 0; k < resample_values; ++k)
    average.resamples[k] = mean_skipping_nan([k](const MetricReport& r) { return r.resamples[k]; });
  fill_intervals(average, options);
  return average;
}

}  // namespace guardkit::eval
