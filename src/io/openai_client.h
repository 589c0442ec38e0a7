// A client for OpenAI-compatible servers (vLLM, llama.cpp server, our own guard server): POST /v1/completions and
// /v1/chat/completions with per-request timeouts, retries with exponential backoff and jitter (connect errors,
// timeouts, 5xx, 429 with Retry-After honoured), a concurrency limit shared by all threads using the client, and
// keep-alive connections reused from a pool. Errors are guardkit::RemoteError with a kind a caller can act on
// (RemoteGuard fails closed when the server is unreachable).
// A fleet: several base URLs (comma-separated) are one client. Each request goes to the endpoint with the fewest
// requests outstanding (below its own concurrency limit); a failed attempt (connect error, timeout, 5xx, 429) is
// retried at once on an endpoint this request has not tried, and backs off only once every endpoint was tried.
// Passive health checks: `eject_after_failures` consecutive failures take an endpoint out for `eject_s` (doubling
// while it keeps failing, up to 60 s); then one trial request at a time may bring it back, and a success does.
// When every endpoint is out, the one due back first is tried (a lone server behaves as before).
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
  // Several, comma-separated, make a fleet (see above).
  std::string base_url = "http://127.0.0.1:8000";
  std::string api_key;              // sent as "Authorization: Bearer <key>" when not empty
  double timeout_s = 60.0;          // per attempt: connect, and each read/write on the socket
  int max_retries = 3;              // attempts = 1 + max_retries
  double backoff_initial_s = 0.25;  // doubled each retry, capped at backoff_max_s, times a jitter in [0.5, 1]
  double backoff_max_s = 8.0;
  double retry_after_max_s = 30.0;  // a server's Retry-After is honoured up to this
  int max_concurrency = 8;          // requests in flight at once across all threads (and pooled connections)
  int max_concurrency_per_endpoint = 0;  // fleets: in flight at once on one endpoint; 0 = max_concurrency
  int eject_after_failures = 2;     // consecutive failed attempts that take an endpoint out
  double eject_s = 5.0;             // first time out; doubles while trial requests keep failing, up to 60 s
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

// One endpoint of a client, as metrics show it.
struct EndpointStatus {
  std::string url;
  bool healthy = true;  // false while ejected or on trial after an ejection
  int in_flight = 0;
  int64_t requests = 0;  // attempts sent
  int64_t failures = 0;  // attempts that failed (connect error, timeout, 5xx, 429)
  int64_t ejections = 0;
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

  std::string endpoint(const std::string& path) const;  // the full URL of a path (the first endpoint's), for messages
  int64_t attempts_made() const;                               // total HTTP attempts so far (tests, metrics)
  std::vector<EndpointStatus> endpoints() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Endpoint {
    std::string scheme_host_port;
    std::string prefix;  // "" or "/prefix" (with /v1 stripped if the URL had it)
    std::vector<std::unique_ptr<httplib::Client>> idle;
    int in_flight = 0;
    int consecutive_failures = 0;
    bool on_trial = false;         // ejected before: one request at a time until one succeeds
    Clock::time_point out_until{};  // ejected until then
    double eject_s = 0.0;           // the current time out
    int64_t requests = 0, failures = 0, ejections = 0;
  };
  struct Lease {
    size_t endpoint = 0;
    std::unique_ptr<httplib::Client> client;
  };
  std::optional<size_t> pick_endpoint(const std::vector<bool>& tried, Clock::time_point now) const;  // under mutex_
  Lease acquire_connection(const std::vector<bool>& tried);
  // Returns the connection to the pool (null: it broke) and records the attempt's outcome for health.
  void release_connection(Lease lease, bool failed);
  double backoff_seconds(int retry);

  OpenAIClientOptions options_;
  std::vector<Endpoint> endpoints_;
  int per_endpoint_limit_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable slot_free_;
  int in_flight_ = 0;
  size_t rotation_ = 0;  // breaks ties between equally loaded endpoints round-robin
  std::mt19937_64 rng_;
  int64_t attempts_ = 0;
};

}  // namespace guardkit::io
