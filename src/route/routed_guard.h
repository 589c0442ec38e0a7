// SafeRoute at inference: the small guard scores the whole batch (with features when the router needs them), the
// router picks items, and the large guard (local or remote) scores only those. Each result says which guard decided
// (GuardResult::decided_by) and carries the router's score.
#pragma once
#include <memory>
#include <string>

#include "guard/guard.h"
#include "route/router.h"

namespace guardkit::route {

class RoutedGuard : public guard::Guard {
 public:
  // Routes an item when router score > threshold. The guards and router are shared (the server keeps one of each).
  RoutedGuard(std::shared_ptr<guard::Guard> small, std::shared_ptr<guard::Guard> large, std::shared_ptr<Router> router,
              double threshold, std::string name = "");

  const std::string& name() const override { return name_; }
  double threshold() const override;  // the decision threshold of the guard that decides (small's, as default)
  int64_t feature_dim() const override { return small_->feature_dim(); }
  // Result i is the large guard's where routed, the small guard's otherwise; tokens and FLOPs add up what was spent
  // on the item (small always, large where routed).
  std::vector<guard::GuardResult> score(const std::vector<guard::Conversation>& batch,
                                        const guard::ScoreOptions& options = {}) override;

  double route_threshold() const { return threshold_; }
  void set_route_threshold(double threshold) { threshold_ = threshold; }
  Router& router() { return *router_; }

 private:
  std::shared_ptr<guard::Guard> small_, large_;
  std::shared_ptr<Router> router_;
  double threshold_;
  std::string name_;
};

}  // namespace guardkit::route
