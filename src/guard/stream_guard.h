// Qwen3Guard-Stream: token-level moderation while a response is generated. Four small heads on the Qwen3 backbone's
// final-normed hidden state h_t (vLLM / SGLang `Qwen3ForGuardModel`):
//   response:  x = RMSNorm(W_pre h_t)   risk = W_risk x [Safe, Unsafe, Controversial]   category = W_cat x [8]
//   query:     the same with the query_* weights, categories [9] (the response 8 + Jailbreak)
// Run incrementally: the conversation up to the user's <|im_end|> in one call (judged by the query heads at its last
// token), then one backbone step per assistant token through the KV cache (judged by the response heads). Never a
// recompute of the prefix; a token's logits depend only on the tokens up to it, so streamed rows equal the rows of
// one full-sequence pass.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::models {
class LlamaModel;
class KVCache;
}  // namespace guardkit::models

namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::guard {

struct StreamVerdict {
  int risk = 0;               // argmax index into stream_risk_levels()
  double risk_prob = 0;       // its softmax probability
  int category = 0;           // argmax index into the branch's category list
  std::vector<float> risk_logits, category_logits;
  const std::string& risk_level() const;  // "Safe", "Unsafe" or "Controversial"
  bool unsafe() const { return risk == 1; }
};

// Labels as QwenLM/Qwen3Guard eval/eval_stream.py maps the head indices (not the Qwen3Guard-Gen category order).
const std::vector<std::string>& stream_risk_levels();                  // Safe, Unsafe, Controversial
const std::vector<std::string>& stream_categories(bool query_branch);  // 8 response / 9 query (+ Jailbreak)

// eval_stream.py's `consecutive_unsafe` rule over per-token labels: the index i + 1 of the first pair of
// consecutive "Unsafe" labels (-1 if none), and the same for "Controversial".
struct ConsecutiveVerdict {
  int64_t unsafe_at = -1, controversial_at = -1;
};
ConsecutiveVerdict consecutive_unsafe(const std::vector<std::string>& labels);

class StreamGuard {
 public:
  // The backbone from `dir` (a Qwen3 checkpoint); the heads from `heads` (a safetensors file), or from the
  // backbone's own checkpoint when empty (a real Qwen3Guard-Stream stores both in one file).
  static std::shared_ptr<StreamGuard> load(const std::filesystem::path& dir, const std::filesystem::path& heads = {},
                                           const std::string& dtype = "fp32", const std::string& device = "cpu");
  // From a loaded backbone and the eight head tensors by name (benches, tests with random heads).
  static std::shared_ptr<StreamGuard> from_parts(std::shared_ptr<models::LlamaModel> backbone,
                                                 std::shared_ptr<text::Tokenizer> tokenizer,
                                                 const std::function<at::Tensor(const std::string& name)>& head);
  // The names of the head tensors.
  static const std::vector<std::string>& head_names();
  ~StreamGuard();

  const models::LlamaModel& backbone() const { return *backbone_; }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }
  int64_t guard_inner_size() const;

  // One conversation being moderated: its KV cache and what was judged.
  class Session {
   public:
    Session(Session&&) noexcept;
    Session& operator=(Session&&) noexcept;
    ~Session();
    // The conversation up to and including the user's <|im_end|>, in one call; query heads at its last token.
    StreamVerdict judge_user(const std::vector<int64_t>& ids);
    // One more token (assistant side): one backbone step; response heads at it.
    StreamVerdict next(int64_t token);
    int64_t length() const { return length_; }  // tokens in the cache
    // Keeps only the first `length` tokens (a re-tokenized tail is fed again; the cache is copied).
    void truncate(int64_t length);

   private:
    friend class StreamGuard;
    explicit Session(const StreamGuard& guard);
    const StreamGuard* guard_;
    std::unique_ptr<models::KVCache> cache_;
    int64_t length_ = 0;
  };
  Session start() const;

  // Every head at every position of one sequence in a single pass (tests): [T, 3], [T, 8], [T, 3], [T, 9] float32.
  struct FullLogits {
    at::Tensor risk, category, query_risk, query_category;
  };
  FullLogits full(const std::vector<int64_t>& ids) const;

  // The Qwen3 chat-template ids of a conversation up to and including the last user message's <|im_end|>
  // ("<|im_start|>role\ncontent<|im_end|>\n" per message, content encoded with no added token matched), and the
  // assistant header that follows it with thinking disabled ("<|im_start|>assistant\n<think>\n\n</think>\n\n").
  std::vector<int64_t> user_part_ids(const std::vector<std::pair<std::string, std::string>>& messages) const;
  std::vector<int64_t> assistant_header_ids() const;

 private:
  struct Branch {
    at::Tensor pre, norm, risk_head, category_head;  // [inner, H], [inner], [3, inner], [n, inner]
  };
  StreamGuard() = default;
  StreamVerdict judge(const at::Tensor& hidden_row, const Branch& branch) const;  // hidden_row [H] float32
  at::Tensor branch_logits(const at::Tensor& hidden, const Branch& branch, bool risk) const;  // [T, H] -> [T, n]

  std::shared_ptr<models::LlamaModel> backbone_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  Branch response_, query_;
  double eps_ = 1e-6;
};

// A streamed answer moderated token by token (the guarded proxy's stream guard). The user part is judged once; then
// the answer's text is fed as it arrives: it is re-tokenized as a whole (so tokens equal those of the final text),
// every token that can no longer change is run through the guard once, and text is released only when its tokens
// and `hold_back_tokens` more were judged. The `consecutive_unsafe` rule cuts the answer at the second of two
// consecutive Unsafe tokens (Controversial counts too with `controversial_is_unsafe`).
struct StreamModerationOptions {
  int64_t hold_back_tokens = 2;         // judged tokens whose text is still withheld
  bool controversial_is_unsafe = false;
};

class StreamModeration {
 public:
  StreamModeration(std::shared_ptr<const StreamGuard> guard, StreamModerationOptions options = {});
  // The conversation (role, content) up to its last user message: query heads; then the assistant header is fed.
  StreamVerdict judge_user(const std::vector<std::pair<std::string, std::string>>& messages);
  // More answer text. Returns how many bytes of the answer so far may be released (never less than before).
  size_t feed(std::string_view delta);
  // The answer is complete: every token is judged and, unless cut, all of it may be released.
  size_t finish();

  bool cut() const { return cut_at_ >= 0; }
  int64_t cut_at_token() const { return cut_at_; }        // index among the answer's tokens, -1 if not cut
  const std::vector<std::string>& labels() const { return labels_; }  // per judged answer token
  int64_t steps() const { return static_cast<int64_t>(labels_.size()); }  // backbone steps run for the answer
  bool flags(const StreamVerdict& v) const { return v.risk == 1 || (options_.controversial_is_unsafe && v.risk == 2); }

 private:
  size_t advance(bool final);
  size_t releasable(size_t judged_tokens) const;

  std::shared_ptr<const StreamGuard> guard_;
  StreamModerationOptions options_;
  std::optional<StreamGuard::Session> session_;
  int64_t answer_start_ = 0;          // cache length where the answer's tokens begin
  std::string text_;                  // the answer so far
  std::vector<int64_t> fed_;          // answer tokens run through the guard ("\n\n" + text, tokenized)
  std::vector<std::string> labels_;   // their risk levels
  std::vector<bool> flagged_;
  size_t released_ = 0;
  int64_t cut_at_ = -1;
};

}  // namespace guardkit::guard
