// The guard server: OpenAI-compatible /v1/moderations, /v1/guard with per-request routing, /v1/models, /healthz,
// /readyz and Prometheus /metrics over HTTP (cpp-httplib), with dynamic batching per guard, a bounded queue (429 +
// Retry-After when full), per-request timeouts (504), body-size (413) and input-count limits, bearer API keys,
// structured JSON access logs and a graceful stop that answers every request already accepted.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "guard/guard.h"
#include "serve/api.h"

namespace guardkit::route {
class Router;
}
namespace guardkit::models {
class LlamaModel;
}
namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::serve {

class MetricsRegistry;

struct ServedGuard {
  std::string name;                     // the model name clients send ("model")
  std::shared_ptr<guard::Guard> guard;  // loaded once, shared
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port; start() returns the one bound

  // Bearer API keys (Authorization: Bearer <key>). Empty: no authentication. /healthz, /readyz and /metrics are
  // always open (probes and scrapers).
  std::vector<std::string> api_keys;

  size_t max_body_bytes = 1 << 20;  // larger bodies: 413
  size_t max_inputs = 64;           // /v1/moderations 'input' list items per request
  std::chrono::milliseconds request_timeout{30000};  // a request not answered by then: 504

  // Dynamic batching, one batcher per guard.
  int max_batch = 16;  // 1 = batching off
  int batch_workers = 1;  // threads scoring batches per guard (BatcherOptions::workers)
  std::chrono::microseconds max_wait{2000};
  size_t queue_capacity = 1024;  // conversations waiting per guard; beyond: 429
  // Stop waiting for a batch to fill as soon as no other request is being parsed (no latency added at low load);
  // false: always wait up to max_wait (or until the batch is full).
  bool adaptive_wait = true;

  int http_threads = 64;  // concurrent connections served (each keep-alive connection holds one)
  int keep_alive_seconds = 2;
  // Requests one keep-alive connection may carry before the server closes it (cpp-httplib's default is 5, which makes
  // busy clients reconnect every 5 requests; nginx's keepalive_requests default is 1000).
  int keep_alive_max_requests = 1000;

  // Which served guards play which part. Empty default_model: the small model (else the first served guard).
  std::string default_model;
  std::string small_model;  // empty: the first served guard
  std::string large_model;  // empty: no large guard ("large" and "saferoute" policies answer 400)
  RoutingPolicy default_policy = RoutingPolicy::kSmall;

  // SafeRoute (policy "saferoute"): the router (route/router.h: the learned SafeRouteRouter or a baseline) reads the
  // small guard's feature and P(unsafe); a conversation goes to the large guard when its router score > ε. ε per
  // request ("epsilon"), or from a target large-guard share ("budget": the (1 - budget) quantile of the last
  // `budget_window` router scores this server saw, as RouteLLM calibrates), else route_threshold, else the router's
  // default. Needs small_model and large_model.
  std::shared_ptr<route::Router> router;
  std::optional<double> route_threshold;
  size_t budget_window = 1024;
  size_t budget_min_scores = 32;  // fewer scores seen than this: a budget falls back to the default ε
  // A fleet's shared budget window: when not empty, budgets are quantiles of these router scores (a calibration set
  // scored offline, or another replica's window: GET /v1/router/window) instead of this server's own recent scores,
  // so every replica turns a budget into the same ε. Replaced at run time by GuardServer::set_budget_reference.
  std::vector<double> budget_reference;

  // POST /v1/completions (OpenAI's legacy completions, with logprobs as RemoteGuard reads them) and, unless an
  // upstream is configured (the guarded proxy wins), POST /v1/chat/completions (chat template, chat-shaped logprobs)
  // from a locally loaded Llama generator (serve/generator_api.h). Requests run one at a time; a request's n choices
  // run as one batch. Absent: /v1/completions answers 404.
  std::shared_ptr<const models::LlamaModel> generator;
  std::shared_ptr<const text::Tokenizer> generator_tokenizer;
  std::string generator_name = "generator";
  int64_t max_completion_tokens = 256;
  int64_t max_top_logprobs = 20;  // cap on logprobs/top_logprobs (RemoteGuard may ask for more with a higher cap)
  int64_t max_choices = 8;        // cap on n

  // Guarded proxy: POST /v1/chat/completions forwarded to an upstream OpenAI-compatible server ("http://host:port").
  // The conversation is checked by the small guard first (blocked: answered in the OpenAI shape with
  // finish_reason "content_filter"), `defense_text` (BiasDefense) is injected as a leading system message, and each
  // returned message is checked before it is released. Upstream down: 502, stalled past upstream_timeout: 504.
  // With an upstream, /v1/chat/completions is this proxy even when a generator is loaded (the proxy wins).
  std::string upstream_url;
  std::string upstream_api_key;
  std::chrono::milliseconds upstream_timeout{60000};
  std::string defense_text;
  std::string refusal_text = "I can't help with that.";
  // Streaming ("stream": true) through the proxy: the upstream's SSE is read as it comes, and its text is checked
  // every `stream_check_chars` characters and/or every `stream_check_deltas` content deltas (about one token each;
  // 0 = that trigger off; both off: one check at the end), plus a final check of the whole answer, each check BEFORE
  // the text is released. A check that finds it unsafe ends the stream with finish_reason "content_filter"; nothing
  // after the last passed check is released.
  size_t stream_check_chars = 256;
  size_t stream_check_deltas = 0;
  // When the proxy cannot get a verdict (the guard fails or a check times out; a RemoteGuard's own when_down policy
  // acts first) and when the upstream fails mid-stream. false (fail closed): nothing unchecked is released — a
  // request is answered as blocked, a stream ends withholding its unchecked tail. true (fail open): the unchecked
  // text is released, and a stream's tail that arrived before the upstream failed is checked and released.
  // Failures before the upstream answered are 502/504 either way (there is nothing to release).
  bool fail_open = false;

  // Receives one JSON line per request (access log). Empty: no access log.
  std::function<void(const std::string& line)> access_log;
};

class GuardServer {
 public:
  GuardServer(ServerConfig config, std::vector<ServedGuard> guards);
  ~GuardServer();  // stop()
  GuardServer(const GuardServer&) = delete;
  GuardServer& operator=(const GuardServer&) = delete;

  // Binds and serves on background threads; returns the bound port. Throws guardkit::Error when it cannot bind.
  int start();
  // Graceful: /readyz turns 503, the listener closes, every request already accepted (queued or in a batch) is
  // answered, then the batchers stop. Idempotent; safe from any thread but a request handler.
  void stop();
  // The first half of a drain: /readyz turns 503 while requests are still accepted and answered, so load balancers
  // and Kubernetes endpoints take this replica out before stop() closes the listener.
  void drain();
  // Replaces ServerConfig::budget_reference (a refreshed shared window); thread-safe.
  void set_budget_reference(std::vector<double> scores);

  int port() const;
  bool ready() const;
  MetricsRegistry& metrics();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace guardkit::serve
