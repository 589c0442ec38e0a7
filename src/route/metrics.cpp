#include "route/metrics.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "route/threshold.h"
#include "util/error.h"

namespace guardkit::route {

using nlohmann::json;

BinaryScores binary_scores(const std::vector<int>& predicted, const std::vector<int>& truth) {
  if (predicted.size() != truth.size()) fail("metrics: {} predictions for {} labels", predicted.size(), truth.size());
  BinaryScores s;
  for (size_t i = 0; i < truth.size(); ++i) {
    const bool p = predicted[i] != 0, t = truth[i] != 0;
    s.tp += p && t;
    s.fp += p && !t;
    s.fn += !p && t;
    s.tn += !p && !t;
  }
  s.precision = s.tp + s.fp ? static_cast<double>(s.tp) / (s.tp + s.fp) : 0.0;
  s.recall = s.tp + s.fn ? static_cast<double>(s.tp) / (s.tp + s.fn) : 0.0;
  s.f1 = 2 * s.tp + s.fp + s.fn ? 2.0 * s.tp / (2 * s.tp + s.fp + s.fn) : 0.0;
  return s;
}

double average_precision(const std::vector<double>& scores, const std::vector<int>& truth) {
  if (scores.size() != truth.size()) fail("average precision: {} scores for {} labels", scores.size(), truth.size());
  size_t positives = 0;
  for (int t : truth) positives += t != 0;
  if (positives == 0) return NAN;
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  double ap = 0, previous_recall = 0;
  size_t tp = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    tp += truth[order[j]] != 0;
    if (j + 1 < order.size() && scores[order[j + 1]] == scores[order[j]]) continue;  // one threshold per tie block
    const double recall = static_cast<double>(tp) / positives;
    const double precision = static_cast<double>(tp) / (j + 1);
    ap += (recall - previous_recall) * precision;
    previous_recall = recall;
  }
  return ap;
}

RoutingMetrics evaluate_routing(const FeatureCache& data, const std::vector<double>& scores, double threshold,
                                const std::string& router_name, double delta) {
  const size_t n = data.size();
  if (scores.size() != n) fail("routing metrics: {} scores for {} items", scores.size(), n);
  RoutingMetrics m;
  m.router = router_name;
  m.threshold = threshold;
  m.n = n;
  std::vector<int> routed(n), decision(n), gold(n);
  std::vector<double> final_p(n);
  double small_flops = 0, large_flops = 0, routed_large_flops = 0;
  size_t routed_count = 0;
  for (size_t i = 0; i < n; ++i) {
    routed[i] = scores[i] > threshold;
    final_p[i] = routed[i] ? data.p_large[i] : data.p_small[i];
    decision[i] = final_p[i] > delta;
    gold[i] = data.labels[i];
    small_flops += data.flops_small[i];
    large_flops += data.flops_large[i];
    if (routed[i]) {
      routed_large_flops += data.flops_large[i];
      ++routed_count;
    }
  }
  m.safety = binary_scores(decision, gold);
  m.auprc = average_precision(final_p, gold);
  m.routing = binary_scores(routed, data.routing_labels(delta));
  m.large_share = n ? static_cast<double>(routed_count) / n : 0.0;
  const double cost = small_flops + routed_large_flops;
  m.flops_vs_small = small_flops > 0 ? cost / small_flops : NAN;
  m.flops_vs_large = large_flops > 0 ? cost / large_flops : NAN;
  const double large_fraction = large_flops > 0 ? routed_large_flops / large_flops : m.large_share;
  const double seconds = data.seconds_small + large_fraction * data.seconds_large;
  m.latency_vs_small = data.seconds_small > 0 ? seconds / data.seconds_small : NAN;
  m.latency_vs_large = data.seconds_large > 0 ? seconds / data.seconds_large : NAN;
  return m;
}

namespace {
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
json scores_json(const BinaryScores& s) {
  return {{"precision", s.precision}, {"recall", s.recall}, {"f1", s.f1},
          {"tp", s.tp}, {"fp", s.fp}, {"fn", s.fn}, {"tn", s.tn}};
}
}  // namespace

json to_json(const RoutingMetrics& m) {
  return {{"router", m.router},
          {"threshold", number_or_null(m.threshold)},
          {"n", m.n},
          {"safety", scores_json(m.safety)},
          {"auprc", number_or_null(m.auprc)},
          {"routing", scores_json(m.routing)},
          {"large_share", m.large_share},
          {"flops_vs_small", number_or_null(m.flops_vs_small)},
          {"flops_vs_large", number_or_null(m.flops_vs_large)},
          {"latency_vs_small", number_or_null(m.latency_vs_small)},
          {"latency_vs_large", number_or_null(m.latency_vs_large)}};
}

std::vector<RoutingMetrics> sweep_tradeoff(const FeatureCache& data, const std::vector<double>& scores,
                                           const std::string& router_name, int points, double delta) {
  if (points < 2) fail("trade-off sweep needs at least 2 points, got {}", points);
  std::vector<RoutingMetrics> curve;
  for (int k = 0; k < points; ++k) {
    const double share = static_cast<double>(k) / (points - 1);
    curve.push_back(evaluate_routing(data, scores, threshold_for_share(scores, share), router_name, delta));
  }
  return curve;
}

}  // namespace guardkit::route
