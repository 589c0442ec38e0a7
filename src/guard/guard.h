// The one interface every guard implements: score a batch of conversations, return P(unsafe), the decision, the
// categories when the model names them, the router feature, and what it cost.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace guardkit::guard {

struct Message {
  std::string role;     // "user" or "assistant"
  std::string content;
};

// What a guard judges: a prompt, a prompt and its response, or a multi-turn exchange. The last message is judged.
struct Conversation {
  std::vector<Message> messages;

  static Conversation from_prompt(std::string prompt);
  static Conversation from_pair(std::string prompt, std::optional<std::string> response);
  // The last user message and the assistant message after it, if the conversation ends with one.
  const std::string& last_prompt() const;
  std::optional<std::string> last_response() const;
  bool judges_response() const { return !messages.empty() && messages.back().role == "assistant"; }
};

struct ScoreOptions {
  bool want_features = false;    // fill GuardResult::feature (routers need it)
  bool want_categories = false;  // LlamaGuard: generate the category line when unsafe (costs a few decode steps)
};

struct GuardResult {
  double p_unsafe = 0.0;                // P(unsafe) in [0, 1]
  bool unsafe = false;                  // p_unsafe >= the guard's threshold
  std::vector<std::string> categories;  // e.g. {"S1", "S10"}; empty when unknown or safe
  std::vector<float> feature;           // router feature (pooled / last-token hidden state) when asked for
  int64_t tokens = 0;                   // tokens this item cost the model
  double flops = 0.0;                   // forward FLOPs for this item (2 * params * tokens + attention)
  std::string decided_by;               // name of the guard that decided
  std::optional<double> router_score;   // set by a routing guard (route/routed_guard.h): the router's score
};

class Guard {
 public:
  virtual ~Guard() = default;
  virtual const std::string& name() const = 0;
  virtual double threshold() const = 0;
  virtual int64_t feature_dim() const { return 0; }  // 0: this guard gives no router feature
  // Scores a batch. Results are in input order. Thread-safety: one call at a time per guard (the server batches).
  virtual std::vector<GuardResult> score(const std::vector<Conversation>& batch, const ScoreOptions& options = {}) = 0;
};

}  // namespace guardkit::guard
