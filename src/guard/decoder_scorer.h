// What the decoder guards (Llama Guard, Qwen3Guard-Gen) share: score batches of prompts on a decoder, reading the
// logits of a few chosen ids (or the whole vocabulary) and the final hidden state at each prompt's last token, with
// the policy preamble that every prompt of a group starts with run once and its KV cache reused, so a request pays
// only for its own tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace guardkit::models {
class LlamaModel;
class KVCache;
}  // namespace guardkit::models

namespace guardkit::guard {

struct DecoderScore {
  std::vector<double> logits;  // the chosen ids' logits in their order, or all vocabulary logits when none are chosen
  std::vector<float> feature;  // final-normed hidden state at the last token (the router feature)
  int64_t tokens = 0;          // tokens run for this prompt (the cached preamble excluded)
  double flops = 0;
};

class DecoderScorer {
 public:
  // `preamble_of(key)` gives the ids every prompt of group `key` starts with (e.g. judging a prompt vs a response).
  DecoderScorer(std::shared_ptr<models::LlamaModel> model, int64_t max_batch,
                std::function<std::vector<int64_t>(int key)> preamble_of);
  ~DecoderScorer();

  // Scores prompts of group `key` in chunks of max_batch. `chosen_ids` empty: the full vocabulary.
  std::vector<DecoderScore> score(const std::vector<std::vector<int64_t>>& prompts, int key,
                                  const std::vector<int64_t>& chosen_ids, bool use_prefix_cache);
  // The cache of the longest part of group `key`'s preamble that `ids` starts with (at most all but its last token),
  // for generation after it; `shared` receives its length.
  models::KVCache prefix_for(const std::vector<int64_t>& ids, int key, int64_t* shared);
  int64_t cached_preamble_tokens(int key) const;  // 0 until the group's first cached request

 private:
  struct Preamble;
  Preamble& preamble(int key);

  std::shared_ptr<models::LlamaModel> model_;
  int64_t max_batch_;
  std::function<std::vector<int64_t>(int)> preamble_of_;
  mutable std::mutex mutex_;
  std::map<int, std::unique_ptr<Preamble>> preambles_;
};

// Length of the common prefix of two id lists.
size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

}  // namespace guardkit::guard
