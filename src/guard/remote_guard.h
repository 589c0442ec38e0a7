// RemoteGuard: Llama Guard 3 behind an OpenAI-compatible /v1/completions server (vLLM, llama.cpp server) — how an 8B
// guard runs in production. The prompt is rendered byte for byte as the model's template does (text/guard_prompt.h)
// with "\n\n" appended (the model's first generated token), and one token is requested with temperature 0 and the
// top-k log-probabilities of that position:
//   P(unsafe) = p(unsafe) / (p(safe) + p(unsafe))   over the top-k entries ("safe"/"unsafe" after trimming spaces,
//                                                    case-insensitive; variants of one word are summed)
// When one of the two words is missing from the top k, its probability is unknown but bounded: it is at most the
// smallest listed probability and at most the mass left over (1 - sum of the listed). We use that upper bound as its
// value. For a missing "unsafe" this errs towards unsafe (never reports a confident "safe" the numbers do not
// support); for a missing "safe" P(unsafe) is then a lower bound that is already near 1. When neither word is
// listed the server's answer says nothing about safety: it counts as a failure of the server.
// With a tokenizer directory the prompt goes as token ids (user content encoded as plain text, so typing
// "<|eot_id|>" cannot inject a control token, and no BOS is added twice); without one it goes as text and the server
// tokenizes it — only safe when the server does not parse special-token text in prompts.
// When the server stays down (after the client's retries) or answers nonsense, the policy decides: fail closed
// (P(unsafe) = 1, the default), fail open (P(unsafe) = 0), or throw.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "guard/guard.h"
#include "io/openai_client.h"
#include "text/guard_prompt.h"

namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::guard {

enum class WhenServerDown { kFailClosed, kFailOpen, kThrow };
WhenServerDown parse_when_server_down(const std::string& text);  // "fail_closed", "fail_open", "throw"

struct RemoteGuardOptions {
  std::string name = "remote-llama-guard";
  std::string model;  // the "model" field the server expects (e.g. "meta-llama/Llama-Guard-3-8B")
  double threshold = 0.5;
  text::GuardPromptOptions prompt;  // variant (8B default), custom or excluded categories
  io::OpenAIClientOptions client;
  int top_logprobs = 5;
  WhenServerDown when_down = WhenServerDown::kFailClosed;
  std::filesystem::path tokenizer_dir;  // empty: send text prompts
  int category_max_tokens = 20;         // the generation that names categories when asked for
};

// P(unsafe) from one position's top log-probabilities, as described above. Throws guardkit::Error when neither
// "safe" nor "unsafe" is among them.
double p_unsafe_from_top_logprobs(const std::vector<io::TopLogprob>& top);

class RemoteGuard : public Guard {
 public:
  explicit RemoteGuard(RemoteGuardOptions options);
  ~RemoteGuard() override;

  const std::string& name() const override { return options_.name; }
  double threshold() const override { return options_.threshold; }
  // Items are sent concurrently (up to the client's concurrency limit). A failed item follows the when_down policy;
  // its decided_by then reads "<name>:fail_closed" or "<name>:fail_open".
  std::vector<GuardResult> score(const std::vector<Conversation>& batch, const ScoreOptions& options = {}) override;

  io::OpenAIClient& client() { return *client_; }

 private:
  GuardResult score_one(const Conversation& conversation, const ScoreOptions& options);
  RemoteGuardOptions options_;
  std::unique_ptr<io::OpenAIClient> client_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
};

}  // namespace guardkit::guard
