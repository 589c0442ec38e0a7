// SafeRoute's baselines (papers.md §1.4) behind the Router interface. All but the oracle look only at the small
// guard's P(unsafe); calibration only drives routing (a kept item keeps the small guard's uncalibrated answer).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "route/router.h"

namespace guardkit::route {

// Binary entropy in bits of P(unsafe) = p.
double entropy_bits(double p);

// Small only (never routes) / large only (always routes).
class ConstantRouter : public Router {
 public:
  explicit ConstantRouter(bool to_large) : to_large_(to_large) {}
  std::string name() const override { return to_large_ ? "large_only" : "small_only"; }
  std::vector<double> scores(const RouteBatch& batch) override;
  double default_threshold() const override { return 0.5; }

 private:
  bool to_large_;
};

// Routes each item with probability p: score ~ U(0, 1), ε = 1 - p. Seeded; the k-th call continues the stream.
class RandomRouter : public Router {
 public:
  explicit RandomRouter(double p = 0.5, uint64_t seed = 0);
  std::string name() const override { return "random"; }
  std::vector<double> scores(const RouteBatch& batch) override;
  double default_threshold() const override { return 1.0 - p_; }

 private:
  double p_;
  uint64_t state_;
};

// Entropy of a (possibly calibrated) small-guard distribution; routes when H > 0.5 bits.
class EntropyRouter : public Router {
 public:
  enum class Calibration { None, Temperature, Contextual, Batch };
  // None: plain entropy. Temperature: q̂ = softmax(z / τ). Contextual / Batch: q̂(c) ∝ q(c) / prior(c), with prior =
  // the small guard on the content-free input " " (contextual) or the mean of q over the training set (batch).
  EntropyRouter(Calibration calibration = Calibration::None, double temperature = 1.0, double prior_unsafe = 0.5);
  std::string name() const override;
  std::vector<double> scores(const RouteBatch& batch) override;
  double default_threshold() const override { return 0.5; }
  double calibrated(double p_small) const;  // q̂(unsafe)
  double temperature() const { return temperature_; }
  double prior_unsafe() const { return prior_unsafe_; }

 private:
  Calibration calibration_;
  double temperature_;
  double prior_unsafe_;
};

// τ by maximum likelihood of the gold labels under softmax(z/τ), as the authors' code: τ0 = 1.5, Adam lr 1e-2,
// 1000 full-batch steps. z = the small guard's logit, log(p / (1 - p)).
double fit_temperature(const std::vector<float>& p_small, const std::vector<int8_t>& labels, int steps = 1000,
                       double lr = 1e-2, double initial = 1.5);

// Routes exactly the items with t = 1 (needs the large guard's P(unsafe) and the gold labels).
class OracleRouter : public Router {
 public:
  explicit OracleRouter(double delta = kDefaultDelta) : delta_(delta) {}
  std::string name() const override { return "oracle"; }
  std::vector<double> scores(const RouteBatch& batch) override;
  double default_threshold() const override { return 0.5; }

 private:
  double delta_;
};

// Builds a baseline by name: small_only, large_only, random (p = `random_p`), entropy, ts, cc, bc, oracle.
// `train` supplies what fitted baselines need (TS: τ; BC: mean q; CC: the cached content-free score).
std::unique_ptr<Router> make_baseline(const std::string& name, const FeatureCache& train, double random_p = 0.5,
                                      uint64_t seed = 0);
std::vector<std::string> baseline_names();

}  // namespace guardkit::route
