#include "models/generation.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <unordered_set>

#include "util/error.h"

namespace guardkit::models {

int64_t choose_next_token(std::vector<float> logits, const std::vector<int64_t>& history,
                          const GenerationOptions& options, double uniform) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (V == 0) fail("generation: empty logits");
  // HF RepetitionPenaltyLogitsProcessor: each id seen once is penalised once, positive logits divided, negative
  // multiplied.
  if (options.repetition_penalty != 1.0) {
    const float penalty = static_cast<float>(options.repetition_penalty);
    std::unordered_set<int64_t> seen(history.begin(), history.end());
    for (int64_t id : seen) {
      if (id < 0 || id >= V) continue;
      float& l = logits[static_cast<size_t>(id)];
      l = l < 0 ? l * penalty : l / penalty;
    }
  }
  if (!options.do_sample) return std::max_element(logits.begin(), logits.end()) - logits.begin();

  // HF warper order: temperature, top-k, top-p; then sample from the softmax of what is left.
  std::vector<double> scaled(logits.begin(), logits.end());
  for (double& l : scaled) l /= options.temperature;
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = V;
  if (options.top_k > 0 && options.top_k < V) keep = options.top_k;
  // Sort (descending) only the part needed: all of it for top-p, the first `keep` for top-k alone.
  auto descending = [&](int64_t a, int64_t b) {
    return scaled[static_cast<size_t>(a)] > scaled[static_cast<size_t>(b)] ||
           (scaled[static_cast<size_t>(a)] == scaled[static_cast<size_t>(b)] && a < b);
  };
  if (keep == V && options.top_p < 1.0) std::sort(order.begin(), order.end(), descending);
  else std::partial_sort(order.begin(), order.begin() + keep, order.end(), descending);
  if (keep < V) {
    // HF keeps every token whose logit ties with the k-th largest: move those up behind the sorted top k (equal
    // values, so the kept range stays in descending order).
    const double kth = scaled[static_cast<size_t>(order[static_cast<size_t>(keep - 1)])];
    for (int64_t i = keep; i < V; ++i)
      if (scaled[static_cast<size_t>(order[static_cast<size_t>(i)])] == kth)
        std::swap(order[static_cast<size_t>(keep++)], order[static_cast<size_t>(i)]);
  }
  const double top = scaled[static_cast<size_t>(order[0])];
  std::vector<double> probs(static_cast<size_t>(keep));
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    probs[static_cast<size_t>(i)] = std::exp(scaled[static_cast<size_t>(order[static_cast<size_t>(i)])] - top);
    total += probs[static_cast<size_t>(i)];
  }
  for (double& p : probs) p /= total;
  if (options.top_p < 1.0) {
    // Smallest prefix of the descending order whose mass reaches top_p (HF removes tokens whose ascending cumulative
    // mass is <= 1 - top_p), at least one token.
    double mass = 0;
    int64_t n = 0;
    while (n < keep) {
      mass += probs[static_cast<size_t>(n)];
      ++n;
      if (mass >= options.top_p) break;
    }
    keep = std::max<int64_t>(n, 1);
    probs.resize(static_cast<size_t>(keep));
    total = std::accumulate(probs.begin(), probs.end(), 0.0);
    for (double& p : probs) p /= total;
  }
  double cumulative = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative += probs[static_cast<size_t>(i)];
    if (uniform < cumulative) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(keep - 1)];
}

GenerationResult generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationOptions& options, const KVCache* prefix) {
  if (prompts.empty()) fail("generate: no prompts");
  for (size_t i = 0; i < prompts.size(); ++i)
    if (prompts[i].empty()) fail("generate: prompt {} is empty", i);
  if (options.max_new_tokens < 0) fail("generate: max_new_tokens must be >= 0, got {}", options.max_new_tokens);
  if (options.do_sample && !(options.temperature > 0)) fail("generate: temperature must be > 0 when sampling");
  if (!(options.top_p > 0 && options.top_p <= 1)) fail("generate: top_p must be in (0, 1], got {}", options.top_p);
  if (options.top_k < 0) fail("generate: top_k must be >= 0, got {}", options.top_k);
  if (!(options.repetition_penalty > 0)) fail("generate: repetition_penalty must be > 0");
  if (prefix && prefix->batch() != 1) fail("generate: a shared prefix cache must hold exactly one row");

  const LlamaConfig& config = model.config();
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::unordered_set<int64_t> stops(options.stop_ids.begin(), options.stop_ids.end());
  if (options.stop_at_eos) stops.insert(config.eos_token_ids.begin(), config.eos_token_ids.end());

  GenerationResult result;
  result.new_ids.resize(static_cast<size_t>(B));
  result.finish_reasons.assign(static_cast<size_t>(B), "length");
  auto [ids, mask] = LlamaModel::pad_batch(prompts, options.pad_id, /*left_padding=*/true);
  const int64_t T = ids.size(1);
  const int64_t prefix_len = prefix ? prefix->length() : 0;
  KVCache cache = prefix ? prefix->repeat(B, 0, T + options.max_new_tokens)
                         : model.new_cache(B, T + options.max_new_tokens);
  for (const auto& p : prompts) {
    result.prompt_tokens += static_cast<int64_t>(p.size());
    result.flops += config.forward_flops(static_cast<int64_t>(p.size()), prefix_len, config.vocab_size, 1);
  }
  if (options.max_new_tokens == 0) return result;

  std::vector<std::mt19937_64> rngs;
  if (!options.row_seeds.empty() && options.row_seeds.size() != static_cast<size_t>(B))
    fail("generate: {} row seeds for {} prompts", options.row_seeds.size(), B);
  for (int64_t b = 0; b < B; ++b)
    rngs.emplace_back(options.row_seeds.empty()
                          ? options.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b)
                          : options.row_seeds[static_cast<size_t>(b)] * 0x9E3779B97F4A7C15ull);
  std::vector<std::vector<int64_t>> history(prompts.begin(), prompts.end());
  std::vector<bool> finished(static_cast<size_t>(B), false);
  std::vector<int64_t> next(static_cast<size_t>(B), options.pad_id);

  ForwardOptions forward_options;
  forward_options.logits = LogitsMode::Last;
  at::Tensor logits = model.forward(ids, mask, &cache, forward_options).logits.to(at::kCPU).contiguous();  // [B, V]
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      const size_t row = static_cast<size_t>(b);
      if (finished[row]) continue;
      const float* data = logits[b].data_ptr<float>();
      std::vector<float> row_logits(data, data + logits.size(1));
      const double uniform = std::generate_canonical<double, 53>(rngs[row]);
      const int64_t token = choose_next_token(std::move(row_logits), history[row], options, uniform);
      next[row] = token;
      history[row].push_back(token);
      result.new_ids[row].push_back(token);
      ++result.generated_tokens;
      if (stops.count(token) || (options.should_stop && options.should_stop(row, result.new_ids[row]))) {
        finished[row] = true;
        result.finish_reasons[row] = "stop";
      }
      all_done = all_done && finished[row];
    }
    if (all_done || step + 1 == options.max_new_tokens) break;
    // Finished rows keep feeding their last token (their results are ignored) so the batch stays rectangular.
    at::Tensor step_ids = at::tensor(next, at::TensorOptions().dtype(at::kLong)).view({B, 1});
    logits = model.forward(step_ids, at::Tensor(), &cache, forward_options).logits.to(at::kCPU).contiguous();
    result.flops += static_cast<double>(B) * config.forward_flops(1, cache.length() - 1, config.vocab_size, 1);
  }
  return result;
}

}  // namespace guardkit::models
