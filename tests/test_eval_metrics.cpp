// Metrics against values computed by hand, following scikit-learn 1.6's definitions (python here has no sklearn;
// each expected value is derived in the comment next to it).
#include <gtest/gtest.h>

#include <cmath>

#include "eval/metrics.h"
#include "util/error.h"

namespace guardkit::eval {
namespace {

TEST(Metrics, SklearnDocExample) {
  // sklearn docs: average_precision_score([0,0,1,1], [.1,.4,.35,.8]) = 0.8333, roc_auc_score = 0.75.
  // Thresholds .8: P=1 R=.5; .4: P=.5 R=.5; .35: P=2/3 R=1; .1: P=.5 R=1 -> AP = .5*1 + .5*(2/3).
  std::vector<int> labels = {0, 0, 1, 1};
  std::vector<double> scores = {0.1, 0.4, 0.35, 0.8};
  EXPECT_NEAR(average_precision(labels, scores), 0.5 + 0.5 * 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(roc_auc(labels, scores), 0.75, 1e-12);
}

TEST(Metrics, TiedScoresFormOneThreshold) {
  // Thresholds .9: tp1 fp1 (P=.5, R=1/3); .5: tp2 fp2 (P=.5, R=2/3); .1: tp3 fp2 (P=.6, R=1).
  // AP = (.5 + .5 + .6) / 3. AUROC pairs: (.9 vs .9) 1/2, (.9 vs .5) 1, (.5 vs .5) 1/2, rest 0 -> 2 / 6.
  std::vector<int> labels = {1, 0, 1, 0, 1};
  std::vector<double> scores = {0.9, 0.9, 0.5, 0.5, 0.1};
  EXPECT_NEAR(average_precision(labels, scores), 1.6 / 3.0, 1e-12);
  EXPECT_NEAR(roc_auc(labels, scores), 2.0 / 6.0, 1e-12);
  // The order of tied examples does not matter.
  std::vector<int> swapped = {0, 1, 0, 1, 1};
  EXPECT_NEAR(average_precision(swapped, scores), 1.6 / 3.0, 1e-12);
}

TEST(Metrics, AllTies) {
  // One threshold: P = 2/5, R = 1 -> AP = positive rate; AUROC = 1/2.
  std::vector<int> labels = {1, 0, 0, 1, 0};
  std::vector<double> scores(5, 0.5);
  EXPECT_NEAR(average_precision(labels, scores), 0.4, 1e-12);
  EXPECT_NEAR(roc_auc(labels, scores), 0.5, 1e-12);
}

TEST(Metrics, NoPositives) {
  // sklearn: recall set to 1 at every threshold -> AP 0 (with a warning); roc_auc_score raises -> NaN here.
  std::vector<int> labels = {0, 0, 0};
  std::vector<double> scores = {0.2, 0.5, 0.9};
  EXPECT_EQ(average_precision(labels, scores), 0.0);
  EXPECT_TRUE(std::isnan(roc_auc(labels, scores)));
  Confusion c = confusion(labels, {0, 1, 0});
  EXPECT_EQ(precision_score(c), 0.0);                 // 0 / 1
  EXPECT_EQ(recall_score(c), 0.0);                    // 0/0 -> zero_division 0
  EXPECT_EQ(recall_score(c, 1.0), 1.0);               // 0/0 -> zero_division 1
  EXPECT_EQ(f1_score(c, 1.0), 0.0);                   // 2tp/(2tp+fp+fn) = 0/1, defined
  Confusion nothing = confusion(labels, {0, 0, 0});   // tp+fp+fn = 0: every ratio is zero_division
  EXPECT_EQ(precision_score(nothing), 0.0);
  EXPECT_EQ(f1_score(nothing), 0.0);
  EXPECT_EQ(precision_score(nothing, 1.0), 1.0);
  EXPECT_EQ(recall_score(nothing, 1.0), 1.0);
  EXPECT_EQ(f1_score(nothing, 1.0), 1.0);
}

TEST(Metrics, OneClassAllPositive) {
  // Every threshold has precision 1 -> AP 1; AUROC undefined.
  std::vector<int> labels = {1, 1, 1};
  std::vector<double> scores = {0.2, 0.5, 0.9};
  EXPECT_EQ(average_precision(labels, scores), 1.0);
  EXPECT_TRUE(std::isnan(roc_auc(labels, scores)));
  Confusion c = confusion(labels, {1, 1, 0});
  EXPECT_EQ(precision_score(c), 1.0);
  EXPECT_NEAR(recall_score(c), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(f1_score(c), 0.8, 1e-12);  // 4 / (4 + 0 + 1)
  // Nothing predicted unsafe: precision 0/0 (zero_division), recall 0, F1 0 whatever zero_division is.
  Confusion none = confusion(labels, {0, 0, 0});
  EXPECT_EQ(precision_score(none, 1.0), 1.0);
  EXPECT_EQ(f1_score(none, 1.0), 0.0);
}

TEST(Metrics, ExpectedCalibrationError) {
  // 10 bins: (.05, y0) |0-.05|, (.15, y1) .85, (.95, y1) .05, (.85, y1) .15, each weight 1/4.
  EXPECT_NEAR(expected_calibration_error({0, 1, 1, 1}, {0.05, 0.15, 0.95, 0.85}), 0.25 * 1.1, 1e-12);
  // Same bin: |mean label - mean p| = |.5 - .5| = 0 although each is off by .5.
  EXPECT_NEAR(expected_calibration_error({0, 1}, {0.5, 0.5}), 0.0, 1e-12);
  // p = 1.0 lands in the last bin; 2 bins: bin0 {.1 (y0)} |0-.1|, bin1 {1.0 (y1), .5 (y0)} |.5 - .75|.
  EXPECT_NEAR(expected_calibration_error({0, 1, 0}, {0.1, 1.0, 0.5}, 2), (0.1 + 2 * 0.25) / 3, 1e-12);
}

TEST(Metrics, PercentileMatchesNumpyLinear) {
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 2.5), 1.075, 1e-12);  // 1 + .025 * 3
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 97.5), 3.925, 1e-12);
  EXPECT_EQ(percentile({7}, 50), 7);
  EXPECT_TRUE(std::isnan(percentile({NAN, NAN}, 50)));
  EXPECT_EQ(percentile({NAN, 5, 1}, 100), 5);
}

