#include "guard/decoder_scorer.h"

#include <torch/torch.h>

#include <algorithm>

#include "models/llama.h"
#include "util/error.h"

namespace guardkit::guard {

struct DecoderScorer::Preamble {
  std::vector<int64_t> ids;
  models::KVCache cache;  // batch 1, holds `ids`
};

size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

DecoderScorer::DecoderScorer(std::shared_ptr<models::LlamaModel> model, int64_t max_batch,
                             std::function<std::vector<int64_t>(int key)> preamble_of)
    : model_(std::move(model)), max_batch_(max_batch), preamble_of_(std::move(preamble_of)) {
  if (max_batch_ <= 0) fail("guard: max_batch must be positive");
}

DecoderScorer::~DecoderScorer() = default;

DecoderScorer::Preamble& DecoderScorer::preamble(int key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = preambles_[key];
  if (!slot) {
    auto p = std::make_unique<Preamble>();
    p->ids = preamble_of_(key);
    if (p->ids.empty()) fail("guard: empty preamble");
    p->cache = model_->new_cache(1, static_cast<int64_t>(p->ids.size()));
    models::ForwardOptions options;
    options.logits = models::LogitsMode::None;
    model_->forward(p->ids, &p->cache, options);
    slot = std::move(p);
  }
  return *slot;
}

int64_t DecoderScorer::cached_preamble_tokens(int key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = preambles_.find(key);
  return it == preambles_.end() || !it->second ? 0 : static_cast<int64_t>(it->second->ids.size());
}

models::KVCache DecoderScorer::prefix_for(const std::vector<int64_t>& ids, int key, int64_t* shared) {
  Preamble& p = preamble(key);
  const size_t n = std::min(common_prefix(ids, p.ids), ids.empty() ? 0 : ids.size() - 1);
  *shared = static_cast<int64_t>(n);
  return p.cache.repeat(1, 0, 0, *shared);
}

std::vector<DecoderScore> DecoderScorer::score(const std::vector<std::vector<int64_t>>& prompts, int key,
                                               const std::vector<int64_t>& chosen_ids, bool use_prefix_cache) {
  const models::LlamaConfig& config = model_->config();
  std::vector<DecoderScore> results(prompts.size());
  for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(max_batch_)) {
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(max_batch_));
    const int64_t B = static_cast<int64_t>(end - start);

    // Reuse the longest prefix of the cached preamble that every row of this chunk shares (normally all of it).
    int64_t cached = 0;
    const Preamble* p = nullptr;
    if (use_prefix_cache) {
      p = &preamble(key);
      size_t shared = p->ids.size();
      for (size_t k = start; k < end; ++k)
        shared = std::min({shared, common_prefix(prompts[k], p->ids), prompts[k].size() - 1});
      cached = static_cast<int64_t>(shared);
    }
    std::vector<std::vector<int64_t>> suffixes;
    size_t longest = 0;
    for (size_t k = start; k < end; ++k) {
      if (prompts[k].empty()) fail("guard: empty prompt");
      suffixes.emplace_back(prompts[k].begin() + cached, prompts[k].end());
      longest = std::max(longest, suffixes.back().size());
    }
    models::KVCache cache;
    if (cached > 0) cache = p->cache.repeat(B, 0, static_cast<int64_t>(longest), cached);
    auto [input, mask] = models::LlamaModel::pad_batch(suffixes, 0, /*left_padding=*/true);

    models::ForwardOptions options;
    options.logits = chosen_ids.empty() ? models::LogitsMode::Last : models::LogitsMode::LastChosen;
    options.chosen_ids = chosen_ids;
    models::ForwardOutput out = model_->forward(input, mask, cached > 0 ? &cache : nullptr, options);
    at::Tensor logits = out.logits.to(at::kCPU, at::kDouble).contiguous();  // [B, n] or [B, V]
    at::Tensor features = out.last_hidden.to(at::kCPU).contiguous();      // [B, H]
    const int64_t head_rows = chosen_ids.empty() ? config.vocab_size : static_cast<int64_t>(chosen_ids.size());
    for (int64_t row = 0; row < B; ++row) {
      DecoderScore& r = results[start + static_cast<size_t>(row)];
      const double* l = logits[row].data_ptr<double>();
      r.logits.assign(l, l + logits.size(1));
      const float* f = features[row].data_ptr<float>();
      r.feature.assign(f, f + features.size(1));
      r.tokens = static_cast<int64_t>(suffixes[static_cast<size_t>(row)].size());
      r.flops = config.forward_flops(r.tokens, cached, head_rows, 1);
    }
  }
  return results;
}

}  // namespace guardkit::guard
