// OpenAI-shaped text generation from a locally loaded Llama, for the guard server's /v1/completions and
// /v1/chat/completions: request parsing (sampling, stop strings, n, logprobs), generation, log-probabilities from a
// teacher-forced forward, and the two response shapes. Every bad request is an ApiError (400/404).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/generation.h"

namespace guardkit::models {
class LlamaModel;
}
namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::serve {

struct GeneratorLimits {
  int64_t max_tokens = 256;       // cap on a request's max_tokens
  int64_t max_top_logprobs = 20;  // cap on top alternatives per position (OpenAI: 20; vLLM: --max-logprobs)
  int64_t max_choices = 8;        // cap on n
};

struct CompletionSettings {
  models::GenerationOptions generation;
  std::vector<std::string> stop;  // stop strings: the text is cut before the first one (not returned)
  int64_t n = 1;
  int64_t top_logprobs = -1;      // -1: no logprobs; 0: the chosen token's only; k: plus the k most likely
  bool seeded = false;            // the request named a seed (else a fresh one per request)
  bool stream = false;            // "stream": true (n = 1, no logprobs)
};

// The sampling fields both endpoints share: max_tokens (chat also max_completion_tokens), temperature (0 = greedy),
// top_p, seed, stop (a string or up to 4), n; and the logprobs fields in the endpoint's own form — completions:
// "logprobs": k; chat: "logprobs": true with "top_logprobs": k.
CompletionSettings parse_completion_settings(const nlohmann::json& body, bool chat, const GeneratorLimits& limits);

// The prompt of a /v1/completions request: a string (encoded with BOS, special-token text parsed, as a rendered chat
// prompt needs) or token ids ([1, 2, 3] or [[1, 2, 3]]) sent as they are.
std::vector<int64_t> completion_prompt_ids(const nlohmann::json& body, const text::Tokenizer& tokenizer,
                                           int64_t vocab_size);
// The ids of a /v1/chat/completions request: its messages ({role: system|user|assistant, content: string or text
// parts}) rendered with the Llama 3 chat template plus the assistant header; message content is encoded as plain
// text, so typing "<|eot_id|>" cannot inject a control token.
std::vector<int64_t> chat_prompt_ids(const nlohmann::json& body, const text::Tokenizer& tokenizer);

struct GeneratedToken {
  int64_t id = 0;
  std::string text;     // the token's bytes (may be part of a UTF-8 character)
  double logprob = 0;   // log-softmax of the raw logits at its position
  std::vector<std::pair<int64_t, double>> top;  // the most likely ids at that position, descending
};

struct GeneratedChoice {
  std::string text;
  std::string finish_reason;  // "stop" (eos or a stop string) or "length"
  std::vector<int64_t> ids;   // generated ids, including a final eos
  std::vector<GeneratedToken> tokens;  // with logprobs: the tokens of `text` (those before a stop string)
};

struct GeneratedCompletion {
  std::vector<GeneratedChoice> choices;
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// Generates n choices for one prompt (one batched models::generate call), cuts each at its first stop string, and
// computes logprobs when asked. `skip_special_tokens`: leave <|eot_id|> and friends out of the returned text.
GeneratedCompletion run_completion(const models::LlamaModel& model, const text::Tokenizer& tokenizer,
                                   const std::vector<int64_t>& prompt_ids, const CompletionSettings& settings);

// Streams one choice as Server-Sent Events while it is generated, in OpenAI's chunk shapes (chat:
// chat.completion.chunk with delta.content; completions: text_completion with choices[].text), then a chunk with the
// finish_reason and usage, then "data: [DONE]". Text is released as tokens arrive except what could still turn out to
// be part of a stop string or of an unfinished UTF-8 character. `write` returns false when the client went away:
// generation stops there.
void stream_completion(const models::LlamaModel& model, const text::Tokenizer& tokenizer,
                       const std::vector<int64_t>& prompt_ids, const CompletionSettings& settings, bool chat,
                       const std::string& model_name, const std::string& id,
                       const std::function<bool(const std::string&)>& write);

// Response bodies in OpenAI's shapes: legacy completions (choices[].text, logprobs {tokens, token_logprobs,
// top_logprobs, text_offset}) and chat (choices[].message, logprobs {content: [{token, logprob, bytes,
// top_logprobs: [{token, logprob, bytes}]}]}).
nlohmann::json completion_response(const GeneratedCompletion& completion, const CompletionSettings& settings,
                                   const text::Tokenizer& tokenizer, const std::string& model, const std::string& id,
                                   size_t prompt_chars);
nlohmann::json chat_response(const GeneratedCompletion& completion, const CompletionSettings& settings,
                             const text::Tokenizer& tokenizer, const std::string& model, const std::string& id);

}  // namespace guardkit::serve
