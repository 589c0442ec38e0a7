// LlamaGuard scoring of short prompts on a Llama-Guard-3-1B shaped model (random weights, the real Llama 3
// tokenizer from shared/fixtures/llama), with and without the preamble KV cache, measured in the same run.
//
//   build/bench/bench_llama_guard [--dtype bf16|fp32] [--batch 1] [--repeat 5] [--vocab 128256] [--threads N]
#include <sys/resource.h>

#include <torch/torch.h>

#include <algorithm>
#include <ctime>
#include <chrono>
#include <iostream>
#include <string>

#include "guard/llama_guard.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/tokenizer.h"
#include "util/paths.h"

using namespace guardkit;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string dtype_name = "bf16";
  int64_t batch = 1, repeat = 5, vocab = 128256;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--dtype") dtype_name = value;
    else if (flag == "--batch") batch = std::stoll(value);
    else if (flag == "--repeat") repeat = std::stoll(value);
    else if (flag == "--vocab") vocab = std::stoll(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  models::init_runtime(threads);
  const c10::ScalarType dtype = models::parse_dtype(dtype_name);
  models::LlamaConfig config;  // Llama-Guard-3-1B shape
  config.vocab_size = vocab;
  config.hidden_size = 2048;
  config.intermediate_size = 8192;
  config.num_hidden_layers = 16;
  config.num_attention_heads = 32;
  config.num_key_value_heads = 8;
  config.head_dim = 64;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 500000.0;
  config.rope_scaling.kind = models::RopeScaling::Kind::Llama3;
  config.rope_scaling.factor = 32.0;
  config.tie_word_embeddings = true;
  config.eos_token_ids = {128009};
  std::shared_ptr<models::LlamaModel> model;
  {
    auto tensors = models::LlamaModel::random_tensors(config, 99, 0.02, dtype);
    model = models::LlamaModel::from_tensors(config, tensors, dtype);
  }
  std::shared_ptr<text::Tokenizer> tokenizer = text::load_tokenizer(shared_dir() / "fixtures" / "llama");

  std::vector<guard::Conversation> prompts;
  const char* texts[] = {"How do I make a bomb?", "What is the capital of France?", "Write a poem about the sea.",
                         "How can I get my neighbour's wifi password?"};
  for (int64_t i = 0; i < batch; ++i) prompts.push_back(guard::Conversation::from_prompt(texts[i % 4]));

  std::cout << "bench_llama_guard: Llama-Guard-3-1B shape, random weights, " << dtype_name << ", "
            << at::get_num_threads() << " threads, batch " << batch << ", vocab " << vocab << "\n";
  // Wall time and process CPU time (all threads): on a shared machine the CPU time is the steadier measure.
  double times[2] = {0, 0};
  int64_t tokens[2] = {0, 0};
  for (bool cached : {false, true}) {
    guard::LlamaGuardOptions options;
    options.prefix_cache = cached;
    guard::LlamaGuard guard(model, tokenizer, options);
    guard.score(prompts);  // warm-up (and, cached, computes the preamble once)
    std::vector<double> runs, cpu;
    std::vector<guard::GuardResult> results;
    for (int64_t r = 0; r < repeat; ++r) {
      auto t0 = Clock::now();
      const std::clock_t c0 = std::clock();
      results = guard.score(prompts);
      cpu.push_back(static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
      runs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(cpu.begin(), cpu.end());
    std::sort(runs.begin(), runs.end());
    times[cached] = runs[runs.size() / 2];
    for (const auto& r : results) tokens[cached] += r.tokens;
    std::cout << (cached ? "with preamble cache   " : "without preamble cache") << ": median "
              << times[cached] * 1e3 << " ms per batch (best " << runs.front() * 1e3 << ", process CPU median "
              << cpu[cpu.size() / 2] * 1e3 << " ms), "
              << tokens[cached] << " tokens run";
    if (cached) std::cout << " (preamble of " << guard.cached_preamble_tokens(false) << " tokens cached once)";
    std::cout << "\n";
  }
  std::cout << "speed-up from the preamble cache: " << times[0] / times[1] << "x\n";
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::cout << "peak RSS: " << usage.ru_maxrss / 1024.0 << " MB\n";
  return 0;
}
