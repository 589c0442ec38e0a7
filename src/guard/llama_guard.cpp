#include "guard/llama_guard.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "guard/decoder_scorer.h"
#include "models/generation.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/guard_prompt.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace guardkit::guard {

// ---------------------------------------------------------------------------------------------------------------
// Prompt (rendering lives in text/guard_prompt.h; these adapt the guard's types to it)

namespace {

text::LlamaGuardVariant text_variant(LlamaGuardVariant variant) {
  if (variant == LlamaGuardVariant::Auto) fail("Llama Guard: choose the 1B or 8B template");
  return variant == LlamaGuardVariant::Guard3_8B ? text::LlamaGuardVariant::k8B : text::LlamaGuardVariant::k1B;
}

}  // namespace

std::vector<GuardCategory> llama_guard3_categories(LlamaGuardVariant variant) {
  std::vector<GuardCategory> out;
  for (const auto& category : text::default_guard_categories(text_variant(variant)))
    out.push_back({category.code, category.description});
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Guard

namespace {

int32_t single_token(const text::Tokenizer& tokenizer, const std::string& text) {
  std::vector<int32_t> ids = tokenizer.encode(text, /*parse_special=*/false);
  if (ids.size() != 1) fail("Llama Guard: the tokenizer encodes '{}' as {} tokens, expected one", text, ids.size());
  return ids[0];
}

}  // namespace

LlamaGuard::LlamaGuard(std::shared_ptr<models::LlamaModel> model, std::shared_ptr<text::Tokenizer> tokenizer,
                       LlamaGuardOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  if (!model_ || !tokenizer_) fail("LlamaGuard needs a model and a tokenizer");
  if (!(options_.threshold >= 0 && options_.threshold <= 1)) fail("LlamaGuard: threshold must be in [0, 1]");
  if (options_.max_batch <= 0) fail("LlamaGuard: max_batch must be positive");
  variant_ = options_.variant;
  if (variant_ == LlamaGuardVariant::Auto)
    variant_ = model_->config().num_hidden_layers <= 16 ? LlamaGuardVariant::Guard3_1B : LlamaGuardVariant::Guard3_8B;
  safe_id_ = single_token(*tokenizer_, "safe");
  unsafe_id_ = single_token(*tokenizer_, "unsafe");
  double_newline_id_ = single_token(*tokenizer_, "\n\n");
  auto eot = tokenizer_->token_to_id("<|eot_id|>");
  if (!eot) fail("Llama Guard: the tokenizer has no <|eot_id|> token");
  eot_id_ = *eot;
  for (int32_t id : {safe_id_, unsafe_id_, double_newline_id_, eot_id_})
    if (id >= model_->config().vocab_size)
      fail("Llama Guard: token id {} is outside the model's vocabulary ({})", id, model_->config().vocab_size);
  // The preamble is what two different conversations judging the same role share: everything up to the first
  // message's content.
  scorer_ = std::make_unique<DecoderScorer>(model_, options_.max_batch, [this](int judges_response) {
    auto a = judges_response ? Conversation::from_pair("a", "a") : Conversation::from_prompt("a");
    auto b = judges_response ? Conversation::from_pair("b", "b") : Conversation::from_prompt("b");
    std::vector<int32_t> ids_a = prompt_ids(a), ids_b = prompt_ids(b);
    std::vector<int64_t> la(ids_a.begin(), ids_a.end()), lb(ids_b.begin(), ids_b.end());
    la.resize(common_prefix(la, lb));
    return la;
  });
}

LlamaGuard::~LlamaGuard() = default;

std::unique_ptr<LlamaGuard> LlamaGuard::load(const std::filesystem::path& dir, LlamaGuardOptions options,
                                             const std::string& dtype, const std::string& device) {
  auto model = models::LlamaModel::load(dir, models::parse_dtype(dtype), models::parse_device(device));
  std::shared_ptr<text::Tokenizer> tokenizer = text::load_tokenizer(dir);
  return std::make_unique<LlamaGuard>(std::move(model), std::move(tokenizer), std::move(options));
}

int64_t LlamaGuard::feature_dim() const { return model_->config().hidden_size; }

text::RenderedPrompt LlamaGuard::render(const Conversation& conversation) const {
  text::GuardPromptOptions options;
  options.variant = text_variant(variant_);
  if (!options_.categories.empty()) {
    std::vector<text::GuardCategory> categories;
    for (const auto& category : options_.categories) categories.push_back({category.code, category.description});
    options.categories = std::move(categories);
  }
  std::vector<text::ChatMessage> messages;
  for (const auto& message : conversation.messages) messages.push_back({message.role, message.content});
  return text::render_guard_prompt(messages, options);
}

std::vector<int32_t> LlamaGuard::prompt_ids(const Conversation& conversation) const {
  // Plain-text mode for everything but the template's own control tokens: "<|eot_id|>" typed by a user stays text.
  return text::encode_prompt(*tokenizer_, render(conversation));
}

std::vector<int64_t> LlamaGuard::scoring_ids(const Conversation& conversation) const {
  std::vector<int32_t> ids = prompt_ids(conversation);
  std::vector<int64_t> out(ids.begin(), ids.end());
  out.push_back(double_newline_id_);  // the model's first generated token; safe/unsafe follows it
  return out;
}

int64_t LlamaGuard::cached_preamble_tokens(bool judges_response) const {
  return scorer_->cached_preamble_tokens(judges_response);
}

std::vector<LlamaGuardScores> LlamaGuard::score_detailed(const std::vector<Conversation>& batch, bool full_vocab,
                                                         bool use_prefix_cache) {
  std::vector<LlamaGuardScores> results(batch.size());
  // Requests judging a prompt and those judging a response have different preambles: score them in two groups.
  for (bool judges_response : {false, true}) {
    std::vector<size_t> group;
    std::vector<std::vector<int64_t>> ids;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].judges_response() != judges_response) continue;
      group.push_back(i);
      ids.push_back(scoring_ids(batch[i]));
    }
    if (group.empty()) continue;
    const std::vector<int64_t> chosen = full_vocab ? std::vector<int64_t>{} : std::vector<int64_t>{safe_id_, unsafe_id_};
    std::vector<DecoderScore> scores = scorer_->score(ids, judges_response, chosen, use_prefix_cache);
    for (size_t k = 0; k < group.size(); ++k) {
      LlamaGuardScores& r = results[group[k]];
      DecoderScore& s = scores[k];
      if (full_vocab) {
        r.logit_safe = s.logits[static_cast<size_t>(safe_id_)];
        r.logit_unsafe = s.logits[static_cast<size_t>(unsafe_id_)];
        const at::Tensor all = at::from_blob(s.logits.data(), {static_cast<int64_t>(s.logits.size())}, at::kDouble);
        r.p_unsafe_full_vocab = std::exp(r.logit_unsafe - at::logsumexp(all, 0).item<double>());
      } else {
        r.logit_safe = s.logits[0];
        r.logit_unsafe = s.logits[1];
      }
      r.p_unsafe_2way = 1.0 / (1.0 + std::exp(r.logit_safe - r.logit_unsafe));
      r.feature = std::move(s.feature);
      r.tokens = s.tokens;
      r.flops = s.flops;
    }
  }
  return results;
}

