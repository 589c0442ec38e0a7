// Training-step cost of the bootstrap's large guard (vocab 8000, hidden 256, 4 layers, 4 heads, 64 position buckets):
// a masked-LM pretraining step (packed full sequences, 15% predicted, head on those positions only) against a
// classifier fine-tuning step, both with AdamW and clipping, at max_length 64 and 128, batch 32. Prints wall and
// process CPU time per step (CPU time is steadier on a shared machine) and the fp32 GEMM rate of the same run.
//   build/bench/bench_mlm [--iters N] [--threads N]
#include <torch/torch.h>

#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <string>

#include "models/deberta.h"
#include "models/deberta_mlm.h"
#include "models/runtime.h"
#include "train/losses.h"
#include "train/optim.h"

using namespace guardkit;
using Clock = std::chrono::steady_clock;

namespace {

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

models::DebertaConfig large_config() {
  nlohmann::json j = {{"vocab_size", 8001}, {"hidden_size", 256}, {"num_hidden_layers", 4}, {"num_attention_heads", 4},
                      {"intermediate_size", 1024}, {"max_position_embeddings", 512}, {"relative_attention", true},
                      {"position_buckets", 64}, {"max_relative_positions", -1}, {"pos_att_type", "p2c|c2p"},
                      {"norm_rel_ebd", "layer_norm"}, {"share_att_key", true}, {"position_biased_input", false},
                      {"type_vocab_size", 0}, {"hidden_act", "gelu"}, {"layer_norm_eps", 1e-7}};
  return models::DebertaConfig::from_json(j, "bench:bootstrap-large");
}

struct Timing {
  double wall_ms = 0, cpu_ms = 0;
};

template <typename F>
Timing per_step(F&& step, int iters) {
  step();  // warm-up
  const auto start = Clock::now();
  const double cpu0 = cpu_seconds();
  for (int i = 0; i < iters; ++i) step();
  return {std::chrono::duration<double, std::milli>(Clock::now() - start).count() / iters,
          (cpu_seconds() - cpu0) * 1000.0 / iters};
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 5, threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::stoi(argv[++i]);
    else {
      std::cerr << "usage: bench_mlm [--iters N] [--threads N]\n";
      return 2;
    }
  }
  models::init_runtime(threads);
  std::cout << "threads " << at::get_num_threads() << ", iters " << iters << ", OPENBLAS_CORETYPE "
            << (std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)") << "\n";
  {
    at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
    auto t = per_step([&] { at::mm(a, b); }, 10);
    std::cout << "fp32 GEMM 1024^3: " << 2.0 * 1024 * 1024 * 1024 / (t.wall_ms * 1e6) << " GFLOP/s\n";
  }
  const auto config = large_config();
  models::DebertaLoadOptions trainable;
  trainable.trainable = true;
  const int64_t B = 32;
  for (int64_t T : {64, 128}) {
    at::Tensor ids = at::randint(4, 8000, {B, T}, at::kLong);
    {
      auto model = models::DebertaClassifier::random(config, 1, trainable);
      train::AdamWOptions o;
      o.weight_decay = 0.01;
      train::AdamW optimizer(model.named_parameters(), o);
      at::Tensor labels = at::randint(0, 2, {B}, at::kLong);
      auto t = per_step([&] {
        auto loss = train::cross_entropy_loss(model.forward(ids).logits, labels);
        loss.backward();
        train::clip_grad_norm(model.named_parameters(), 1.0);
        optimizer.step();
        optimizer.zero_grad();
      }, iters);
      std::cout << "classifier train step B=" << B << " T=" << T << ": wall " << t.wall_ms << " ms, CPU " << t.cpu_ms
                << " ms\n";
    }
    {
      auto model = models::DebertaMaskedLM::random(config, 1, trainable);
      train::AdamWOptions o;
      o.weight_decay = 0.01;
      train::AdamW optimizer(model.named_parameters(), o);
      at::Tensor labels = at::where(at::rand({B, T}) < 0.15, ids, at::full({B, T}, -100, at::kLong));
      auto t = per_step([&] {
        auto loss = model.loss(ids, {}, labels);
        loss.backward();
        train::clip_grad_norm(model.named_parameters(), 1.0);
        optimizer.step();
        optimizer.zero_grad();
      }, iters);
      std::cout << "MLM train step        B=" << B << " T=" << T << ": wall " << t.wall_ms << " ms, CPU " << t.cpu_ms
                << " ms\n";
    }
  }
  return 0;
}
