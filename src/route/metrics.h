// Routing metrics (papers.md §1.5): safety F1/precision/recall and AUPRC of the routed decisions, routing F1 of the
// router's choice against t, the large guard's share of calls, and cost relative to small-only and large-only.
// Cost model: the small guard always runs; the large guard runs on the routed items (the oracle is costed the same
// way, although finding t needs both guards on everything).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "route/features.h"

namespace guardkit::route {

struct BinaryScores {
  double precision = 0, recall = 0, f1 = 0;
  size_t tp = 0, fp = 0, fn = 0, tn = 0;
};

// scikit-learn conventions, zero_division = 0.
BinaryScores binary_scores(const std::vector<int>& predicted, const std::vector<int>& truth);
// scikit-learn average_precision_score (step-wise, ties grouped); NaN when there are no positives.
double average_precision(const std::vector<double>& scores, const std::vector<int>& truth);

struct RoutingMetrics {
  std::string router;
  double threshold = 0;
  size_t n = 0;
  BinaryScores safety;        // final decision (routed: large, else small) vs gold label
  double auprc = 0;           // average precision of the final P(unsafe)
  BinaryScores routing;       // routed vs t
  double large_share = 0;     // routed / n
  double flops_vs_small = 0;  // (small + routed large FLOPs) / small-only FLOPs; NaN when FLOPs are unknown
  double flops_vs_large = 0;  // ... / large-only FLOPs
  double latency_vs_small = 0;  // same for wall time, the large guard's time apportioned by FLOPs (else by count)
  double latency_vs_large = 0;
};

// Decisions for `scores` at ε against a cache that holds both guards' scores and the gold labels.
RoutingMetrics evaluate_routing(const FeatureCache& data, const std::vector<double>& scores, double threshold,
                                const std::string& router_name, double delta = kDefaultDelta);

nlohmann::json to_json(const RoutingMetrics& m);

// A trade-off curve: the metrics at ε placed so that shares 0, 1/(k-1), ..., 1 of `data` are routed.
std::vector<RoutingMetrics> sweep_tradeoff(const FeatureCache& data, const std::vector<double>& scores,
                                           const std::string& router_name, int points = 21,
                                           double delta = kDefaultDelta);

}  // namespace guardkit::route
