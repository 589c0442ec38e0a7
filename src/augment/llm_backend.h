// The one interface HarmAug (instruction and response generation), BiasJailbreak (targets) and SafeRoute's
// paraphrase augmentation use to talk to an LLM: the engine's local Llama or any OpenAI-compatible endpoint.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace guardkit::augment {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  double top_p = 1.0;
  int top_k = 0;             // 0 = off
  double repetition_penalty = 1.0;
  int max_tokens = 256;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
  // When not empty, the assistant turn is pre-filled with this text and the model continues it (HarmAug's
  // affirmative-prefix attack). Backends render the chat template themselves to do it: a chat endpoint cannot.
  std::string assistant_prefix;
  SamplingParams sampling;
};

struct Completion {
  std::string text;            // the continuation only (without the assistant prefix)
  std::string finish_reason;   // "stop", "length", or "error"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::optional<std::string> error;  // set when this request failed after retries; the others still return
};

class LlmBackend {
 public:
  virtual ~LlmBackend() = default;
  virtual std::string name() const = 0;
  // Results in request order. A failing request gives a Completion with `error` set instead of throwing, so a batch
  // of a long job never loses its other rows.
  virtual std::vector<Completion> generate(const std::vector<ChatRequest>& batch) = 0;
};

}  // namespace guardkit::augment
