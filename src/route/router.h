// Routers decide, per item, whether the large guard must judge it. Every router gives a score (higher = more in need
// of the large guard) and routes an item when score > ε. SafeRouteRouter is the paper's learned router
// (papers.md §1.3); route/baselines.h holds the baselines behind the same interface.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "route/features.h"

namespace guardkit::route {

// What a router sees for n items: the small guard's feature rows and P(unsafe); the large guard's P(unsafe) and the
// gold labels only where they exist (the oracle needs them; a deployed RoutedGuard has neither).
struct RouteBatch {
  size_t n = 0;
  int64_t dim = 0;
  const float* features = nullptr;  // [n, dim] row-major
  const float* p_small = nullptr;   // [n]
  const float* p_large = nullptr;   // [n] or null
  const int8_t* labels = nullptr;   // [n] or null

  static RouteBatch of(const FeatureCache& cache);
};

class Router {
 public:
  virtual ~Router() = default;
  virtual std::string name() const = 0;
  virtual bool needs_features() const { return false; }
  // One score per item; route to the large guard when score > threshold.
  virtual std::vector<double> scores(const RouteBatch& batch) = 0;
  // ε this router uses when none is given (SafeRoute: 0.5 on the sigmoid; entropy baselines: 0.5 bits).
  virtual double default_threshold() const = 0;
};

struct RouterConfig {
  int64_t hidden = 512;            // d -> hidden -> hidden -> 1
  double prior_mu = 0.0;
  double prior_sigma = 0.1;        // a standard deviation, as torchbnn's prior_sigma
  double kl_weight = 0.01;
  double lr = 1e-3;
  double weight_decay = 0.01;      // AdamW as the authors' code; 0 gives the paper's plain Adam
  int64_t warmup_steps = 100;      // linear warmup, then linear decay to 0 at the last step
  int64_t batch_size = 512;
  int64_t epochs = 1000;
  bool class_balanced = true;      // sample with replacement, weights 1 / class frequency, N per epoch
  uint64_t seed = 0;
  // Inference: 0 = posterior mean (the authors' code), k > 0 = mean of sigmoid over k posterior samples (the paper
  // says one Monte-Carlo sample at inference: mc_samples = 1).
  int mc_samples = 0;
  double delta = kDefaultDelta;    // δ for the routing labels
  double threshold = 0.5;          // ε on the sigmoid output
  // Training only: the two wide layers' GEMMs (forward and weight gradient) in bfloat16 through oneDNN, features
  // stored as bf16; weights, optimizer state, LayerNorm, loss and inference stay fp32. About 2x on CPUs with
  // AVX512_BF16 (bench_router --bf16 1); the saved router is fp32 either way.
  bool bf16 = false;
  bool progress = true;
  double checkpoint_seconds = 60;  // training state saved this often (resume after a kill) when a directory is given
};

struct TrainEpochStats {
  int64_t epoch = 0;
  double bce = 0.0;       // mean over the epoch's steps
  double kl = 0.0;
  double seconds = 0.0;
};

class SafeRouteRouter : public Router {
 public:
  // Trains on a feature cache (labels t re-derived with config.delta). With `checkpoint_dir`, the training state is
  // saved there every config.checkpoint_seconds and a matching state found there is resumed (same result as an
  // uninterrupted run: every epoch draws from its own seeded generator). `on_epoch` sees each finished epoch.
  static SafeRouteRouter train(const FeatureCache& train_set, const RouterConfig& config,
                               const std::filesystem::path& checkpoint_dir = {},
                               const std::function<void(const TrainEpochStats&)>& on_epoch = {});
  // Directory with router.safetensors and router.json (config, feature source, dims, threshold).
  static SafeRouteRouter load(const std::filesystem::path& dir);
  void save(const std::filesystem::path& dir) const;

  std::string name() const override { return "saferoute"; }
  bool needs_features() const override { return true; }
  std::vector<double> scores(const RouteBatch& batch) override;
  double default_threshold() const override;

  // Posterior-mean logits (no sampling) for n rows; used by scores() and the tests.
  std::vector<double> logits(const float* features, size_t n) const;

  const RouterConfig& config() const;
  int64_t input_dim() const;
  const std::string& feature_source() const;
  void set_threshold(double threshold);
  void set_mc_samples(int samples, uint64_t seed = 0);
  const std::vector<TrainEpochStats>& history() const;

  struct State;  // parameters and metadata (torch types, in router.cpp)
 private:
  explicit SafeRouteRouter(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace guardkit::route
