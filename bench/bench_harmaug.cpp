// HarmAug throughput: (1) the instruction-generation step on a local Llama (the requests generate_instructions
// sends: k exemplars + the request, assistant turn pre-filled with "I have an idea for a prompt:"), tokens/s, for the
// fixture Llama and a larger random-weight Llama shape; (2) distillation training steps (the trainer's own
// train::distill: tokenization, forward, 0.5·(CE+KL), backward, clipping, AdamW) for a tiny and a
// deberta-v3-xsmall-like student, fp32 and bf16 autocast, examples/s and steps/s.
//
//   build/bench/bench_harmaug [--part gen|train|all] [--requests 8] [--max-tokens 32] [--llama-layers 4]
//                             [--llama-dtype bf16] [--steps 6] [--batch 8] [--max-length 128] [--threads N]
//
// Step times come from the run's log.jsonl ("seconds" per optimizer step, measured inside the trainer); the first
// step (warm-up) is left out and the median of the rest is reported. Process CPU time is printed too: on a shared
// machine it is the steadier measure.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <unistd.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "augment/backends.h"
#include "augment/harmaug.h"
#include "eval/datasets.h"
#include "models/deberta.h"
#include "models/deberta_config.h"
#include "models/llama.h"
#include "models/llama_config.h"
#include "models/runtime.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "train/distill.h"
#include "util/jsonl.h"
#include "util/paths.h"

using namespace guardkit;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }
double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(read_file(path)); }

fs::path fixtures() { return shared_dir() / "fixtures"; }

// A Llama checkpoint directory with random weights in the Llama-3.2-1B width (hidden 2048, 32/8 heads, inter 8192,
// the real 128256 vocabulary and the fixture's Llama 3 tokenizer), `layers` deep.
fs::path write_random_llama(const fs::path& dir, int64_t layers) {
  fs::create_directories(dir);
  auto config = read_json(fixtures() / "llama" / "config.json");
  config["hidden_size"] = 2048;
  config["intermediate_size"] = 8192;
  config["num_hidden_layers"] = layers;
  config["num_attention_heads"] = 32;
  config["num_key_value_heads"] = 8;
  config["head_dim"] = 64;
  config["initializer_range"] = 0.02;
  write_file_atomic(dir / "config.json", config.dump(2));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    fs::copy_file(fixtures() / "llama" / f, dir / f, fs::copy_options::overwrite_existing);
  auto parsed = models::LlamaConfig::from_json(config);
  auto tensors = models::LlamaModel::random_tensors(parsed, 1234, 0.02, at::kBFloat16);
  std::vector<std::pair<std::string, at::Tensor>> named(tensors.begin(), tensors.end());
  models::save_tensors((dir / "model.safetensors").string(), named);
  return dir;
}

// The requests of the first `n` instruction-generation calls, as generate_instructions builds them (exemplars from
// AdvBench, the affirmative prefix, top-p sampling), with the pipeline's per-request seeds or one shared seed (both
// run as one batch since GenerationOptions::row_seeds; before it, per-request seeds meant one call per request).
std::vector<augment::ChatRequest> instruction_requests(size_t n, int max_tokens, bool same_seed) {
  augment::InstructionConfig config;
  auto seeds = eval::load_dataset("advbench_behaviors");
  std::vector<augment::ChatRequest> out;
  for (size_t r = 0; r < n; ++r) {
    std::mt19937_64 rng(config.seed * 1000003ULL + r);
    std::vector<size_t> picks(seeds.size());
    std::iota(picks.begin(), picks.end(), 0);
    std::shuffle(picks.begin(), picks.end(), rng);
    std::vector<std::string> exemplars;
    for (int k = 0; k < config.exemplars; ++k) exemplars.push_back(seeds[picks[static_cast<size_t>(k)]].prompt);
    augment::ChatRequest req;
    req.messages.push_back({"user", augment::render_instruction_request(config, exemplars)});
    req.assistant_prefix = config.affirmative_prefix;
    req.sampling = config.sampling;
    req.sampling.max_tokens = max_tokens;
    req.sampling.seed = same_seed ? config.seed : config.seed + r;
    out.push_back(std::move(req));
  }
  return out;
}

void bench_generation(const std::string& label, const fs::path& model_dir, const std::string& dtype, size_t requests,
                      int max_tokens) {
  augment::LocalLlamaOptions options;
  options.dtype = dtype;
  options.max_batch = requests;
  auto t_load = Clock::now();
  augment::LocalLlamaBackend backend(model_dir, options);
  const double load_s = seconds_since(t_load);
  backend.generate(instruction_requests(1, 4, true));  // warm-up
  for (bool same_seed : {false, true}) {
    auto batch = instruction_requests(requests, max_tokens, same_seed);
    auto t0 = Clock::now();
    const double c0 = cpu_seconds();
    auto completions = backend.generate(batch);
    const double wall = seconds_since(t0), cpu = cpu_seconds() - c0;
    int64_t prompt_tokens = 0, new_tokens = 0;
    for (const auto& c : completions) {
      prompt_tokens += c.prompt_tokens;
      new_tokens += c.completion_tokens;
    }
    std::cout << fmt::format(
        "generate | {} {} | {} requests ({}) | prompt {:.0f} tok/request | {} new tokens in {:.2f} s = {:.1f} "
        "new tokens/s, {:.2f} requests/s (process CPU {:.2f} s) | load {:.2f} s\n",
        label, dtype, requests, same_seed ? "one shared seed" : "the pipeline's per-request seeds",
        static_cast<double>(prompt_tokens) / static_cast<double>(requests), new_tokens, wall,
        static_cast<double>(new_tokens) / wall, static_cast<double>(requests) / wall, cpu, load_s);
  }
}