TEST(Metrics, ReportAndSeededBootstrap) {
  std::vector<int> labels, predictions;
  std::vector<double> scores;
  for (int i = 0; i < 200; ++i) {
    labels.push_back(i % 3 == 0);
    scores.push_back(std::fmod(i * 0.377 + (i % 3 == 0 ? 0.3 : 0.0), 1.0));
    predictions.push_back(scores.back() >= 0.5);
  }
  MetricOptions options;
  options.bootstrap_resamples = 300;
  options.seed = 7;
  MetricReport report = compute_metrics(labels, scores, predictions, options);
  Confusion c = confusion(labels, predictions);
  EXPECT_EQ(report.value[kF1], f1_score(c));
  EXPECT_EQ(report.value[kAuprc], average_precision(labels, scores));
  EXPECT_EQ(report.positives, 67);
  EXPECT_NEAR(report.value[kAccuracy], static_cast<double>(c.tp + c.tn) / 200, 1e-12);
  for (int m = 0; m < kMetricCount; ++m) {
    SCOPED_TRACE(kMetricNames[m]);
    EXPECT_LT(report.interval[m].low, report.interval[m].high);
    EXPECT_LE(report.interval[m].low, report.value[m] + 1e-12);
    EXPECT_GE(report.interval[m].high, report.value[m] - 1e-12);
  }
  MetricReport again = compute_metrics(labels, scores, predictions, options);
  EXPECT_EQ(again.resamples, report.resamples);
  options.seed = 8;
  MetricReport other = compute_metrics(labels, scores, predictions, options);
  EXPECT_NE(other.resamples, report.resamples);

  // A perfect separation keeps AUROC = 1 in every resample that has both classes.
  std::vector<int> perfect_predictions(labels);
  std::vector<double> perfect_scores(labels.begin(), labels.end());
  MetricReport perfect = compute_metrics(labels, perfect_scores, perfect_predictions, options);
  EXPECT_EQ(perfect.interval[kAuroc].low, 1.0);
  EXPECT_EQ(perfect.interval[kAuroc].high, 1.0);
}

