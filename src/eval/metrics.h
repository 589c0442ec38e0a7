// Binary classification metrics for guards, positive class = unsafe (label 1), following scikit-learn 1.6:
//  - precision, recall, F1 from decisions; `zero_division` is the value of a 0/0 ratio (sklearn's default "warn"
//    behaves as 0; HarmAug uses 1). F1 = 2·TP / (2·TP + FP + FN), so F1 is zero_division only when TP+FP+FN = 0.
//  - AUPRC = average_precision_score: Σ_n (R_n − R_{n−1}) · P_n over the distinct score thresholds (tied scores form
//    one threshold; no interpolation). With no positive label, sklearn sets recall to 1 everywhere and AP is 0.
//  - AUROC = roc_auc_score: tied positive/negative pairs count one half. Undefined (NaN here; sklearn raises) when
//    only one class is present.
//  - FPR = FP / (FP + TN): the share of safe examples flagged unsafe (over-flagging); NaN when no example is safe.
//  - ECE: calibration of P(unsafe) itself (not top-label confidence) over `ece_bins` equal-width bins of [0, 1]
//    (default 10; bin b = [b/B, (b+1)/B), the last one closed): Σ_b (n_b / N) · |mean(label)_b − mean(p)_b|.
//  - Bootstrap: resample the examples with replacement (seeded), recompute, percentile interval (numpy's linear
//    interpolation). Resamples where a metric is undefined (AUROC with one class) are left out of its interval.
#pragma once
#include <cstdint>
#include <vector>

namespace guardkit::eval {

struct Confusion {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
};
Confusion confusion(const std::vector<int>& labels, const std::vector<int>& predictions);

double precision_score(const Confusion& c, double zero_division = 0.0);
double recall_score(const Confusion& c, double zero_division = 0.0);
double f1_score(const Confusion& c, double zero_division = 0.0);

double average_precision(const std::vector<int>& labels, const std::vector<double>& scores);
double roc_auc(const std::vector<int>& labels, const std::vector<double>& scores);  // NaN with one class
double expected_calibration_error(const std::vector<int>& labels, const std::vector<double>& scores, int bins = 10);

struct MetricOptions {
  double zero_division = 0.0;
  int ece_bins = 10;
  int bootstrap_resamples = 1000;  // 0 = no intervals
  double confidence = 0.95;
  uint64_t seed = 0;
};

// The metrics guardkit reports, in one fixed order (kMetricNames).
enum MetricIndex { kPrecision, kRecall, kF1, kAuprc, kAuroc, kEce, kAccuracy, kFpr, kMetricCount };
extern const char* const kMetricNames[kMetricCount];

struct Interval {
  double low = 0.0, high = 0.0;  // NaN when no resample had the metric defined
};

struct MetricReport {
  int64_t examples = 0, positives = 0, predicted_positives = 0;
  Confusion confusion;
  double value[kMetricCount] = {};
  Interval interval[kMetricCount];
  // Per-resample values (bootstrap_resamples x kMetricCount, row-major), kept so the average over datasets gets its
  // interval from the same resamples.
  std::vector<double> resamples;
};

// `scores` = P(unsafe) per example, `predictions` = the guard's decision (0/1). Throws guardkit::Error when the
// sizes differ, labels are not 0/1, or there are no examples.
MetricReport compute_metrics(const std::vector<int>& labels, const std::vector<double>& scores,
                             const std::vector<int>& predictions, const MetricOptions& options = {});

// Macro average over datasets (NaN values are skipped, as a dataset with one class has no AUROC); the interval comes
// from averaging the datasets' resample i with each other, so every report must have the same resample count.
MetricReport average_reports(const std::vector<MetricReport>& reports, const MetricOptions& options = {});

// numpy.percentile(values, q, method="linear") of the non-NaN values; NaN when there are none.
double percentile(std::vector<double> values, double q);

}  // namespace guardkit::eval
