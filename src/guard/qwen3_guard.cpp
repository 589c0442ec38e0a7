#include "guard/qwen3_guard.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "guard/decoder_scorer.h"
#include "models/generation.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace guardkit::guard {

namespace {

std::vector<int64_t> plain_ids(const text::Tokenizer& tokenizer, const std::string& text) {
  std::vector<int32_t> ids = tokenizer.encode_plain(text);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

}  // namespace

Qwen3Guard::Qwen3Guard(std::shared_ptr<models::LlamaModel> model, std::shared_ptr<text::Tokenizer> tokenizer,
                       Qwen3GuardOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  if (!model_ || !tokenizer_) fail("Qwen3Guard needs a model and a tokenizer");
  if (!(options_.threshold >= 0 && options_.threshold <= 1)) fail("Qwen3Guard: threshold must be in [0, 1]");
  // The answer starts "Safety: Safe|Unsafe|Controversial": the first token of each verdict after "Safety:".
  for (const char* verdict : {" Safe", " Unsafe", " Controversial"}) {
    std::vector<int64_t> ids = plain_ids(*tokenizer_, verdict);
    if (ids.empty()) fail("Qwen3Guard: the tokenizer encodes '{}' as no tokens", verdict);
    verdict_ids_.push_back(ids.front());
  }
  if (verdict_ids_[0] == verdict_ids_[1] || verdict_ids_[1] == verdict_ids_[2] || verdict_ids_[0] == verdict_ids_[2])
    fail("Qwen3Guard: the verdicts ' Safe', ' Unsafe', ' Controversial' do not start with three different tokens");
  safety_prefix_ids_ = plain_ids(*tokenizer_, "Safety:");
  auto im_end = tokenizer_->token_to_id("<|im_end|>");
  if (!im_end) fail("Qwen3Guard: the tokenizer has no <|im_end|> token (not a Qwen3 tokenizer?)");
  im_end_id_ = *im_end;
  for (int64_t id : verdict_ids_)
    if (id >= model_->config().vocab_size)
      fail("Qwen3Guard: token id {} is outside the model's vocabulary ({})", id, model_->config().vocab_size);
  // The preamble of a role: what two different conversations judging it share (everything before the content).
  scorer_ = std::make_unique<DecoderScorer>(model_, options_.max_batch, [this](int judges_response) {
    auto a = judges_response ? Conversation::from_pair("a", "a") : Conversation::from_prompt("a");
    auto b = judges_response ? Conversation::from_pair("b", "b") : Conversation::from_prompt("b");
    std::vector<int32_t> ids_a = prompt_ids(a), ids_b = prompt_ids(b);
    std::vector<int64_t> la(ids_a.begin(), ids_a.end()), lb(ids_b.begin(), ids_b.end());
    la.resize(common_prefix(la, lb));
    return la;
  });
}

Qwen3Guard::~Qwen3Guard() = default;

std::unique_ptr<Qwen3Guard> Qwen3Guard::load(const std::filesystem::path& dir, Qwen3GuardOptions options,
                                             const std::string& dtype, const std::string& device) {
  auto model = models::LlamaModel::load(dir, models::parse_dtype(dtype), models::parse_device(device));
  std::shared_ptr<text::Tokenizer> tokenizer = text::load_tokenizer(dir);
  return std::make_unique<Qwen3Guard>(std::move(model), std::move(tokenizer), std::move(options));
}

int64_t Qwen3Guard::feature_dim() const { return model_->config().hidden_size; }

text::RenderedPrompt Qwen3Guard::render(const Conversation& conversation) const {
  if (conversation.messages.empty()) fail("Qwen3Guard: empty conversation");
  return text::render_qwen3_guard_prompt(conversation.last_prompt(), conversation.last_response());
}

std::vector<int32_t> Qwen3Guard::prompt_ids(const Conversation& conversation) const {
  return text::encode_prompt(*tokenizer_, render(conversation));
}

std::vector<int64_t> Qwen3Guard::scoring_ids(const Conversation& conversation) const {
  std::vector<int32_t> ids = prompt_ids(conversation);
  std::vector<int64_t> out(ids.begin(), ids.end());
  out.insert(out.end(), safety_prefix_ids_.begin(), safety_prefix_ids_.end());
  return out;
}

int64_t Qwen3Guard::cached_preamble_tokens(bool judges_response) const {
  return scorer_->cached_preamble_tokens(judges_response);
}

double Qwen3Guard::p_unsafe(const Qwen3GuardScores& s) const {
  return options_.strict ? s.p_unsafe + s.p_controversial : s.p_unsafe;
}

std::vector<Qwen3GuardScores> Qwen3Guard::score_detailed(const std::vector<Conversation>& batch, bool use_prefix_cache) {
  std::vector<Qwen3GuardScores> results(batch.size());
  for (bool judges_response : {false, true}) {  // the two roles have different preambles
    std::vector<size_t> group;
    std::vector<std::vector<int64_t>> ids;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].judges_response() != judges_response) continue;
      group.push_back(i);
      ids.push_back(scoring_ids(batch[i]));
    }
    if (group.empty()) continue;
    std::vector<DecoderScore> scores = scorer_->score(ids, judges_response, verdict_ids_, use_prefix_cache);
    for (size_t k = 0; k < group.size(); ++k) {
      Qwen3GuardScores& r = results[group[k]];
      DecoderScore& s = scores[k];
      r.logit_safe = s.logits[0];
      r.logit_unsafe = s.logits[1];
      r.logit_controversial = s.logits[2];
      const double top = std::max({r.logit_safe, r.logit_unsafe, r.logit_controversial});
      const double es = std::exp(r.logit_safe - top), eu = std::exp(r.logit_unsafe - top),
                   ec = std::exp(r.logit_controversial - top);
      r.p_safe = es / (es + eu + ec);
      r.p_unsafe = eu / (es + eu + ec);
      r.p_controversial = ec / (es + eu + ec);
      r.feature = std::move(s.feature);
      r.tokens = s.tokens;
      r.flops = s.flops;
    }
  }
  return results;
}

text::Qwen3GuardAnswer Qwen3Guard::answer_for(const Conversation& conversation, double* flops) {
  std::vector<int32_t> prompt = prompt_ids(conversation);
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  const bool judges_response = conversation.judges_response();
  models::GenerationOptions generation;
  generation.max_new_tokens = options_.max_answer_tokens;
  generation.stop_ids = {im_end_id_};
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
  return text::parse_qwen3_guard_output(tokenizer_->decode(new_ids, /*skip_special_tokens=*/true), judges_response);
}

std::vector<GuardResult> Qwen3Guard::score(const std::vector<Conversation>& batch, const ScoreOptions& options) {
  std::vector<Qwen3GuardScores> scores = score_detailed(batch, options_.prefix_cache);
  std::vector<GuardResult> results(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    GuardResult& r = results[i];
    r.p_unsafe = p_unsafe(scores[i]);
    r.unsafe = r.p_unsafe > options_.threshold;
    r.tokens = scores[i].tokens;
    r.flops = scores[i].flops;
    r.decided_by = options_.name;
    if (options.want_features) r.feature = std::move(scores[i].feature);
    if (options.want_categories && r.unsafe) {
      // Qwen3Guard names; "None" (the model's word for no category) is not one.
      for (auto& category : answer_for(batch[i], &r.flops).categories)
        if (category != "None" && std::find(r.categories.begin(), r.categories.end(), category) == r.categories.end())
          r.categories.push_back(std::move(category));
    }
  }
  return results;
}

}  // namespace guardkit::guard
