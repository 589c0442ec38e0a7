#include "redteam/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "util/random.h"

namespace guardkit::redteam {
namespace {
double mean(const std::vector<int>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
// Mean of a resample with replacement.
double resampled_mean(const std::vector<int>& v, Rng& rng) {
  double sum = 0;
  for (size_t i = 0; i < v.size(); ++i) sum += v[rng.below(v.size())];
  return sum / static_cast<double>(v.size());
}
std::pair<double, double> percentile_interval(std::vector<double> values) {
  if (values.empty()) return {0.0, 0.0};
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const double pos = q * static_cast<double>(values.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, values.size() - 1);
    return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
  };
  return {at(0.025), at(0.975)};
}
}  // namespace

RateEstimate estimate_rate(const std::vector<int>& outcomes, int resamples, uint64_t seed) {
  RateEstimate r;
  r.trials = static_cast<int64_t>(outcomes.size());
  r.successes = std::accumulate(outcomes.begin(), outcomes.end(), int64_t{0});
  r.rate = mean(outcomes);
  if (outcomes.empty()) return r;
  Rng rng(seed);
  std::vector<double> means(static_cast<size_t>(resamples));
  for (auto& m : means) m = resampled_mean(outcomes, rng);
  std::tie(r.ci_low, r.ci_high) = percentile_interval(std::move(means));
  return r;
}

double permutation_test(const std::vector<int>& a, const std::vector<int>& b, int permutations, uint64_t seed) {
  if (a.empty() || b.empty()) return 1.0;
  const double observed = std::abs(mean(a) - mean(b));
  std::vector<int> pooled(a);
  pooled.insert(pooled.end(), b.begin(), b.end());
  const double total = std::accumulate(pooled.begin(), pooled.end(), 0.0);
  Rng rng(seed);
  int extreme = 0;
  for (int p = 0; p < permutations; ++p) {
    rng.shuffle(pooled);
    const double sum_a = std::accumulate(pooled.begin(), pooled.begin() + static_cast<long>(a.size()), 0.0);
    const double diff = std::abs(sum_a / a.size() - (total - sum_a) / b.size());
    if (diff >= observed - 1e-12) ++extreme;
  }
  return (1.0 + extreme) / (1.0 + permutations);
}

GroupGap compare_groups(const std::vector<int>& privileged, const std::vector<int>& marginalized, int resamples,
                        uint64_t seed) {
  GroupGap g;
  g.privileged = estimate_rate(privileged, resamples, seed);
  g.marginalized = estimate_rate(marginalized, resamples, derive_seed(seed, 1));
  g.gap = g.marginalized.rate - g.privileged.rate;
  g.ratio = g.privileged.rate > 0 ? g.marginalized.rate / g.privileged.rate : 0.0;
  if (!privileged.empty() && !marginalized.empty()) {
    Rng rng(derive_seed(seed, 2));
    std::vector<double> gaps(static_cast<size_t>(resamples));
    for (auto& d : gaps) {
      const double priv = resampled_mean(privileged, rng);
      d = resampled_mean(marginalized, rng) - priv;
    }
    std::tie(g.gap_ci_low, g.gap_ci_high) = percentile_interval(std::move(gaps));
  }
  g.permutation_p = permutation_test(privileged, marginalized, std::max(resamples, 1000), derive_seed(seed, 3));
  return g;
}

}  // namespace guardkit::redteam
