// DeBERTa-v3 classifier speed with random weights: forward latency at several shapes, fp32 and bf16, a training step,
// and the machine's GEMM rate measured in the same run.
//   build/bench/bench_deberta [--shape xsmall|base] [--iters N] [--threads N] [--quick]
// OpenBLAS: the machines export OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE on purpose; unsetting both in the benchmark's
// own command (env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...) lets OpenBLAS pick its Cooperlake kernels. The
// output says which was used.
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

#include "models/deberta.h"
#include "models/runtime.h"
#include "train/losses.h"
#include "train/optim.h"

using namespace guardkit;
using Clock = std::chrono::steady_clock;

namespace {

models::DebertaConfig shape_config(const std::string& shape) {
  nlohmann::json j = {{"vocab_size", 128100}, {"max_position_embeddings", 512}, {"relative_attention", true},
                      {"position_buckets", 256}, {"max_relative_positions", -1}, {"pos_att_type", "p2c|c2p"},
                      {"norm_rel_ebd", "layer_norm"}, {"share_att_key", true}, {"position_biased_input", false},
                      {"type_vocab_size", 0}, {"hidden_act", "gelu"}, {"layer_norm_eps", 1e-7}};
  if (shape == "xsmall") {
    j["hidden_size"] = 384; j["num_hidden_layers"] = 12; j["num_attention_heads"] = 6; j["intermediate_size"] = 1536;
  } else if (shape == "small") {
    j["hidden_size"] = 768; j["num_hidden_layers"] = 6; j["num_attention_heads"] = 12; j["intermediate_size"] = 3072;
  } else if (shape == "base") {
    j["hidden_size"] = 768; j["num_hidden_layers"] = 12; j["num_attention_heads"] = 12; j["intermediate_size"] = 3072;
  } else {
    std::cerr << "unknown --shape " << shape << " (xsmall, small, base)\n";
    std::exit(2);
  }
  return models::DebertaConfig::from_json(j, "bench:" + shape);
}

template <typename F>
double median_ms(F&& f, int iters) {
  f();  // warm-up (caches, oneDNN primitives)
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto start = Clock::now();
    f();
    times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double gemm_gflops(c10::ScalarType dtype) {
  at::Tensor a = at::randn({1024, 1024}).to(dtype), b = at::randn({1024, 1024}).to(dtype);
  const double ms = median_ms([&] { at::mm(a, b); }, 10);
  return 2.0 * 1024 * 1024 * 1024 / (ms * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "xsmall";
  int iters = 5, threads = 0;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--shape" && i + 1 < argc) shape = argv[++i];
    else if (arg == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (arg == "--quick") quick = true;
    else { std::cerr << "usage: bench_deberta [--shape xsmall|small|base] [--iters N] [--threads N] [--quick]\n"; return 2; }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  models::init_runtime(threads);
  auto loadavg = [] {
    std::ifstream in("/proc/loadavg");
    std::string one;
    in >> one;
    return one.empty() ? std::string("?") : one;
  };
  std::cout << "load average at start: " << loadavg() << " (other processes on these cores slow every number)\n";
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::cout << "bench_deberta shape=" << shape << " threads=" << at::get_num_threads()
            << " OPENBLAS_CORETYPE=" << (coretype ? coretype : "(unset)") << "\n";
  std::cout << std::flush << "sgemm 1024^3: " << gemm_gflops(at::kFloat) << " GFLOP/s; bf16 mm: " << gemm_gflops(at::kBFloat16)
            << " GFLOP/s\n";

  const models::DebertaConfig config = shape_config(shape);
  struct Case { int64_t B, T; };
  std::vector<Case> cases = {{1, 128}, {8, 128}, {8, 256}, {1, 512}};
  if (quick) cases = {{1, 128}, {1, 512}};
  for (c10::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    models::DebertaLoadOptions options;
    options.dtype = dtype;
    models::DebertaClassifier model = models::DebertaClassifier::random(config, 1, options);
    at::NoGradGuard no_grad;
    for (const Case& c : cases) {
      at::Tensor ids = at::randint(5, config.vocab_size, {c.B, c.T}, at::kLong);
      const double ms = median_ms([&] { model.forward(ids); }, iters);
      const double flops = model.forward_flops(c.T) * c.B;
      std::printf("forward %-5s B=%-2lld T=%-4lld %9.1f ms %9.0f tok/s %7.1f GFLOP/s\n",
                  dtype == at::kFloat ? "fp32" : "bf16", (long long)c.B, (long long)c.T, ms, c.B * c.T / ms * 1e3,
                  flops / (ms * 1e6));
      if (c.B == 1) {  // the same shape through HF's gather formulation, for comparison
        models::DebertaForwardOptions gather;
        gather.force_gather = true;
        const double gather_ms = median_ms([&] { model.forward(ids, {}, {}, gather); }, iters);
        std::printf("  (same, HF gather path for c2p/p2c: %.1f ms)\n", gather_ms);
      }
    }
  }
  {  // one distillation training step: forward + backward + AdamW, fp32
    models::DebertaLoadOptions options;
    options.trainable = true;
    models::DebertaClassifier model = models::DebertaClassifier::random(config, 1, options);
    train::AdamWOptions adam;
    adam.lr = 1e-5;
    adam.weight_decay = 0.01;
    train::AdamW optimizer(model.named_parameters(), adam);
    const int64_t B = quick ? 2 : 8, T = 128;
    at::Tensor ids = at::randint(5, config.vocab_size, {B, T}, at::kLong);
    at::Tensor labels = at::randint(0, 2, {B}, at::kLong);
    at::Tensor soft = at::rand({B});
    for (bool gather : {false, true}) {
      models::DebertaForwardOptions forward_options;
      forward_options.force_gather = gather;
      const double ms = median_ms([&] {
        auto out = model.forward(ids, {}, {}, forward_options);
        auto loss = train::distillation_loss(out.logits, labels, soft);
        loss.loss.backward();
        train::clip_grad_norm(model.named_parameters(), 1.0);
        optimizer.step();
        optimizer.zero_grad();
      }, std::max(1, iters / 2));
      std::printf("train step fp32 B=%lld T=%lld (fwd+bwd+clip+AdamW)%s: %.1f ms\n", (long long)B, (long long)T,
                  gather ? ", HF gather path" : "", ms);
    }
  }
  std::cout << "load average at end: " << loadavg() << "\n";
  return 0;
}
