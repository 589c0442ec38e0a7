// Qwen3Guard-Gen (0.6B / 4B / 8B) as a Guard. The prompt is the model's own (text/qwen3_guard_prompt.h, byte for
// byte), with message content encoded with no added token matched; "Safety:" is appended and the logits of the
// first token of each verdict are read at the last position:
//   " Safe", " Unsafe", " Controversial" (its first token " Cont")  ->  p = softmax over those three
//   P(unsafe) = p_Unsafe + p_Controversial   (strict, Qwen's evaluation default)   or   p_Unsafe   (loose)
// Categories (Qwen3Guard names: "Violent", "PII", "Jailbreak", ...) and, for responses, the refusal are parsed from
// the generated answer lines when asked for. The policy preamble is the same for every request judging the same
// role: its KV cache is computed once per guard and reused.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "guard/guard.h"
#include "text/prompt.h"
#include "text/qwen3_guard_prompt.h"

namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::models {
class LlamaModel;
}

namespace guardkit::guard {

class DecoderScorer;

struct Qwen3GuardOptions {
  std::string name = "qwen3-guard";
  double threshold = 0.5;
  bool strict = true;                // Controversial counts as unsafe (false: "loose", it counts as safe)
  bool prefix_cache = true;          // reuse the preamble's KV cache
  int64_t max_answer_tokens = 48;    // decode budget for the answer lines (categories, refusal)
  int64_t max_batch = 8;             // rows per forward pass
};

struct Qwen3GuardScores {
  double logit_safe = 0, logit_unsafe = 0, logit_controversial = 0;
  double p_safe = 0, p_unsafe = 0, p_controversial = 0;  // softmax over the three verdict logits
  std::vector<float> feature;                            // final-normed hidden state at the last position
  int64_t tokens = 0;                                    // tokens run for this item (the cached preamble excluded)
  double flops = 0;
};

class Qwen3Guard : public Guard {
 public:
  Qwen3Guard(std::shared_ptr<models::LlamaModel> model, std::shared_ptr<text::Tokenizer> tokenizer,
             Qwen3GuardOptions options = {});
  ~Qwen3Guard() override;
  static std::unique_ptr<Qwen3Guard> load(const std::filesystem::path& dir, Qwen3GuardOptions options = {},
                                          const std::string& dtype = "fp32", const std::string& device = "cpu");

  const std::string& name() const override { return options_.name; }
  double threshold() const override { return options_.threshold; }
  int64_t feature_dim() const override;
  std::vector<GuardResult> score(const std::vector<Conversation>& batch, const ScoreOptions& options = {}) override;

  // Lower level, for tests and benches. A conversation longer than one exchange is judged on its last exchange
  // (its last user message and the assistant reply after it, if any).
  text::RenderedPrompt render(const Conversation& conversation) const;
  std::vector<int32_t> prompt_ids(const Conversation& conversation) const;
  std::vector<Qwen3GuardScores> score_detailed(const std::vector<Conversation>& batch, bool use_prefix_cache);
  // Generates the answer lines greedily and parses them ("Safety: Unsafe\nCategories: Violent\nRefusal: No").
  text::Qwen3GuardAnswer answer_for(const Conversation& conversation, double* flops = nullptr);
  double p_unsafe(const Qwen3GuardScores& scores) const;  // by the strict / loose option

  const models::LlamaModel& model() const { return *model_; }
  // " Safe", " Unsafe", " Cont": the verdict tokens whose logits are read.
  const std::vector<int64_t>& verdict_ids() const { return verdict_ids_; }
  int64_t cached_preamble_tokens(bool judges_response) const;

 private:
  std::vector<int64_t> scoring_ids(const Conversation& conversation) const;  // prompt ids + "Safety:"

  std::shared_ptr<models::LlamaModel> model_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  Qwen3GuardOptions options_;
  std::vector<int64_t> verdict_ids_, safety_prefix_ids_;
  int64_t im_end_id_ = 0;
  std::unique_ptr<DecoderScorer> scorer_;
};

}  // namespace guardkit::guard
