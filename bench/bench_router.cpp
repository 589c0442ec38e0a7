// SafeRoute router cost: training on cached features (10,000 x 2048 by default, random, a few epochs; per-epoch time
// and the extrapolation to the paper's 1000 epochs), and routing one batch of 32 (posterior mean) — the number to
// compare with a small-guard forward of the same batch. Times are wall clock and process CPU seconds (all threads):
// on a shared machine the CPU figure at --threads 1 is the stable one (with more OpenMP threads than free cores the
// threads spin-wait and burn CPU).
//   bench_router [--n 10000] [--dim 2048] [--epochs 3] [--threads 0] [--hidden 512] [--bf16 0|1]
//                [--small NAME_OR_DIR]
// With --small (xsmall = a DeBERTa-v3-xsmall-shaped classifier with random weights, small-default = the shape of
// `guardkit bootstrap`'s small guard, a models-file name or a model directory), the same run also times that guard
// scoring 32 XSTest prompts with features, and routing's share of it; --dim then follows the guard's feature width.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <ctime>
#include <string>

#include "models/runtime.h"
#include "route/router.h"
#include "eval/datasets.h"
#include "guard/classifier_guard.h"
#include "guard/registry.h"
#include "random_deberta.h"

using namespace guardkit::route;

// Process CPU seconds (all threads): on a shared, loaded machine this moves far less than the wall clock.
static double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char** argv) {
  int64_t n = 10000, dim = 2048, epochs = 3, hidden = 512;
  int threads = 0;
  bool bf16 = false;
  std::string small_guard;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const long long value = std::atoll(argv[i + 1]);
    if (key == "--small") {
      small_guard = argv[i + 1];
      continue;
    }
    if (key == "--n") n = value;
    else if (key == "--dim") dim = value;
    else if (key == "--epochs") epochs = value;
    else if (key == "--threads") threads = static_cast<int>(value);
    else if (key == "--hidden") hidden = value;
    else if (key == "--bf16") bf16 = value != 0;
    else {
      std::fprintf(stderr, "unknown option %s\n", key.c_str());
      return 2;
    }
  }
  guardkit::models::init_runtime(threads);
  std::shared_ptr<guardkit::guard::Guard> guard;
  std::filesystem::path generated;
  if (!small_guard.empty()) {
    if (small_guard == "xsmall" || small_guard == "small-default")
      generated = guardkit::bench::write_random_deberta(
          small_guard == "xsmall" ? guardkit::bench::kXsmall : guardkit::bench::kSmallDefault, "bench_router_small");
    guard = generated.empty() ? guardkit::guard::ModelRegistry::load_default().guard(small_guard)
                              : std::shared_ptr<guardkit::guard::Guard>(guardkit::guard::ClassifierGuard::load(generated));
    dim = guard->feature_dim();
  }
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0, 1);
  std::uniform_real_distribution<float> uniform(0, 1);
  std::vector<float> features(n * dim), p_small(n), p_large(n);
  std::vector<int8_t> labels(n);
  for (auto& f : features) f = normal(rng);
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = uniform(rng) < 0.4f;
    p_small[i] = uniform(rng);
    p_large[i] = uniform(rng);
  }
  const FeatureCache cache = make_feature_cache(dim, features, p_small, p_large, labels, "bench:random");

  RouterConfig config;
  config.epochs = epochs;
  config.hidden = hidden;
  config.progress = false;
  config.bf16 = bf16;
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf("bench_router: n=%lld dim=%lld hidden=%lld batch=%lld epochs=%lld threads=%d gemm=%s "
              "OPENBLAS_CORETYPE=%s\n",
              (long long)n, (long long)dim, (long long)hidden, (long long)config.batch_size, (long long)epochs,
              threads, bf16 ? "bf16" : "fp32", coretype ? coretype : "(unset)");
  double total = 0, total_cpu = 0, cpu_mark = cpu_seconds();
  SafeRouteRouter router = SafeRouteRouter::train(cache, config, {}, [&](const TrainEpochStats& s) {
    const double cpu = cpu_seconds() - cpu_mark;
    std::printf("  epoch %lld: %.3f s wall, %.3f s CPU (bce %.4f kl %.4f)\n", (long long)s.epoch, s.seconds, cpu,
                s.bce, s.kl);
    total += s.seconds;
    total_cpu += cpu;
    cpu_mark = cpu_seconds();
  });
  const double per_epoch = total / epochs, cpu_per_epoch = total_cpu / epochs;
  const int64_t steps = (n + config.batch_size - 1) / config.batch_size;
  std::printf("train: %.3f s/epoch wall (mean of %lld), %.1f ms/step; 1000 epochs ~ %.1f min wall\n", per_epoch,
              (long long)epochs, 1e3 * per_epoch / steps, per_epoch * 1000 / 60);
  std::printf("train: %.3f s/epoch CPU (all threads), %.1f ms CPU/step; 1000 epochs ~ %.1f CPU-min\n", cpu_per_epoch,
              1e3 * cpu_per_epoch / steps, cpu_per_epoch * 1000 / 60);

  // Routing one batch of 32: the router's whole cost on top of the small guard's forward.
  RouteBatch batch = RouteBatch::of(cache);
  batch.n = 32;
  for (int i = 0; i < 20; ++i) router.scores(batch);  // warm up
  constexpr int kReps = 500;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kReps; ++i) router.scores(batch);
  const double per_batch = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kReps;
  std::printf("route: %.3f ms per batch of 32 (posterior mean)\n", 1e3 * per_batch);
  router.set_mc_samples(8, 1);
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) router.scores(batch);
  std::printf("route: %.3f ms per batch of 32 (8 MC samples)\n",
              1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() / 50);
  router.set_mc_samples(0);
  if (guard) {
    std::vector<guardkit::guard::Conversation> batch32;
    for (const auto& e : guardkit::eval::load_dataset("xstest_prompts")) {
      if (batch32.size() == 32) break;
      batch32.push_back(guardkit::guard::Conversation::from_pair(e.prompt, e.response));
    }
    guardkit::guard::ScoreOptions with_features;
    with_features.want_features = true;
    guard->score(batch32, with_features);  // warm up
    constexpr int kGuardReps = 5;
    const auto g0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kGuardReps; ++i) guard->score(batch32, with_features);
    const double guard_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count() / kGuardReps;
    std::printf("small guard %s: %.3f ms per batch of 32 XSTest prompts (with features); routing adds %.3f%%\n",
                small_guard.c_str(), 1e3 * guard_s, 100.0 * per_batch / guard_s);
    if (!generated.empty()) std::filesystem::remove_all(generated);
  }
  return 0;
}
