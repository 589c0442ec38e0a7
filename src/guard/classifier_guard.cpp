#include "guard/classifier_guard.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "util/error.h"

namespace guardkit::guard {

ClassifierGuard::ClassifierGuard(std::shared_ptr<const models::DebertaClassifier> model,
                                 std::shared_ptr<const text::Tokenizer> tokenizer, ClassifierGuardOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  if (!model_ || !tokenizer_) fail("classifier guard '{}': needs a model and a tokenizer", options_.name);
  const int64_t labels = model_->config().num_labels;
  if (options_.unsafe_label < 0 || options_.unsafe_label >= labels)
    fail("classifier guard '{}': unsafe_label {} but the model has {} labels", options_.name, options_.unsafe_label, labels);
  if (options_.batch_size == 0) fail("classifier guard '{}': batch_size must be positive", options_.name);
  if (options_.max_length != 0 && options_.max_length < 4)
    fail("classifier guard '{}': max_length {} leaves no room for text", options_.name, options_.max_length);
}

std::unique_ptr<ClassifierGuard> ClassifierGuard::load(const std::filesystem::path& dir, ClassifierGuardOptions options) {
  models::DebertaLoadOptions load;
  load.dtype = options.dtype;
  load.device = options.device;
  auto model = std::make_shared<const models::DebertaClassifier>(models::DebertaClassifier::load(dir, load));
  std::shared_ptr<const text::Tokenizer> tokenizer = text::load_tokenizer(dir);
  if (options.name == "classifier") options.name = dir.filename().string();
  return std::make_unique<ClassifierGuard>(std::move(model), std::move(tokenizer), std::move(options));
}

int64_t ClassifierGuard::feature_dim() const { return model_->config().pooler_size(); }

text::Encoding ClassifierGuard::encode(const Conversation& conversation) const {
  const std::string& prompt = conversation.last_prompt();
  std::optional<std::string> response = conversation.last_response();
  if (!response && options_.pair_with_empty_response) response = std::string();
  std::optional<std::string_view> pair;
  if (response) pair = std::string_view(*response);
  return tokenizer_->encode_for_model(prompt, pair, options_.max_length, options_.truncation, options_.parse_special);
}

std::vector<size_t> plan_micro_batches(const std::vector<size_t>& lengths, size_t max_batch, double overhead_tokens) {
  const size_t n = lengths.size();
  std::vector<size_t> sizes;
  if (n == 0) return sizes;
  if (max_batch == 0) fail("plan_micro_batches: max_batch must be positive");
  if (!(overhead_tokens > 0)) {
    for (size_t start = 0; start < n; start += max_batch) sizes.push_back(std::min(max_batch, n - start));
    return sizes;
  }
  // best[i]: cheapest split of the first i items; cut[i]: where its last pass starts.
  std::vector<double> best(n + 1, 0.0);
  std::vector<size_t> cut(n + 1, 0);
  for (size_t i = 1; i <= n; ++i) {
    best[i] = std::numeric_limits<double>::infinity();
    for (size_t j = i - std::min(i, max_batch); j < i; ++j) {  // last pass = items j..i-1, padded to lengths[j]
      const double cost = best[j] + overhead_tokens + static_cast<double>(i - j) * static_cast<double>(lengths[j]);
      if (cost <= best[i]) best[i] = cost, cut[i] = j;  // ties: the later cut, so full passes come first
    }
  }
  for (size_t i = n; i > 0; i = cut[i]) sizes.push_back(i - cut[i]);
  std::reverse(sizes.begin(), sizes.end());
  return sizes;
}

std::vector<GuardResult> ClassifierGuard::score(const std::vector<Conversation>& batch, const ScoreOptions& options) {
  std::vector<GuardResult> results(batch.size());
  if (batch.empty()) return results;
  std::vector<text::Encoding> encodings;
  encodings.reserve(batch.size());
  for (const Conversation& conversation : batch) encodings.push_back(encode(conversation));

  // Longest first, so each micro-batch pads to nearly its own length and the first one shows the peak memory.
  std::vector<size_t> order(batch.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return encodings[a].ids.size() > encodings[b].ids.size(); });

  const int32_t pad = tokenizer_->pad_id().value_or(static_cast<int32_t>(model_->config().pad_token_id));
  at::NoGradGuard no_grad;
  std::vector<size_t> sorted_lengths;
  for (size_t index : order) sorted_lengths.push_back(encodings[index].ids.size());
  const std::vector<size_t> passes =
      plan_micro_batches(sorted_lengths, options_.batch_size, options_.pass_overhead_tokens);
  size_t start = 0;
  for (const size_t count : passes) {
    size_t length = 0;
    for (size_t i = 0; i < count; ++i) length = std::max(length, encodings[order[start + i]].ids.size());
    at::Tensor ids = at::full({static_cast<int64_t>(count), static_cast<int64_t>(length)}, pad, at::kLong);
    at::Tensor mask = at::zeros_like(ids);
    at::Tensor types = at::zeros_like(ids);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    auto types_a = types.accessor<int64_t, 2>();
    for (size_t i = 0; i < count; ++i) {
      const text::Encoding& e = encodings[order[start + i]];
      for (size_t t = 0; t < e.ids.size(); ++t) {
        ids_a[i][t] = e.ids[t];
        mask_a[i][t] = t < e.attention_mask.size() ? e.attention_mask[t] : 1;
        types_a[i][t] = t < e.type_ids.size() ? e.type_ids[t] : 0;
      }
    }
    models::DebertaOutput out = model_->forward(ids, mask, types);
    // Results leave the device once per micro-batch.
    at::Tensor p_unsafe = out.probs.select(1, options_.unsafe_label).to(at::kCPU, at::kDouble).contiguous();
    at::Tensor pooled = options.want_features ? out.pooled.to(at::kCPU, at::kFloat).contiguous() : at::Tensor();
    for (size_t i = 0; i < count; ++i) {
      const size_t index = order[start + i];
      GuardResult& r = results[index];
      r.p_unsafe = p_unsafe.data_ptr<double>()[i];
      r.unsafe = r.p_unsafe >= options_.threshold;
      r.tokens = static_cast<int64_t>(encodings[index].ids.size());
      r.flops = model_->forward_flops(r.tokens);
      r.decided_by = options_.name;
      if (options.want_features) {
        const float* row = pooled.data_ptr<float>() + i * pooled.size(1);
        r.feature.assign(row, row + pooled.size(1));
      }
    }
    start += count;
  }
  return results;
}

}  // namespace guardkit::guard