TEST(Metrics, MacroAverageSkipsUndefinedValues) {
  MetricOptions options;
  options.bootstrap_resamples = 50;
  MetricReport mixed = compute_metrics({0, 0, 1, 1}, {0.1, 0.4, 0.35, 0.8}, {0, 0, 0, 1}, options);
  MetricReport positives_only = compute_metrics({1, 1, 1}, {0.2, 0.5, 0.9}, {1, 1, 0}, options);
  MetricReport average = average_reports({mixed, positives_only}, options);
  EXPECT_NEAR(average.value[kF1], (mixed.value[kF1] + 0.8) / 2, 1e-12);
  EXPECT_NEAR(average.value[kAuroc], 0.75, 1e-12);  // the all-positive set has no AUROC
  EXPECT_EQ(average.examples, 7);
  EXPECT_LE(average.interval[kF1].low, average.interval[kF1].high);
}

TEST(Metrics, BadInputIsAnError) {
  EXPECT_THROW(compute_metrics({}, {}, {}), guardkit::Error);
  EXPECT_THROW(compute_metrics({0, 1}, {0.5}, {0, 1}), guardkit::Error);
  EXPECT_THROW(compute_metrics({0, 2}, {0.5, 0.5}, {0, 1}), guardkit::Error);
  EXPECT_THROW(average_precision({0, 1}, {0.5, NAN}), guardkit::Error);
  EXPECT_THROW(expected_calibration_error({0}, {0.5}, 0), guardkit::Error);
}


// Over-flagging: FPR = FP / (FP + TN) with its bootstrap interval; defined on a set with no unsafe example (where
// F1 is only zero_division), undefined on a behaviour list with no safe example.
TEST(Metrics, FalsePositiveRateOnBenignAndMixedSets) {
  MetricOptions options;
  options.bootstrap_resamples = 200;
  // 10 safe prompts, 3 of them flagged.
  std::vector<int> labels(10, 0), predictions = {1, 0, 0, 1, 0, 0, 0, 1, 0, 0};
  std::vector<double> scores = {0.9, 0.1, 0.2, 0.7, 0.3, 0.1, 0.4, 0.6, 0.2, 0.1};
  MetricReport benign = compute_metrics(labels, scores, predictions, options);
  EXPECT_DOUBLE_EQ(benign.value[kFpr], 0.3);
  EXPECT_LT(benign.interval[kFpr].low, 0.3);
  EXPECT_GT(benign.interval[kFpr].high, 0.3);
  EXPECT_GE(benign.interval[kFpr].low, 0.0);
  EXPECT_LE(benign.interval[kFpr].high, 1.0);
  EXPECT_EQ(benign.value[kF1], 0.0);  // no positive: only zero_division
  // Mixed: positives do not enter the FPR.
  MetricReport mixed = compute_metrics({0, 0, 0, 0, 1, 1}, {0.8, 0.1, 0.2, 0.3, 0.9, 0.2}, {1, 0, 0, 0, 1, 0}, options);
  EXPECT_DOUBLE_EQ(mixed.value[kFpr], 0.25);
  MetricReport unsafe_only = compute_metrics({1, 1}, {0.9, 0.2}, {1, 0}, options);
  EXPECT_TRUE(std::isnan(unsafe_only.value[kFpr]));
  EXPECT_STREQ(kMetricNames[kFpr], "fpr");
  // The macro average over both sets skips the undefined one.
  MetricReport average = average_reports({benign, unsafe_only}, options);
  EXPECT_DOUBLE_EQ(average.value[kFpr], 0.3);
}

}  // namespace
}  // namespace guardkit::eval
