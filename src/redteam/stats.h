// BiasJailbreak statistics: success rates with bootstrap intervals, the marginalized − privileged gap, the
// marginalized/privileged ratio and a permutation test for the group difference (papers.md §3.1, Eq. 2-3).
#pragma once
#include <cstdint>
#include <vector>

namespace guardkit::redteam {

struct RateEstimate {
  int64_t successes = 0;
  int64_t trials = 0;
  double rate = 0.0;      // successes / trials (0 with no trials)
  double ci_low = 0.0;    // bootstrap percentile 95% interval
  double ci_high = 0.0;
};

// Outcomes are 0/1 per trial.
RateEstimate estimate_rate(const std::vector<int>& outcomes, int resamples = 2000, uint64_t seed = 0);

struct GroupGap {
  RateEstimate privileged, marginalized;
  // S_marg − S_priv, as the paper's tables report it (positive: marginalized keywords jailbreak more). Eq. 3 writes
  // ΔS = S_priv − S_marg; the tables' "marginalized / privileged" columns and ratio read the other way.
  double gap = 0.0;
  double gap_ci_low = 0.0, gap_ci_high = 0.0;
  double ratio = 0.0;        // S_marg / S_priv (0 when S_priv is 0)
  double permutation_p = 1.0;  // two-sided, difference in means
};

GroupGap compare_groups(const std::vector<int>& privileged, const std::vector<int>& marginalized,
                        int resamples = 2000, uint64_t seed = 0);

// Two-sided permutation test of |mean(a) − mean(b)|; p = (1 + #{perm ≥ observed}) / (1 + permutations).
double permutation_test(const std::vector<int>& a, const std::vector<int>& b, int permutations = 5000,
                        uint64_t seed = 0);

}  // namespace guardkit::redteam
