#include "guard/remote_guard.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <thread>

#include "text/prompt.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/printable.h"

namespace guardkit::guard {

WhenServerDown parse_when_server_down(const std::string& text) {
  if (text == "fail_closed") return WhenServerDown::kFailClosed;
  if (text == "fail_open") return WhenServerDown::kFailOpen;
  if (text == "throw") return WhenServerDown::kThrow;
  fail("unknown policy '{}' for a server that stays down (fail_closed, fail_open or throw)", printable(text));
}

double p_unsafe_from_top_logprobs(const std::vector<io::TopLogprob>& top) {
  double p_safe = 0.0, p_unsafe = 0.0, listed = 0.0, smallest = 1.0;
  bool has_safe = false, has_unsafe = false;
  for (const auto& entry : top) {
    const double p = std::exp(entry.logprob);
    listed += p;
    smallest = std::min(smallest, p);
    std::string word(text::python_strip(entry.token));
    for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (word == "safe") {
      p_safe += p;
      has_safe = true;
    } else if (word == "unsafe") {
      p_unsafe += p;
      has_unsafe = true;
    }
  }
  if (!has_safe && !has_unsafe) fail("neither 'safe' nor 'unsafe' is among the server's top {} tokens", top.size());
  const double bound = std::clamp(std::min(smallest, 1.0 - listed), 0.0, 1.0);  // a missing word's upper bound
  if (!has_unsafe) p_unsafe = bound;
  if (!has_safe) p_safe = bound;
  if (p_safe + p_unsafe <= 0.0) return has_unsafe ? 1.0 : 0.0;
  return p_unsafe / (p_safe + p_unsafe);
}

RemoteGuard::RemoteGuard(RemoteGuardOptions options) : options_(std::move(options)) {
  if (options_.top_logprobs < 1) fail("remote guard '{}': top_logprobs must be at least 1", options_.name);
  client_ = std::make_unique<io::OpenAIClient>(options_.client);
  if (!options_.tokenizer_dir.empty()) tokenizer_ = text::load_tokenizer(options_.tokenizer_dir);
}

RemoteGuard::~RemoteGuard() = default;

GuardResult RemoteGuard::score_one(const Conversation& conversation, const ScoreOptions& score_options) {
  std::vector<text::ChatMessage> messages;
  for (const auto& m : conversation.messages) messages.push_back({m.role, m.content});
  text::RenderedPrompt prompt = text::render_guard_prompt(messages, options_.prompt);
  prompt.add_template("\n\n");  // the model's first generated token; safe/unsafe is read right after it
  GuardResult result;
  result.decided_by = options_.name;
  io::SamplingParams params;
  params.max_tokens = 1;
  params.temperature = 0.0;
  params.logprobs = options_.top_logprobs;
  std::vector<int32_t> ids;
  if (tokenizer_) ids = text::encode_prompt(*tokenizer_, prompt);
  try {
    io::CompletionResponse response = tokenizer_ ? client_->complete(options_.model, ids, params)
                                                 : client_->complete(options_.model, prompt.text(), params);
    if (response.choices.empty() || response.choices[0].logprobs.empty())
      throw io::RemoteError(io::RemoteError::Kind::kBadResponse, 200,
                            fmt::format("{}: the server returned no log-probabilities", options_.name));
    result.p_unsafe = p_unsafe_from_top_logprobs(response.choices[0].logprobs[0].top);
    result.tokens = tokenizer_ ? static_cast<int64_t>(ids.size()) + 1 : response.prompt_tokens + 1;
    result.unsafe = result.p_unsafe >= options_.threshold;
    if (result.unsafe && score_options.want_categories) {
      io::SamplingParams generate;
      generate.max_tokens = options_.category_max_tokens;
      generate.temperature = 0.0;
      auto answer = tokenizer_ ? client_->complete(options_.model, ids, generate)
                               : client_->complete(options_.model, prompt.text(), generate);
      // The prompt already ends with "\n\n", so the answer is "unsafe\nS1,S10" (or "safe" when the greedy answer
      // disagrees with the threshold; then no categories).
      const text::GuardVerdict verdict = text::parse_guard_output(answer.choices.at(0).text);
      result.categories = verdict.categories;
      result.tokens += answer.completion_tokens;
    }
  } catch (const Error& e) {
    if (options_.when_down == WhenServerDown::kThrow) throw;
    const bool closed = options_.when_down == WhenServerDown::kFailClosed;
    spdlog::warn("{}: {}; failing {}", options_.name, e.what(), closed ? "closed (unsafe)" : "open (safe)");
    result = GuardResult{};
    result.p_unsafe = closed ? 1.0 : 0.0;
    result.unsafe = closed;
    result.decided_by = options_.name + (closed ? ":fail_closed" : ":fail_open");
  }
  return result;
}

std::vector<GuardResult> RemoteGuard::score(const std::vector<Conversation>& batch, const ScoreOptions& options) {
  std::vector<GuardResult> results(batch.size());
  std::vector<std::exception_ptr> errors(batch.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < batch.size(); i = next++) {
      try {
        results[i] = score_one(batch[i], options);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const size_t workers = std::min<size_t>(batch.size(), std::max(1, options_.client.max_concurrency));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < workers; ++t) threads.emplace_back(worker);
  worker();
  for (auto& thread : threads) thread.join();
  for (auto& error : errors)
    if (error) std::rethrow_exception(error);
  return results;
}

}  // namespace guardkit::guard