std::vector<std::string> LlamaGuard::categories_for(const Conversation& conversation, double* flops) {
  std::vector<int64_t> ids = scoring_ids(conversation);
  ids.push_back(unsafe_id_);  // decode the line that follows "unsafe"
  const bool judges_response = conversation.judges_response();
  models::GenerationOptions generation;
  generation.max_new_tokens = options_.max_category_tokens;
  generation.stop_ids = {eot_id_};
  models::GenerationResult result;
  if (options_.prefix_cache) {
    int64_t shared = 0;
    models::KVCache prefix = scorer_->prefix_for(ids, judges_response, &shared);
    result = models::generate(*model_, {std::vector<int64_t>(ids.begin() + shared, ids.end())}, generation, &prefix);
  } else {
    result = models::generate(*model_, {ids}, generation);
  }
  if (flops) *flops += result.flops;
  std::vector<int32_t> new_ids(result.new_ids[0].begin(), result.new_ids[0].end());
  const std::string text = tokenizer_->decode(new_ids, /*skip_special_tokens=*/true);
  // The line is "\nS1,S10": keep the codes the policy defines, in order, without repeats.
  const auto& list = options_.categories.empty() ? llama_guard3_categories(variant_) : options_.categories;
  std::vector<std::string> found;
  std::string token;
  auto flush = [&]() {
    if (token.empty()) return;
    for (const auto& category : list)
      if (category.code == token && std::find(found.begin(), found.end(), token) == found.end()) found.push_back(token);
    token.clear();
  };
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t') flush();
    else token += c;
  }
  flush();
  return found;
}

std::vector<GuardResult> LlamaGuard::score(const std::vector<Conversation>& batch, const ScoreOptions& options) {
  const bool full_vocab = options_.score == LlamaGuardScore::FullVocab;
  std::vector<LlamaGuardScores> scores = score_detailed(batch, full_vocab, options_.prefix_cache);
  std::vector<GuardResult> results(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    GuardResult& r = results[i];
    r.p_unsafe = full_vocab ? scores[i].p_unsafe_full_vocab : scores[i].p_unsafe_2way;
    r.unsafe = r.p_unsafe >= options_.threshold;
    r.tokens = scores[i].tokens;
    r.flops = scores[i].flops;
    r.decided_by = options_.name;
    if (options.want_features) r.feature = std::move(scores[i].feature);
    if (options.want_categories && r.unsafe) r.categories = categories_for(batch[i], &r.flops);
  }
  return results;
}

}  // namespace guardkit::guard
