#include "route/baselines.h"

#include <cmath>
#include <random>

#include "util/error.h"

namespace guardkit::route {

namespace {
constexpr double kProbEps = 1e-7;
double clamp_prob(double p) { return std::min(1.0 - kProbEps, std::max(kProbEps, p)); }
double logit_of(double p) {
  p = clamp_prob(p);
  return std::log(p) - std::log1p(-p);
}
void require_p_small(const RouteBatch& batch, const std::string& who) {
  if (batch.n && !batch.p_small) fail("{} router: the batch carries no small-guard scores", who);
}
}  // namespace

double entropy_bits(double p) {
  double h = 0;
  if (p > 0) h -= p * std::log2(p);
  if (p < 1) h -= (1 - p) * std::log2(1 - p);
  return h;
}

std::vector<double> ConstantRouter::scores(const RouteBatch& batch) {
  return std::vector<double>(batch.n, to_large_ ? 1.0 : 0.0);
}

RandomRouter::RandomRouter(double p, uint64_t seed) : p_(p), state_(seed) {
  if (!(p >= 0 && p <= 1)) fail("random router: p must be in [0, 1], got {}", p);
}

std::vector<double> RandomRouter::scores(const RouteBatch& batch) {
  std::mt19937_64 rng(state_);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<double> out(batch.n);
  for (auto& s : out) s = uniform(rng);
  state_ = rng();  // the next call continues with fresh draws
  return out;
}

EntropyRouter::EntropyRouter(Calibration calibration, double temperature, double prior_unsafe)
    : calibration_(calibration), temperature_(temperature), prior_unsafe_(prior_unsafe) {
  if (!(temperature > 0)) fail("entropy router: temperature must be positive, got {}", temperature);
  if (!(prior_unsafe > 0 && prior_unsafe < 1)) fail("entropy router: prior must be in (0, 1), got {}", prior_unsafe);
}

std::string EntropyRouter::name() const {
  switch (calibration_) {
    case Calibration::None: return "entropy";
    case Calibration::Temperature: return "ts";
    case Calibration::Contextual: return "cc";
    case Calibration::Batch: return "bc";
  }
  return "entropy";
}

double EntropyRouter::calibrated(double p) const {
  switch (calibration_) {
    case Calibration::None: return p;
    case Calibration::Temperature: return 1.0 / (1.0 + std::exp(-logit_of(p) / temperature_));
    case Calibration::Contextual:
    case Calibration::Batch: {
      const double unsafe = p / prior_unsafe_;
      const double safe = (1.0 - p) / (1.0 - prior_unsafe_);
      return unsafe / (unsafe + safe);
    }
  }
  return p;
}

std::vector<double> EntropyRouter::scores(const RouteBatch& batch) {
  require_p_small(batch, name());
  std::vector<double> out(batch.n);
  for (size_t i = 0; i < batch.n; ++i) out[i] = entropy_bits(calibrated(batch.p_small[i]));
  return out;
}

double fit_temperature(const std::vector<float>& p_small, const std::vector<int8_t>& labels, int steps, double lr,
                       double initial) {
  if (p_small.size() != labels.size() || p_small.empty()) fail("temperature fit: needs matching, non-empty scores");
  std::vector<double> z(p_small.size());
  for (size_t i = 0; i < z.size(); ++i) z[i] = logit_of(p_small[i]);
  // NLL(τ) = mean_i [log(1 + exp(z_i/τ)) - y_i z_i/τ]; dNLL/dτ = mean_i (y_i - σ(z_i/τ)) z_i / τ².
  double tau = initial, m = 0, v = 0;
  constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (int step = 1; step <= steps; ++step) {
    double grad = 0;
    for (size_t i = 0; i < z.size(); ++i) {
      const double s = 1.0 / (1.0 + std::exp(-z[i] / tau));
      grad += (labels[i] - s) * z[i] / (tau * tau);
    }
    grad /= static_cast<double>(z.size());
    m = b1 * m + (1 - b1) * grad;
    v = b2 * v + (1 - b2) * grad * grad;
    const double mhat = m / (1 - std::pow(b1, step));
    const double vhat = v / (1 - std::pow(b2, step));
    tau -= lr * mhat / (std::sqrt(vhat) + eps);
    tau = std::max(tau, 1e-3);  // τ must stay positive
  }
  return tau;
}

std::vector<double> OracleRouter::scores(const RouteBatch& batch) {
  if (batch.n && (!batch.p_large || !batch.labels || !batch.p_small))
    fail("oracle router needs the large guard's scores and the gold labels");
  std::vector<double> out(batch.n);
  for (size_t i = 0; i < batch.n; ++i)
    out[i] = routing_label(batch.p_small[i], batch.p_large[i], batch.labels[i], delta_);
  return out;
}

std::vector<std::string> baseline_names() {
  return {"small_only", "large_only", "random", "entropy", "ts", "cc", "bc", "oracle"};
}

std::unique_ptr<Router> make_baseline(const std::string& name, const FeatureCache& train, double random_p,
                                      uint64_t seed) {
  using C = EntropyRouter::Calibration;
  if (name == "small_only") return std::make_unique<ConstantRouter>(false);
  if (name == "large_only") return std::make_unique<ConstantRouter>(true);
  if (name == "random") return std::make_unique<RandomRouter>(random_p, seed);
  if (name == "entropy") return std::make_unique<EntropyRouter>(C::None);
  if (name == "oracle") return std::make_unique<OracleRouter>();
  if (name == "ts") {
    if (train.size() == 0) fail("baseline 'ts' needs a training cache to fit τ");
    return std::make_unique<EntropyRouter>(C::Temperature, fit_temperature(train.p_small, train.labels));
  }
  if (name == "cc") {
    if (!train.p_small_content_free)
      fail("baseline 'cc' needs the small guard's content-free score (build the cache with content_free on)");
    return std::make_unique<EntropyRouter>(C::Contextual, 1.0, clamp_prob(*train.p_small_content_free));
  }
  if (name == "bc") {
    if (train.size() == 0) fail("baseline 'bc' needs a training cache for the mean small-guard score");
    double mean = 0;
    for (float p : train.p_small) mean += p;
    return std::make_unique<EntropyRouter>(C::Batch, 1.0, clamp_prob(mean / train.size()));
  }
  fail("unknown router baseline '{}' (known: small_only, large_only, random, entropy, ts, cc, bc, oracle)", name);
}

}  // namespace guardkit::route
