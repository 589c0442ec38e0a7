// A client for OpenAI-compatible servers (vLLM, llama.cpp server, our own guard server): POST /v1/completions and
// /v1/chat/completions with per-request timeouts, retries with exponential backoff and jitter (connect errors,
// timeouts, 5xx, 429 with Retry-After honoured), a concurrency limit shared by all threads using the client, and
// keep-alive connections reused from a pool. Errors are guardkit::RemoteError with a kind a caller can act on
// (RemoteGuard fails closed when the server is unreachable).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "text/chat_format.h"
#include "util/error.h"

namespace httplib {
class Client;
}

namespace guardkit::io {

class RemoteError : public Error {
 public:
  enum class Kind {
    kUnreachable,  // connection refused / host not found, after all retries
    kTimeout,      // no (complete) answer within the timeout, after all retries
    kHttpStatus,   // a non-2xx status that is not retried (4xx) or persisted (5xx, 429)
    kBadResponse,  // 2xx but the body is not JSON or not the expected shape
  };
  RemoteError(Kind kind, int status, const std::string& message) : Error(message), kind(kind), status(status) {}
  Kind kind;
  int status;  // HTTP status, 0 when none was received
};

struct OpenAIClientOptions {
  // "http://host:port" or "http://host:port/prefix". Endpoints are {prefix}/v1/completions and
  // {prefix}/v1/chat/completions; a prefix that already ends in /v1 (as OpenAI SDK base URLs do) is not doubled.
  std::string base_url = "http://127.0.0.1:8000";
  std::string api_key;              // sent as "Authorization: Bearer <key>" when not empty
  double timeout_s = 60.0;          // per attempt: connect, and each read/write on the socket
  int max_retries = 3;              // attempts = 1 + max_retries
  double backoff_initial_s = 0.25;  // doubled each retry, capped at backoff_max_s, times a jitter in [0.5, 1]
  double backoff_max_s = 8.0;
  double retry_after_max_s = 30.0;  // a server's Retry-After is honoured up to this
  int max_concurrency = 8;          // requests in flight at once across all threads (and pooled connections)
  uint64_t jitter_seed = 0;         // 0: seeded from the clock
};

struct SamplingParams {
  int max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  int n = 1;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  std::optional<int> logprobs;  // k: the k most likely tokens at each generated position
};

struct TopLogprob {
  std::string token;
  double logprob = 0.0;
};

struct TokenLogprob {
  std::string token;  // the sampled token
  double logprob = 0.0;
  std::vector<TopLogprob> top;  // most likely first
};

struct CompletionChoice {
  int index = 0;
  std::string text;  // completions: text; chat: message content
  std::string finish_reason;
  std::vector<TokenLogprob> logprobs;  // empty unless asked for
};

struct CompletionResponse {
  std::vector<CompletionChoice> choices;  // ordered by index
  int64_t prompt_tokens = 0, completion_tokens = 0;
  nlohmann::json raw;
};

class OpenAIClient {
 public:
  explicit OpenAIClient(OpenAIClientOptions options);
  ~OpenAIClient();
  OpenAIClient(const OpenAIClient&) = delete;
  OpenAIClient& operator=(const OpenAIClient&) = delete;

  CompletionResponse complete(const std::string& model, const std::string& prompt, const SamplingParams& params = {});
  CompletionResponse complete(const std::string& model, const std::vector<int32_t>& prompt_ids,
                              const SamplingParams& params = {});
  CompletionResponse chat(const std::string& model, const std::vector<text::ChatMessage>& messages,
                          const SamplingParams& params = {});

  // POSTs a JSON body to an endpoint path below the prefix ("/v1/completions") with the retry policy; returns the
  // parsed JSON body of the 2xx answer.
  nlohmann::json post_json(const std::string& path, const nlohmann::json& body);

  std::string endpoint(const std::string& path) const;  // the full URL of a path, for messages
  int64_t attempts_made() const;                               // total HTTP attempts so far (tests, metrics)

 private:
  std::unique_ptr<httplib::Client> acquire_connection();
  void release_connection(std::unique_ptr<httplib::Client> client);
  double backoff_seconds(int retry);

  OpenAIClientOptions options_;
  std::string scheme_host_port_;
  std::string prefix_;  // "" or "/prefix" (with /v1 stripped if the URL had it)
  mutable std::mutex mutex_;
  std::condition_variable slot_free_;
  int in_flight_ = 0;
  std::vector<std::unique_ptr<httplib::Client>> idle_;
  std::mt19937_64 rng_;
  int64_t attempts_ = 0;
};

}  // namespace guardkit::io