nlohmann::json deberta_config(int64_t vocab, int64_t hidden, int64_t layers, int64_t heads, int64_t intermediate,
                              int64_t buckets) {
  auto json = read_json(fixtures() / "deberta" / "config.json");
  json["vocab_size"] = vocab;
  json["hidden_size"] = json["pooler_hidden_size"] = hidden;
  json["num_hidden_layers"] = layers;
  json["num_attention_heads"] = heads;
  json["intermediate_size"] = intermediate;
  json["position_buckets"] = buckets;
  json["initializer_range"] = 0.02;
  return json;
}

void bench_training(const std::string& label, const nlohmann::json& config_json, bool bf16, int64_t steps,
                    int64_t batch, int64_t max_length, const std::vector<train::TrainExample>& rows,
                    const text::Tokenizer& tokenizer, const fs::path& work) {
  const auto config = models::DebertaConfig::from_json(config_json);
  models::DebertaLoadOptions load;
  load.trainable = true;
  auto student = models::DebertaClassifier::random(config, 1, load);
  train::DistillOptions o;
  o.lr = 1e-4;
  o.max_steps = steps;
  o.batch_size = o.micro_batch_size = batch;
  o.warmup_steps = 1;
  o.max_length = max_length;
  o.checkpoint_every = steps + 1;  // only the end
  o.show_progress = false;
  o.bf16 = bf16;
  const fs::path run = work / (label + (bf16 ? "-bf16" : "-fp32"));
  fs::remove_all(run);
  const double c0 = cpu_seconds();
  auto t0 = Clock::now();
  train::distill(student, tokenizer, fixtures() / "deberta", rows, o, run);
  const double total = seconds_since(t0), cpu = cpu_seconds() - c0;
  std::vector<double> step_seconds;
  for (const auto& line : read_jsonl_log_for_resume(run / "log.jsonl"))
    if (line.contains("seconds")) step_seconds.push_back(line["seconds"].get<double>());
  std::vector<double> timed(step_seconds.begin() + (step_seconds.size() > 1 ? 1 : 0), step_seconds.end());
  std::sort(timed.begin(), timed.end());
  const double median = timed[timed.size() / 2];
  std::cout << fmt::format(
      "train | {} ({:.1f} M params) | {} | batch {} x T<={} | median step {:.3f} s (of {} after warm-up; min {:.3f}) "
      "= {:.2f} steps/s, {:.1f} examples/s | run {:.1f} s incl. checkpoint + save, process CPU {:.1f} s\n",
      label, static_cast<double>(student.parameter_count()) / 1e6, bf16 ? "bf16 autocast" : "fp32", batch, max_length,
      median, timed.size(), timed.front(), 1.0 / median, static_cast<double>(batch) / median, total, cpu);
  fs::remove_all(run);
}

}  // namespace

int main(int argc, char** argv) {
  std::string part = "all", llama_dtype = "bf16";
  int64_t requests = 8, max_tokens = 32, llama_layers = 4, steps = 6, batch = 8, max_length = 128;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--part") part = value;
    else if (flag == "--requests") requests = std::stoll(value);
    else if (flag == "--max-tokens") max_tokens = std::stoll(value);
    else if (flag == "--llama-layers") llama_layers = std::stoll(value);
    else if (flag == "--llama-dtype") llama_dtype = value;
    else if (flag == "--steps") steps = std::stoll(value);
    else if (flag == "--batch") batch = std::stoll(value);
    else if (flag == "--max-length") max_length = std::stoll(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  models::init_runtime(threads);
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::cout << "bench_harmaug: " << at::get_num_threads() << " threads, OPENBLAS_CORETYPE="
            << (coretype ? coretype : "(unset)") << "\n";
  const fs::path work = fs::temp_directory_path() / ("bench_harmaug_" + std::to_string(::getpid()));
  fs::create_directories(work);

  if (part == "gen" || part == "all") {
    bench_generation("fixture llama (2 layers, hidden 16)", fixtures() / "llama", "fp32",
                     static_cast<size_t>(requests), static_cast<int>(max_tokens));
    auto t0 = Clock::now();
    auto dir = write_random_llama(work / "llama", llama_layers);
    std::cout << "random Llama written in " << seconds_since(t0) << " s\n";
    bench_generation(fmt::format("random Llama-3.2-1B width, {} layers", llama_layers), dir, llama_dtype,
                     static_cast<size_t>(requests), static_cast<int>(max_tokens));
    fs::remove_all(dir);
  }
  if (part == "train" || part == "all") {
    auto tokenizer = text::load_tokenizer(fixtures() / "deberta");
    // Long texts (OpenAI moderation samples, median ~380 characters) so most rows fill max_length; teacher-style
    // soft labels on half of them, hard labels on the rest (both loss paths).
    std::vector<train::TrainExample> rows;
    size_t i = 0;
    for (const auto& e : eval::load_dataset("openai_moderation")) {
      train::TrainExample row{e.prompt, std::nullopt, e.label, std::nullopt};
      if (i++ % 2 == 0) row.soft_label = e.label ? 0.8 : 0.2;
      rows.push_back(std::move(row));
    }
    const auto tiny = deberta_config(8001, 128, 2, 2, 512, 64);              // bootstrap's small guard
    const auto xsmall = deberta_config(128100, 384, 12, 6, 1536, 256);       // microsoft/deberta-v3-xsmall shape
    for (const auto& [label, config] : {std::pair{std::string("tiny (hidden 128, 2 layers)"), tiny},
                                        std::pair{std::string("deberta-v3-xsmall shape"), xsmall}})
      for (bool bf16 : {false, true}) bench_training(label, config, bf16, steps, batch, max_length, rows, *tokenizer, work);
  }
  fs::remove_all(work);
  return 0;
}
