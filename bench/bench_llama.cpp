// Llama decoder speed on a Llama-Guard-3-1B / Llama-3.2-1B shaped model with random weights: prefill of ~400 tokens,
// decode ms/token through the KV cache, peak RSS; the machine's bf16/fp32 matmul rate measured in the same run.
//
//   build/bench/bench_llama [--dtype bf16|fp32] [--tokens 400] [--decode 32] [--vocab 128256] [--layers 16]
//                           [--repeat 3] [--threads N]
// Reference (machine.md, HF transformers eager, same torch build, 2 threads): bf16 prefill T=400 1.52 s, decode
// 118 ms/token; fp32 prefill 2.98 s.
#include <sys/resource.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "models/llama.h"
#include "models/runtime.h"

using namespace guardkit::models;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

double current_rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * 4096.0 / 1e6;
}

// GFLOP/s of an [m, k] x [k, n] matmul in `dtype` (best of a few runs).
double matmul_gflops(int64_t m, int64_t k, int64_t n, c10::ScalarType dtype) {
  at::Tensor a = at::randn({m, k}).to(dtype), b = at::randn({k, n}).to(dtype);
  double best = 1e9;
  for (int i = 0; i < 4; ++i) {
    auto start = Clock::now();
    at::Tensor c = at::mm(a, b);
    best = std::min(best, seconds_since(start));
  }
  return 2.0 * static_cast<double>(m * k * n) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dtype_name = "bf16";
  int64_t tokens = 400, decode = 32, vocab = 128256, layers = 16, repeat = 3;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--dtype") dtype_name = value;
    else if (flag == "--tokens") tokens = std::stoll(value);
    else if (flag == "--decode") decode = std::stoll(value);
    else if (flag == "--vocab") vocab = std::stoll(value);
    else if (flag == "--layers") layers = std::stoll(value);
    else if (flag == "--repeat") repeat = std::stoll(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  init_runtime(threads);
  const c10::ScalarType dtype = parse_dtype(dtype_name);

  // Llama-Guard-3-1B (= Llama-3.2-1B) shape.
  LlamaConfig config;
  config.vocab_size = vocab;
  config.hidden_size = 2048;
  config.intermediate_size = 8192;
  config.num_hidden_layers = layers;
  config.num_attention_heads = 32;
  config.num_key_value_heads = 8;
  config.head_dim = 64;
  config.max_position_embeddings = 131072;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 500000.0;
  config.rope_scaling.kind = RopeScaling::Kind::Llama3;
  config.rope_scaling.factor = 32.0;
  config.tie_word_embeddings = true;
  config.eos_token_ids = {128009 % vocab};

  std::cout << "bench_llama: Llama-Guard-3-1B shape (layers " << layers << ", hidden 2048, heads 32/8, inter 8192, "
            << "vocab " << vocab << "), " << dtype_name << ", " << at::get_num_threads() << " threads, "
            << config.num_parameters() / 1e9 << " B params, random weights\n";
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::cout << "OPENBLAS_CORETYPE=" << (coretype ? coretype : "(unset)") << "\n";
  std::cout << "machine: bf16 mm 2048x2048x400 " << matmul_gflops(400, 2048, 2048, at::kBFloat16)
            << " GFLOP/s, fp32 mm " << matmul_gflops(400, 2048, 2048, at::kFloat) << " GFLOP/s\n";

  auto start = Clock::now();
  std::shared_ptr<LlamaModel> model;
  {
    auto tensors = LlamaModel::random_tensors(config, 1234, 0.02, dtype);
    model = LlamaModel::from_tensors(config, tensors, dtype);
  }
  std::cout << "random init: " << seconds_since(start) << " s, RSS " << current_rss_mb() << " MB\n";

  std::vector<int64_t> ids(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) ids[static_cast<size_t>(i)] = (i * 7919 + 13) % vocab;
  const double prefill_flops = config.forward_flops(tokens, 0, vocab, 1);

  // Prefill: best and median of `repeat` runs (first run included: it pays page faults of fresh weights).
  // Process CPU time (all threads) is printed too: on a shared machine it is the steadier measure.
  std::vector<double> prefill_times, prefill_cpu;
  for (int64_t r = 0; r < repeat; ++r) {
    KVCache cache = model->new_cache(1, tokens + decode);
    auto t0 = Clock::now();
    const std::clock_t c0 = std::clock();
    model->forward(ids, &cache);
    prefill_cpu.push_back(static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
    prefill_times.push_back(seconds_since(t0));
  }
  std::sort(prefill_cpu.begin(), prefill_cpu.end());
  std::sort(prefill_times.begin(), prefill_times.end());
  const double best = prefill_times.front(), median = prefill_times[prefill_times.size() / 2];
  std::cout << "prefill T=" << tokens << ": best " << best * 1e3 << " ms, median " << median * 1e3 << " ms, "
            << tokens / best << " tokens/s, " << prefill_flops / best / 1e9 << " GFLOP/s achieved; process CPU "
            << prefill_cpu.front() * 1e3 << " ms (best)\n";

  // Decode: one token at a time after the prefill, full-vocabulary logits each step (as generation does), and the
  // same with only 2 LM-head rows (as guard category-free scoring needs).
  for (bool chosen : {false, true}) {
    KVCache cache = model->new_cache(1, tokens + decode);
    ForwardOutput out = model->forward(ids, &cache);
    ForwardOptions options;
    if (chosen) {
      options.logits = LogitsMode::LastChosen;
      options.chosen_ids = {19193 % vocab, 39257 % vocab};
    }
    int64_t next = out.logits[0].argmax().item<int64_t>();
    auto t0 = Clock::now();
    const std::clock_t c0 = std::clock();
    for (int64_t step = 0; step < decode; ++step) {
      out = model->forward(std::vector<int64_t>{next}, &cache, options);
      next = chosen ? (next + 1) % vocab : out.logits[0].argmax().item<int64_t>();
    }
    const double per_token = seconds_since(t0) / static_cast<double>(decode);
    const double cpu_per_token = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC / static_cast<double>(decode);
    std::cout << "decode (" << (chosen ? "2 LM-head rows" : "full vocabulary") << ", context " << tokens << "+): "
              << per_token * 1e3 << " ms/token (process CPU " << cpu_per_token * 1e3 << " ms/token)\n";
  }
  std::cout << "peak RSS: " << peak_rss_mb() << " MB\n";
  return 0;
}
