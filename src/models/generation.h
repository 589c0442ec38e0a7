// Text generation with a LlamaModel: greedy or sampled (temperature, top-k, top-p), repetition penalty, seed, stop
// ids, max_new_tokens, batched. Prompts are plain token ids, so "continuing from a forced assistant prefix" (HarmAug's
// prefix attack) is simply a prompt that ends mid-assistant-turn.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/llama.h"

namespace guardkit::models {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  bool do_sample = false;            // false: greedy (argmax after the repetition penalty)
  double temperature = 1.0;          // sampling only; > 0
  int64_t top_k = 0;                 // sampling only; 0 = off
  double top_p = 1.0;                // sampling only; 1 = off
  double repetition_penalty = 1.0;   // HF CTRL-style over prompt + generated ids; 1 = off
  uint64_t seed = 0;                 // sampling is reproducible for a seed (per row: its own stream)
  // Optional, one per prompt: row b samples from the stream a batch of one with seed row_seeds[b] would use, so
  // requests with different seeds still share one batch (HarmAug's per-request seeds).
  std::vector<uint64_t> row_seeds;
  std::vector<int64_t> stop_ids;     // generation of a row ends after it emits one of these (kept in the output)
  bool stop_at_eos = true;           // add the config's eos ids to stop_ids
  int64_t pad_id = 0;                // filler for left padding of the batch (masked, never attended)
  // Optional: asked after each generated token with the row and its ids so far; true ends that row with finish
  // reason "stop" (e.g. a stop string appeared in the decoded text). Empty: never.
  std::function<bool(size_t row, const std::vector<int64_t>& new_ids)> should_stop;
};

struct GenerationResult {
  std::vector<std::vector<int64_t>> new_ids;  // per prompt, the generated ids (including the stop id if any)
  std::vector<std::string> finish_reasons;    // "stop" or "length"
  int64_t prompt_tokens = 0;                  // real prompt tokens run through the model (excluding `prefix`)
  int64_t generated_tokens = 0;
  double flops = 0;                           // forward FLOPs spent (full-vocabulary LM head at each step)
};

// Generates for a batch of prompts (left-padded together). `prefix` (optional, batch 1): a cached prefix shared by
// every prompt (e.g. a fixed system/policy text) — the prompts continue after it.
GenerationResult generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationOptions& options, const KVCache* prefix = nullptr);

// One sampling step on a row of float32 logits (exposed for tests): applies the repetition penalty over `history`,
// then greedy or temperature/top-k/top-p sampling with `uniform` (a draw in [0, 1)).
int64_t choose_next_token(std::vector<float> logits, const std::vector<int64_t>& history,
                          const GenerationOptions& options, double uniform);

}  // namespace guardkit::models
