// LlamaGuard: Llama Guard 3 (1B: S1-S13, 8B: S1-S14) as a Guard. The prompt is the model's chat template rendered
// byte for byte (text/guard_prompt.h), with message content tokenized in plain-text mode (no special-token injection); "\n\n" is appended
// and the safe/unsafe logits are read at the last position:
//   p_unsafe_2way       = softmax([logit_safe, logit_unsafe])[1]          (SafeRoute)
//   p_unsafe_full_vocab = softmax(all logits)[unsafe]                      (HarmAug's teacher)
// The policy preamble (everything before the conversation) is the same for every request judging the same role:
// its KV cache is computed once per guard and reused, so a request pays only for its own tokens.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "guard/guard.h"
#include "text/prompt.h"

namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::models {
class LlamaModel;
class KVCache;
}

namespace guardkit::guard {

class DecoderScorer;

struct GuardCategory {
  std::string code;         // "S1"
  std::string description;  // "Violent Crimes." (may continue with "\n" and a longer text)
};

enum class LlamaGuardVariant { Auto, Guard3_1B, Guard3_8B };

// Default categories of a variant (1B: S1..S13, 8B: S1..S14), from text/guard_prompt.h.
std::vector<GuardCategory> llama_guard3_categories(LlamaGuardVariant variant);

enum class LlamaGuardScore { TwoWay, FullVocab };

struct LlamaGuardOptions {
  std::string name = "llama-guard-3";
  LlamaGuardVariant variant = LlamaGuardVariant::Auto;  // Auto: 1B when the model has <= 16 layers, else 8B
  double threshold = 0.5;
  LlamaGuardScore score = LlamaGuardScore::TwoWay;      // which probability becomes GuardResult::p_unsafe
  std::vector<GuardCategory> categories;                // empty = the variant's defaults
  bool prefix_cache = true;                             // reuse the preamble's KV cache
  int64_t max_category_tokens = 24;                     // decode budget for the category line
  int64_t max_batch = 8;                                // rows per forward pass
};

// Everything one scored conversation yields (GuardResult plus both probabilities and the raw logits).
struct LlamaGuardScores {
  double logit_safe = 0, logit_unsafe = 0;
  double p_unsafe_2way = 0;
  double p_unsafe_full_vocab = -1;  // -1 unless the full vocabulary was projected
  std::vector<float> feature;       // final-normed hidden state at the last position
  int64_t tokens = 0;               // tokens run for this item (the cached preamble excluded)
  double flops = 0;
};

class LlamaGuard : public Guard {
 public:
  LlamaGuard(std::shared_ptr<models::LlamaModel> model, std::shared_ptr<text::Tokenizer> tokenizer,
             LlamaGuardOptions options = {});
  ~LlamaGuard() override;
  // Loads model and tokenizer from a Hugging Face directory (config.json, model.safetensors, tokenizer.json).
  static std::unique_ptr<LlamaGuard> load(const std::filesystem::path& dir, LlamaGuardOptions options = {},
                                          const std::string& dtype = "fp32", const std::string& device = "cpu");

  const std::string& name() const override { return options_.name; }
  double threshold() const override { return options_.threshold; }
  int64_t feature_dim() const override;
  std::vector<GuardResult> score(const std::vector<Conversation>& batch, const ScoreOptions& options = {}) override;

  // Lower level, for tests, benches and distillation (HarmAug's teacher needs the full-vocabulary probability).
  // The prompt as the model's chat template renders it (text/guard_prompt.h: message content kept as untrusted
  // text segments), and its ids with that content encoded in plain-text mode, without the appended "\n\n".
  text::RenderedPrompt render(const Conversation& conversation) const;
  std::vector<int32_t> prompt_ids(const Conversation& conversation) const;
  std::vector<LlamaGuardScores> score_detailed(const std::vector<Conversation>& batch, bool full_vocab,
                                               bool use_prefix_cache);
  // Greedy category line after "unsafe" for one conversation: {"S1", "S10"}.
  std::vector<std::string> categories_for(const Conversation& conversation, double* flops = nullptr);

  LlamaGuardVariant variant() const { return variant_; }
  const models::LlamaModel& model() const { return *model_; }
  int32_t safe_id() const { return safe_id_; }
  int32_t unsafe_id() const { return unsafe_id_; }
  // Preamble tokens cached per judged role (0 until the first request needing it).
  int64_t cached_preamble_tokens(bool judges_response) const;

 private:
  std::vector<int64_t> scoring_ids(const Conversation& conversation) const;  // prompt ids + "\n\n"

  std::shared_ptr<models::LlamaModel> model_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  LlamaGuardOptions options_;
  LlamaGuardVariant variant_;
  int32_t safe_id_ = 0, unsafe_id_ = 0, double_newline_id_ = 0, eot_id_ = 0;
  std::unique_ptr<DecoderScorer> scorer_;  // preamble caches keyed by judges_response
};

}  // namespace guardkit::guard
