#include "route/threshold.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "util/error.h"

namespace guardkit::route {

namespace {
// A threshold between two distinct scores lo < hi (routes hi, keeps lo): their midpoint unless rounding makes it
// land on hi (scores one ulp apart), then lo itself.
double between(double lo, double hi) {
  const double mid = 0.5 * (lo + hi);
  return mid < hi ? mid : lo;
}

double parse_number(const std::string& text, const std::string& whole) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || !std::isfinite(value))
    fail("bad threshold '{}' (use a number, share:F, f1 or default)", whole);
  return value;
}
}  // namespace

ThresholdSpec ThresholdSpec::parse(const std::string& text) {
  ThresholdSpec spec;
  if (text.empty() || text == "default") return spec;
  if (text == "f1") {
    spec.kind = Kind::BestF1;
    return spec;
  }
  if (text.starts_with("share:")) {
    spec.kind = Kind::Share;
    spec.value = parse_number(text.substr(6), text);
    if (spec.value < 0 || spec.value > 1) fail("threshold share must be in [0, 1], got '{}'", text);
    return spec;
  }
  spec.kind = Kind::Fixed;
  spec.value = parse_number(text, text);
  return spec;
}

std::string ThresholdSpec::to_string() const {
  switch (kind) {
    case Kind::Default: return "default";
    case Kind::Fixed: return fmt::format("{}", value);
    case Kind::Share: return fmt::format("share:{}", value);
    case Kind::BestF1: return "f1";
  }
  return "default";
}

double threshold_for_share(const std::vector<double>& scores, double share) {
  if (scores.empty()) fail("threshold calibration: empty reference set");
  if (!(share >= 0 && share <= 1)) fail("threshold calibration: share must be in [0, 1], got {}", share);
  std::vector<double> sorted = scores;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const size_t n = sorted.size();
  const auto k = static_cast<size_t>(std::llround(share * static_cast<double>(n)));
  if (k == 0) return std::nextafter(sorted.front(), INFINITY);
  if (k >= n) return std::nextafter(sorted.back(), -INFINITY);
  if (sorted[k - 1] > sorted[k]) return between(sorted[k], sorted[k - 1]);
  // Ties straddle the cut: pick the side of the tied block that lands closer to k routed items.
  const double tied = sorted[k];
  const size_t above = static_cast<size_t>(std::upper_bound(sorted.begin(), sorted.end(), tied, std::greater<>()) -
                                           sorted.begin());  // items >= tied
  const size_t strictly_above = static_cast<size_t>(
      std::lower_bound(sorted.begin(), sorted.end(), tied, std::greater<>()) - sorted.begin());  // items > tied
  if (k - strictly_above <= above - k) return tied;  // route only those above the tie block
  return above == n ? std::nextafter(tied, -INFINITY) : between(sorted[above], tied);  // route the block too
}

double routed_share(const std::vector<double>& scores, double threshold) {
  if (scores.empty()) return 0.0;
  size_t routed = 0;
  for (double s : scores) routed += s > threshold;
  return static_cast<double>(routed) / scores.size();
}

double best_f1_threshold(const std::vector<double>& scores, const std::vector<int>& t) {
  if (scores.size() != t.size() || scores.empty()) fail("best-F1 threshold: needs matching, non-empty inputs");
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  size_t positives = 0;
  for (int v : t) positives += v != 0;
  // Routing the top j items (j at tie-block ends): F1 = 2·TP / (j + positives).
  double best_f1 = -1, best = std::nextafter(scores[order[0]], INFINITY);  // route nothing
  if (positives == 0) return best;
  size_t tp = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    tp += t[order[j]] != 0;
    const bool block_end = j + 1 == order.size() || scores[order[j + 1]] < scores[order[j]];
    if (!block_end) continue;
    const double f1 = 2.0 * tp / static_cast<double>(j + 1 + positives);
    if (f1 > best_f1) {
      best_f1 = f1;
      best = j + 1 == order.size() ? std::nextafter(scores[order[j]], -INFINITY)
                                   : between(scores[order[j + 1]], scores[order[j]]);
    }
  }
  return best;
}

}  // namespace guardkit::route
