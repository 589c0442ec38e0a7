// Choosing ε (route when score > ε): fixed; calibrated so a target share of a reference set goes to the large guard
// (a quantile of the scores, as RouteLLM calibrates); or the ε with the best routing F1 against t on a validation set.
#pragma once
#include <string>
#include <vector>

namespace guardkit::route {

// "default" (the router's own ε), "0.37" (fixed), "share:0.2" (20% of the reference set routed), "f1" (best F1).
struct ThresholdSpec {
  enum class Kind { Default, Fixed, Share, BestF1 };
  Kind kind = Kind::Default;
  double value = 0.0;
  static ThresholdSpec parse(const std::string& text);  // throws guardkit::Error on bad text
  std::string to_string() const;
};

// ε such that the fraction of `scores` strictly above it is as close to `share` as ties allow: the midpoint between
// the k-th and (k+1)-th largest score, k = round(share·n). share 0 → above the maximum; share 1 → below the minimum.
double threshold_for_share(const std::vector<double>& scores, double share);

// ε maximising the F1 of (score > ε) against t; ties broken towards the larger ε (fewer large calls).
double best_f1_threshold(const std::vector<double>& scores, const std::vector<int>& t);

// The fraction of scores strictly above ε.
double routed_share(const std::vector<double>& scores, double threshold);

}  // namespace guardkit::route
