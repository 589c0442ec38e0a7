#include "route/routed_guard.h"

#include "util/error.h"

namespace guardkit::route {

RoutedGuard::RoutedGuard(std::shared_ptr<guard::Guard> small, std::shared_ptr<guard::Guard> large,
                         std::shared_ptr<Router> router, double threshold, std::string name)
    : small_(std::move(small)), large_(std::move(large)), router_(std::move(router)), threshold_(threshold),
      name_(std::move(name)) {
  if (!small_ || !large_ || !router_) fail("routed guard needs a small guard, a large guard and a router");
  if (router_->needs_features() && small_->feature_dim() <= 0)
    fail("router '{}' needs features but small guard '{}' gives none", router_->name(), small_->name());
  if (name_.empty()) name_ = fmt::format("{}({}->{})", router_->name(), small_->name(), large_->name());
}

double RoutedGuard::threshold() const { return small_->threshold(); }

std::vector<guard::GuardResult> RoutedGuard::score(const std::vector<guard::Conversation>& batch,
                                                   const guard::ScoreOptions& options) {
  if (batch.empty()) return {};
  guard::ScoreOptions small_options = options;
  small_options.want_features = options.want_features || router_->needs_features();
  std::vector<guard::GuardResult> results = small_->score(batch, small_options);
  if (results.size() != batch.size())
    fail("small guard '{}' returned {} results for {} items", small_->name(), results.size(), batch.size());

  // Router input: the small guard's features and P(unsafe).
  const int64_t dim = router_->needs_features() ? small_->feature_dim() : 0;
  std::vector<float> features;
  std::vector<float> p_small(batch.size());
  if (dim > 0) features.reserve(batch.size() * dim);
  for (size_t i = 0; i < batch.size(); ++i) {
    p_small[i] = static_cast<float>(results[i].p_unsafe);
    if (dim > 0) {
      if (static_cast<int64_t>(results[i].feature.size()) != dim)
        fail("small guard '{}' returned a {}-d feature, expected {}", small_->name(), results[i].feature.size(), dim);
      features.insert(features.end(), results[i].feature.begin(), results[i].feature.end());
    }
  }
  RouteBatch route_batch;
  route_batch.n = batch.size();
  route_batch.dim = dim;
  route_batch.features = dim > 0 ? features.data() : nullptr;
  route_batch.p_small = p_small.data();
  const std::vector<double> route_scores = router_->scores(route_batch);
  if (route_scores.size() != batch.size()) fail("router '{}' returned {} scores", router_->name(), route_scores.size());

  std::vector<size_t> routed;
  std::vector<guard::Conversation> routed_batch;
  for (size_t i = 0; i < batch.size(); ++i) {
    results[i].router_score = route_scores[i];
    results[i].decided_by = small_->name();
    if (!options.want_features) results[i].feature.clear();
    if (route_scores[i] > threshold_) {
      routed.push_back(i);
      routed_batch.push_back(batch[i]);
    }
  }
  if (routed.empty()) return results;

  guard::ScoreOptions large_options = options;
  large_options.want_features = false;
  std::vector<guard::GuardResult> large_results = large_->score(routed_batch, large_options);
  if (large_results.size() != routed.size())
    fail("large guard '{}' returned {} results for {} items", large_->name(), large_results.size(), routed.size());
  for (size_t k = 0; k < routed.size(); ++k) {
    guard::GuardResult& kept = results[routed[k]];
    guard::GuardResult& large = large_results[k];
    large.tokens += kept.tokens;
    large.flops += kept.flops;
    large.router_score = kept.router_score;
    large.decided_by = large_->name();
    large.feature = std::move(kept.feature);  // the feature is the small guard's, whoever decided
    kept = std::move(large);
  }
  return results;
}

}  // namespace guardkit::route
