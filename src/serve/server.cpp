#include "serve/server.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <ATen/ATen.h>
#include <atomic>
#include <limits>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "models/generation.h"
#include "models/llama.h"
#include "route/router.h"
#include "route/threshold.h"
#include "serve/batcher.h"
#include "serve/categories.h"
#include "serve/metrics.h"
#include "text/tokenizer.h"
#include "util/jsonl.h"

namespace guardkit::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Model names OpenAI clients send by default: answered by the default guard so they work unchanged.
bool is_openai_moderation_alias(const std::string& name) {
  return name.rfind("omni-moderation-", 0) == 0 || name.rfind("text-moderation-", 0) == 0;
}

const std::vector<std::string> kEndpoints = {"/v1/moderations", "/v1/guard", "/v1/models", "/v1/completions",
                                             "/v1/chat/completions",
                                             "/healthz",        "/readyz",   "/metrics"};

std::string endpoint_label(const std::string& path) {
  for (const auto& e : kEndpoints)
    if (path == e) return e;
  return "other";  // unknown paths share one label: no unbounded label sets
}

// Constant-time comparison: an API key check must not leak how many leading bytes matched.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string utc_timestamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", fmt::gmtime(std::chrono::system_clock::to_time_t(now)), ms);
}

// What a handler learned about its request, for the access log.
struct RequestRecord {
  std::string model;
  size_t inputs = 0;
  size_t flagged = 0;
  std::string decided_by;
  std::string error_code;
};

}  // namespace

struct GuardServer::Impl {
  ServerConfig config;
  std::vector<ServedGuard> guards;
  std::map<std::string, size_t> guard_index;        // name -> index in guards / batchers
  std::vector<std::unique_ptr<Batcher>> batchers;   // one per served guard
  size_t small = 0;
  std::optional<size_t> large;
  size_t default_model = 0;

  MetricsRegistry metrics;
  httplib::Server http;
  std::thread listener;
  int bound_port = -1;
  std::atomic<bool> started{false};
  std::atomic<bool> draining{false};
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> arriving{0};  // scoring requests being parsed, not yet on a queue (BatcherOptions::arriving)
  std::atomic<uint64_t> next_request_id{1};
  std::once_flag stop_once;

  std::mutex generator_mutex;  // one completion at a time
  std::mutex router_mutex;             // routers are not promised thread-safe (RandomRouter keeps a stream)
  std::deque<double> recent_router_scores;  // for budgets; guarded by router_mutex

  Impl(ServerConfig cfg, std::vector<ServedGuard> served) : config(std::move(cfg)), guards(std::move(served)) {
    if (guards.empty()) fail("guard server: no guards to serve");
    if (config.max_inputs == 0) fail("guard server: max_inputs must be >= 1");
    for (size_t i = 0; i < guards.size(); ++i) {
      if (!guards[i].guard) fail("guard server: guard '{}' is not loaded", guards[i].name);
      if (guards[i].name.empty()) fail("guard server: a served guard has no name");
      if (!guard_index.emplace(guards[i].name, i).second) fail("guard server: guard '{}' is served twice", guards[i].name);
    }
    auto lookup = [&](const std::string& name, const char* what) {
      auto it = guard_index.find(name);
      if (it == guard_index.end()) fail("guard server: {} '{}' is not among the served guards", what, name);
      return it->second;
    };
    small = config.small_model.empty() ? 0 : lookup(config.small_model, "small model");
    if (!config.large_model.empty()) large = lookup(config.large_model, "large model");
    default_model = config.default_model.empty() ? small : lookup(config.default_model, "default model");
    if (config.default_policy != RoutingPolicy::kSmall && !large)
      fail("guard server: default policy '{}' needs a large model", policy_name(config.default_policy));
    if (config.default_policy == RoutingPolicy::kSafeRoute && !config.router)
      fail("guard server: default policy 'saferoute' needs a router");
    if (config.generator && !config.generator_tokenizer) fail("guard server: the generator needs its tokenizer");
    if (config.router) {
      if (!large) fail("guard server: a router needs a large model to route to");
      if (config.router->needs_features() && guards[small].guard->feature_dim() <= 0)
        fail("guard server: router '{}' needs features but small guard '{}' gives none", config.router->name(),
             guards[small].name);
    }

    describe_metrics();
    // One batcher per distinct guard object: a guard is scored by one thread at a time.
    std::map<guard::Guard*, size_t> first_for_guard;
    batchers.resize(guards.size());
    for (size_t i = 0; i < guards.size(); ++i) {
      BatcherOptions options;
      options.max_batch = config.max_batch;
      options.max_wait = config.max_wait;
      options.queue_capacity = config.queue_capacity;
      options.name = guards[i].name;
      if (config.adaptive_wait)
        options.arriving = [this] { return static_cast<size_t>(std::max<int64_t>(0, arriving.load())); };
      if (first_for_guard.count(guards[i].guard.get())) fail("guard server: one guard object is served under two names");
      first_for_guard[guards[i].guard.get()] = i;
      batchers[i] = std::make_unique<Batcher>(*guards[i].guard, options, &metrics);
      Batcher* batcher = batchers[i].get();
      metrics.gauge_callback("guardkit_queue_depth", {{"model", guards[i].name}},
                             [batcher] { return static_cast<double>(batcher->queue_depth()); });
    }
    metrics.gauge_callback("guardkit_in_flight_requests", {}, [this] { return static_cast<double>(in_flight.load()); });
    metrics.gauge_callback("guardkit_ready", {}, [this] { return started && !draining ? 1.0 : 0.0; });
    setup_routes();
  }

  void describe_metrics() {
    metrics.describe_counter("guardkit_http_requests_total", "HTTP requests by endpoint and status code.");
    metrics.describe_histogram("guardkit_http_request_duration_seconds", "HTTP request latency by endpoint.",
                               {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
    metrics.describe_histogram("guardkit_batch_size", "Conversations per guard forward pass.",
                               {1, 2, 4, 8, 16, 32, 64, 128, 256});
    metrics.describe_histogram("guardkit_queue_wait_seconds", "Time a conversation waited for its batch.",
                               {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5});
    metrics.describe_gauge("guardkit_queue_depth", "Conversations waiting for a batch, per guard.");
    metrics.describe_gauge("guardkit_in_flight_requests", "Requests being handled.");
    metrics.describe_gauge("guardkit_ready", "1 while the server accepts work, 0 while starting or draining.");
    metrics.describe_counter("guardkit_guard_decisions_total",
                             "Conversations judged, by the model that decided (small/large: the routing share).");
    metrics.describe_counter("guardkit_flagged_total", "Conversations judged unsafe, by model.");
    metrics.describe_counter("guardkit_rejected_total", "Requests refused before scoring, by reason.");
    metrics.describe_counter("guardkit_upstream_errors_total", "Errors from upstream servers, by upstream and kind.");
    metrics.describe_histogram("guardkit_router_score", "SafeRoute router scores.",
                               {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1});
  }

  // ---------------------------------------------------------------------------------------------------- plumbing

  void write_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  }

  void write_error(httplib::Response& res, int status, const std::string& type, const std::string& code,
                   const std::string& message) {
    write_json(res, status, error_body(message, type, code));
  }

  void check_auth(const httplib::Request& req) {
    if (config.api_keys.empty()) return;
    std::string header = req.get_header_value("Authorization");
    if (header.empty())
      throw ApiError(401, "invalid_request_error", "missing_api_key",
                     "no API key: send the header 'Authorization: Bearer <key>'");
    const std::string prefix = "Bearer ";
    if (header.size() <= prefix.size() || header.compare(0, prefix.size(), prefix) != 0)
      throw ApiError(401, "invalid_request_error", "invalid_api_key",
                     "the Authorization header must be 'Bearer <key>'");
    std::string key = header.substr(prefix.size());
    bool ok = false;
    for (const auto& allowed : config.api_keys) ok |= same_secret(key, allowed);
    if (!ok) throw ApiError(401, "invalid_request_error", "invalid_api_key", "incorrect API key");
  }

  void log_access(const httplib::Request& req, const httplib::Response& res, const std::string& request_id,
                  double latency_ms, const RequestRecord& record) {
    if (!config.access_log) return;
    json line = {{"ts", utc_timestamp()},
                 {"request_id", request_id},
                 {"method", req.method},
                 {"path", req.path},
                 {"status", res.status},
                 {"latency_ms", std::round(latency_ms * 1000.0) / 1000.0},
                 {"remote_addr", req.remote_addr},
                 {"bytes_in", req.body.size()},
                 {"bytes_out", res.body.size()}};
    if (!record.model.empty()) line["model"] = record.model;
    if (record.inputs) line["inputs"] = record.inputs;
    if (record.inputs) line["flagged"] = record.flagged;
    if (!record.decided_by.empty()) line["decided_by"] = record.decided_by;
    if (!record.error_code.empty()) line["error_code"] = record.error_code;
    try {
      config.access_log(to_jsonl_line(line));
    } catch (const std::exception& e) {
      spdlog::warn("access log: {}", e.what());
    }
  }

  using Handler = std::function<void(const httplib::Request&, httplib::Response&, RequestRecord&)>;

  // Every endpoint runs through here: auth, error mapping, metrics, access log. Never lets an exception escape.
  void handle(const std::string& endpoint, bool needs_auth, const httplib::Request& req, httplib::Response& res,
              const Handler& handler) {
    auto start = Clock::now();
    in_flight.fetch_add(1);
    std::string request_id = req.get_header_value("X-Request-Id");
    if (request_id.empty() || request_id.size() > 128 || find_invalid_utf8(request_id) != std::string::npos)
      request_id = fmt::format("req-{:x}-{}", std::chrono::system_clock::now().time_since_epoch().count() & 0xffffff,
                               next_request_id.fetch_add(1));
    RequestRecord record;
    try {
      if (needs_auth) check_auth(req);
      handler(req, res, record);
    } catch (const ApiError& e) {
      record.error_code = e.code;
      if (e.status == 429) res.set_header("Retry-After", "1");
      write_error(res, e.status, e.type, e.code, e.what());
    } catch (const QueueFullError& e) {
      record.error_code = "queue_full";
      metrics.increment("guardkit_rejected_total", {{"reason", "queue_full"}});
      res.set_header("Retry-After", "1");
      write_error(res, 429, "rate_limit_error", "queue_full",
                  std::string("the server is overloaded, retry later: ") + e.what());
    } catch (const DeadlineExceededError& e) {
      record.error_code = "timeout";
      metrics.increment("guardkit_rejected_total", {{"reason", "timeout"}});
      write_error(res, 504, "timeout_error", "timeout", e.what());
    } catch (const ShuttingDownError& e) {
      record.error_code = "shutting_down";
      res.set_header("Retry-After", "1");
      write_error(res, 503, "server_error", "shutting_down", e.what());
    } catch (const std::exception& e) {
      record.error_code = "internal_error";
      spdlog::error("{} {}: {}", req.method, req.path, e.what());
      write_error(res, 500, "server_error", "internal_error", e.what());
    }
    res.set_header("X-Request-Id", request_id);
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    metrics.increment("guardkit_http_requests_total", {{"endpoint", endpoint}, {"status", std::to_string(res.status)}});
    metrics.observe("guardkit_http_request_duration_seconds", {{"endpoint", endpoint}}, seconds);
    log_access(req, res, request_id, seconds * 1000.0, record);
    in_flight.fetch_sub(1);
  }

  // Errors httplib answers itself (unknown path: 404, body over the limit: 413, unparsable HTTP: 400) get the same
  // JSON error body, a metric and an access-log line.
  httplib::Server::HandlerResponse on_error(const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // one of ours, already complete
    std::string code = "http_error", message = fmt::format("HTTP {}", res.status);
    if (res.status == 404) code = "not_found", message = fmt::format("no endpoint {} {}", req.method, req.path);
    if (res.status == 413)
      code = "request_too_large", message = fmt::format("the request body exceeds the limit of {} bytes",
                                                        config.max_body_bytes);
    if (res.status == 400) code = "bad_request", message = "the HTTP request could not be parsed";
    write_error(res, res.status, "invalid_request_error", code, message);
    metrics.increment("guardkit_http_requests_total",
                      {{"endpoint", endpoint_label(req.path)}, {"status", std::to_string(res.status)}});
    RequestRecord record;
    record.error_code = code;
    log_access(req, res, "-", 0.0, record);
    return httplib::Server::HandlerResponse::Handled;
  }

  size_t find_model(const std::optional<std::string>& name) {
    if (!name || is_openai_moderation_alias(*name)) return default_model;
    auto it = guard_index.find(*name);
    if (it == guard_index.end())
      throw ApiError(404, "invalid_request_error", "model_not_found",
                     fmt::format("the model '{}' does not exist (GET /v1/models lists the served models)", *name));
    return it->second;
  }

  // Submits to a guard's batcher and waits for every result until the request's deadline.
  std::vector<guard::GuardResult> score(size_t model, std::vector<guard::Conversation> conversations,
                                        guard::ScoreOptions options, Clock::time_point deadline) {
    auto futures = batchers[model]->submit(std::move(conversations), options, deadline);
    std::vector<guard::GuardResult> results;
    results.reserve(futures.size());
    for (auto& future : futures) {
      if (future.wait_until(deadline) != std::future_status::ready)
        throw DeadlineExceededError(fmt::format("the request was not answered within {} ms",
                                                config.request_timeout.count()));
      results.push_back(future.get());
    }
    return results;
  }

  std::string role_of(size_t model) const {
    if (model == small) return "small";
    if (large && model == *large) return "large";
    return guards[model].name;
  }

  void count_decisions(size_t model, const std::vector<guard::GuardResult>& results) {
    size_t flagged = 0;
    for (const auto& r : results) flagged += r.unsafe;
    metrics.increment("guardkit_guard_decisions_total", {{"decided_by", role_of(model)}},
                      static_cast<double>(results.size()));
    if (flagged) metrics.increment("guardkit_flagged_total", {{"model", guards[model].name}}, static_cast<double>(flagged));
  }

  // ---------------------------------------------------------------------------------------------------- endpoints

  // Counts a scoring request as arriving from the start of its handler until it is queued (or fails before).
  struct Arrival {
    std::atomic<int64_t>& count;
    bool done = false;
    explicit Arrival(std::atomic<int64_t>& c) : count(c) { count.fetch_add(1); }
    void queued() {
      if (!done) count.fetch_sub(1), done = true;
    }
    ~Arrival() { queued(); }
  };

  void moderations(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    Arrival arrival(arriving);
    auto deadline = Clock::now() + config.request_timeout;
    json body = parse_json_object(req.body);
    ModerationRequest request = parse_moderation_request(body, config.max_inputs);
    size_t model = find_model(request.model);
    record.model = guards[model].name;
    record.inputs = request.inputs.size();

    std::vector<guard::Conversation> conversations;
    for (auto& input : request.inputs) conversations.push_back(guard::Conversation::from_prompt(std::move(input)));
    guard::ScoreOptions options;
    options.want_categories = true;
    arrival.queued();  // before submit, so the submit's wake-up sees this request as no longer arriving
    std::vector<guard::GuardResult> results = score(model, std::move(conversations), options, deadline);
    count_decisions(model, results);

    json out_results = json::array();
    for (const auto& r : results) {
      json categories = json::object(), scores = json::object(), applied = json::object();
      for (auto key : openai_category_keys()) {
        categories[std::string(key)] = false;
        scores[std::string(key)] = 0.0;
        applied[std::string(key)] = json::array({"text"});
      }
      if (r.unsafe)
        for (const auto& code : r.categories)
          for (auto key : openai_keys_for(code)) {
            categories[std::string(key)] = true;
            scores[std::string(key)] = r.p_unsafe;
          }
      record.flagged += r.unsafe;
      out_results.push_back({{"flagged", r.unsafe},
                             {"categories", categories},
                             {"category_scores", scores},
                             {"category_applied_input_types", applied},
                             // guardkit extensions: the guard's own view.
                             {"unsafe_score", r.p_unsafe},
                             {"llama_guard_categories", r.categories}});
    }
    write_json(res, 200,
               {{"id", fmt::format("modr-{}", next_request_id.fetch_add(1))},
                {"model", guards[model].name},
                {"results", out_results}});
  }

  json guard_response(size_t model, const guard::GuardResult& r, const std::string& policy, Clock::time_point start) {
    json openai_keys = json::array();
    for (const auto& code : r.categories)
      for (auto key : openai_keys_for(code))
        if (std::find(openai_keys.begin(), openai_keys.end(), std::string(key)) == openai_keys.end())
          openai_keys.push_back(std::string(key));
    double latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    json out = {{"id", fmt::format("guard-{}", next_request_id.fetch_add(1))},
                {"unsafe", r.unsafe},
                {"score", r.p_unsafe},
                {"threshold", guards[model].guard->threshold()},
                {"categories", r.categories},
                {"openai_categories", openai_keys},
                {"decided_by", role_of(model)},
                {"model", guards[model].name},
                {"policy", policy},
                {"router_score", nullptr},
                {"tokens", r.tokens},
                {"latency_ms", latency_ms}};
    if (r.router_score) out["router_score"] = *r.router_score;
    return out;
  }

  // ε for one saferoute request: explicit, from a budget over the recent router scores, configured, or default.
  std::pair<double, std::string> route_epsilon(const GuardRequest& request) {
    if (request.epsilon) return {*request.epsilon, "request"};
    std::lock_guard lock(router_mutex);
    if (request.budget) {
      if (recent_router_scores.size() >= config.budget_min_scores) {
        std::vector<double> window(recent_router_scores.begin(), recent_router_scores.end());
        return {route::threshold_for_share(window, *request.budget), "budget"};
      }
      // Too few scores seen to turn a budget into ε: fall through to the default, and say so.
      double eps = config.route_threshold.value_or(config.router->default_threshold());
      return {eps, "default (budget needs more traffic)"};
    }
    return {config.route_threshold.value_or(config.router->default_threshold()),
            config.route_threshold ? "server" : "router default"};
  }

  // SafeRoute per request: the small guard (batched, with features), the router, and the large guard (batched) only
  // when the router score exceeds ε.
  void saferoute(const GuardRequest& request, Clock::time_point start, Clock::time_point deadline, Arrival& arrival,
                 httplib::Response& res, RequestRecord& record) {
    route::Router& router = *config.router;
    guard::ScoreOptions small_options;
    small_options.want_features = router.needs_features();
    small_options.want_categories = request.categories;
    record.model = guards[small].name;
    arrival.queued();
    guard::GuardResult small_result = score(small, {request.conversation}, small_options, deadline).front();

    std::vector<float> p_small = {static_cast<float>(small_result.p_unsafe)};
    route::RouteBatch batch;
    batch.n = 1;
    if (router.needs_features()) {
      batch.dim = static_cast<int64_t>(small_result.feature.size());
      batch.features = small_result.feature.data();
    }
    batch.p_small = p_small.data();
    auto [epsilon, epsilon_source] = route_epsilon(request);
    double router_score;
    {
      std::lock_guard lock(router_mutex);
      router_score = router.scores(batch).at(0);
      recent_router_scores.push_back(router_score);
      while (recent_router_scores.size() > config.budget_window) recent_router_scores.pop_front();
    }
    metrics.observe("guardkit_router_score", {}, router_score);

    size_t decided = small;
    guard::GuardResult result = std::move(small_result);
    if (router_score > epsilon) {
      guard::ScoreOptions large_options;
      large_options.want_categories = request.categories;
      guard::GuardResult large_result = score(*large, {request.conversation}, large_options, deadline).front();
      large_result.tokens += result.tokens;
      large_result.flops += result.flops;
      result = std::move(large_result);
      decided = *large;
    }
    result.router_score = router_score;
    count_decisions(decided, {result});
    record.model = guards[decided].name;
    record.flagged = result.unsafe;
    record.decided_by = role_of(decided);
    json out = guard_response(decided, result, "saferoute", start);
    out["epsilon"] = epsilon;
    out["epsilon_source"] = epsilon_source;
    out["router"] = router.name();
    write_json(res, 200, out);
  }

  void guard_endpoint(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    Arrival arrival(arriving);
    auto start = Clock::now();
    auto deadline = start + config.request_timeout;
    json body = parse_json_object(req.body);
    GuardRequest request = parse_guard_request(body);
    record.inputs = 1;

    size_t model;
    std::string policy;
    if (request.model) {
      if (request.policy)
        bad_request("invalid_request", "send 'model' (score with that guard) or 'policy' (route), not both");
      model = find_model(request.model);
      policy = "model";
    } else {
      RoutingPolicy p = request.policy.value_or(config.default_policy);
      policy = policy_name(p);
      if (p == RoutingPolicy::kSafeRoute) {
        if (!config.router)
          throw ApiError(400, "invalid_request_error", "policy_unavailable",
                         "policy 'saferoute' needs a router; this server was started without one (--router)");
        saferoute(request, start, deadline, arrival, res, record);
        return;
      }
      if (p == RoutingPolicy::kLarge && !large)
        throw ApiError(400, "invalid_request_error", "policy_unavailable",
                       "policy 'large' needs a large guard; this server serves none (--large)");
      model = p == RoutingPolicy::kLarge ? *large : small;
    }
    record.model = guards[model].name;
    guard::ScoreOptions options;
    options.want_categories = request.categories;
    arrival.queued();
    std::vector<guard::GuardResult> results = score(model, {request.conversation}, options, deadline);
    count_decisions(model, results);
    const guard::GuardResult& r = results.front();
    record.flagged = r.unsafe;
    record.decided_by = role_of(model);
    write_json(res, 200, guard_response(model, r, policy, start));
  }

  // OpenAI legacy completions: {"prompt": str, "max_tokens"?, "temperature"? (0 = greedy), "top_p"?, "seed"?,
  // "logprobs"? (0..20 top alternatives per token), "model"?}. Logprobs come from one teacher-forced forward over
  // prompt + completion (log-softmax of the raw logits at each generated position).
  void completions(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    json body = parse_json_object(req.body);
    if (!config.generator)
      throw ApiError(404, "invalid_request_error", "model_not_found", "this server has no completion model");
    if (auto model = body.find("model"); model != body.end() && !model->is_null()) {
      if (!model->is_string()) bad_request("invalid_type", "'model' must be a string");
      if (*model != config.generator_name)
        throw ApiError(404, "invalid_request_error", "model_not_found",
                       fmt::format("the model '{}' does not exist; completions are served by '{}'",
                                   model->get<std::string>(), config.generator_name));
    }
    record.model = config.generator_name;
    auto prompt_it = body.find("prompt");
    if (prompt_it == body.end() || prompt_it->is_null()) bad_request("missing_input", "'prompt' is required");
    json prompt_value = *prompt_it;
    if (prompt_value.is_array()) {
      if (prompt_value.size() != 1 || !prompt_value[0].is_string())
        bad_request("invalid_type", "'prompt' must be a string (or a list of exactly one string)");
      prompt_value = prompt_value[0];
    }
    if (!prompt_value.is_string()) bad_request("invalid_type", "'prompt' must be a string");
    std::string prompt = prompt_value.get<std::string>();
    if (prompt.empty()) bad_request("empty_input", "'prompt' is empty");
    auto integer = [&](const char* field, int64_t fallback, int64_t low, int64_t high) {
      auto it = body.find(field);
      if (it == body.end() || it->is_null()) return fallback;
      if (!it->is_number_integer()) bad_request("invalid_type", fmt::format("'{}' must be an integer", field));
      int64_t v = it->get<int64_t>();
      if (v < low || v > high) bad_request("invalid_value", fmt::format("'{}' must be in [{}, {}], got {}", field, low, high, v));
      return v;
    };
    auto number = [&](const char* field, double fallback, double low, double high) {
      auto it = body.find(field);
      if (it == body.end() || it->is_null()) return fallback;
      if (!it->is_number()) bad_request("invalid_type", fmt::format("'{}' must be a number", field));
      double v = it->get<double>();
      if (!std::isfinite(v) || v < low || v > high)
        bad_request("invalid_value", fmt::format("'{}' must be in [{}, {}], got {}", field, low, high, v));
      return v;
    };
    models::GenerationOptions options;
    options.max_new_tokens = integer("max_tokens", 16, 1, config.max_completion_tokens);
    const double temperature = number("temperature", 1.0, 0.0, 2.0);
    options.do_sample = temperature > 0.0;
    if (options.do_sample) options.temperature = temperature;
    options.top_p = number("top_p", 1.0, 1e-6, 1.0);
    options.seed = static_cast<uint64_t>(integer("seed", 0, 0, std::numeric_limits<int64_t>::max()));
    const int64_t top_logprobs = integer("logprobs", -1, 0, 20);  // -1: not asked
    if (body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>())
      bad_request("unsupported", "streaming completions are not supported");

    const text::Tokenizer& tokenizer = *config.generator_tokenizer;
    text::Encoding encoding = tokenizer.encode_for_model(prompt);
    std::vector<int64_t> prompt_ids(encoding.ids.begin(), encoding.ids.end());
    if (prompt_ids.empty()) bad_request("empty_input", "'prompt' encodes to no tokens");
    if (auto pad = tokenizer.pad_id()) options.pad_id = *pad;
    record.inputs = 1;

    std::lock_guard lock(generator_mutex);
    models::GenerationResult generated = models::generate(*config.generator, {prompt_ids}, options);
    const std::vector<int64_t>& new_ids = generated.new_ids.at(0);
    std::vector<int32_t> new_ids32(new_ids.begin(), new_ids.end());
    json choice = {{"text", tokenizer.decode(new_ids32)},
                   {"index", 0},
                   {"logprobs", nullptr},
                   {"finish_reason", generated.finish_reasons.at(0)}};
    if (top_logprobs >= 0 && !new_ids.empty()) {
      std::vector<int64_t> all = prompt_ids;
      all.insert(all.end(), new_ids.begin(), new_ids.end() - 1);  // position p predicts token p + 1
      models::ForwardOptions forward_options;
      forward_options.logits = models::LogitsMode::All;
      at::NoGradGuard no_grad;
      at::Tensor logits = config.generator->forward(all, nullptr, forward_options).logits;  // [1, T, V]
      at::Tensor logprobs = at::log_softmax(logits[0].slice(0, static_cast<int64_t>(prompt_ids.size()) - 1), -1);
      json tokens = json::array(), token_logprobs = json::array(), tops = json::array(), offsets = json::array();
      size_t offset = prompt.size();
      for (size_t k = 0; k < new_ids.size(); ++k) {
        at::Tensor row = logprobs[static_cast<int64_t>(k)];
        std::string token = tokenizer.decode({static_cast<int32_t>(new_ids[k])});
        tokens.push_back(token);
        token_logprobs.push_back(row[new_ids[k]].item<double>());
        offsets.push_back(offset);
        offset += token.size();
        json top = json::object();
        if (top_logprobs > 0) {
          auto [values, indices] = row.topk(top_logprobs);
          for (int64_t j = 0; j < top_logprobs; ++j)
            top[tokenizer.decode({static_cast<int32_t>(indices[j].item<int64_t>())})] = values[j].item<double>();
        }
        tops.push_back(top);
      }
      choice["logprobs"] = {{"tokens", tokens},
                            {"token_logprobs", token_logprobs},
                            {"top_logprobs", tops},
                            {"text_offset", offsets}};
    }
    const int64_t completion_tokens = static_cast<int64_t>(new_ids.size());
    write_json(res, 200,
               {{"id", fmt::format("cmpl-{}", next_request_id.fetch_add(1))},
                {"object", "text_completion"},
                {"created", std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch()).count()},
                {"model", config.generator_name},
                {"choices", json::array({choice})},
                {"usage",
                 {{"prompt_tokens", prompt_ids.size()},
                  {"completion_tokens", completion_tokens},
                  {"total_tokens", static_cast<int64_t>(prompt_ids.size()) + completion_tokens}}}});
  }

  [[noreturn]] void upstream_failure(int status, const std::string& kind, const std::string& message) {
    metrics.increment("guardkit_upstream_errors_total", {{"upstream", "chat"}, {"kind", kind}});
    throw ApiError(status, "upstream_error", "upstream_" + kind, message);
  }

  json blocked_completion(const std::string& model, const std::string& stage, double score) {
    return {{"id", fmt::format("chatcmpl-{}", next_request_id.fetch_add(1))},
            {"object", "chat.completion"},
            {"created", std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count()},
            {"model", model},
            {"choices", json::array({{{"index", 0},
                                      {"message", {{"role", "assistant"}, {"content", config.refusal_text}}},
                                      {"finish_reason", "content_filter"}}})},
            {"guardkit", {{"blocked", stage}, {"score", score}}}};
  }

  // The guarded proxy (non-streaming): input check, BiasDefense injection, upstream call, output check.
  void chat_proxy(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    Arrival arrival(arriving);
    auto deadline = Clock::now() + config.request_timeout;
    if (config.upstream_url.empty())
      throw ApiError(404, "invalid_request_error", "model_not_found",
                     "this server proxies no chat model (start it with --upstream)");
    json body = parse_json_object(req.body);
    if (body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>())
      bad_request("unsupported", "streamed chat completions are not supported by the guarded proxy yet");
    auto messages = body.find("messages");
    if (messages == body.end() || !messages->is_array() || messages->empty())
      bad_request("missing_input", "'messages' must be a non-empty list");
    // The guard judges the user/assistant turns (system text is the operator's, not the user's).
    json judged = json::array();
    for (const auto& m : *messages)
      if (m.is_object() && m.contains("role") && (m["role"] == "user" || m["role"] == "assistant")) judged.push_back(m);
    GuardRequest check = parse_guard_request(json{{"messages", judged}});
    const std::string model_name = body.value("model", std::string("upstream"));
    record.model = model_name;
    record.inputs = 1;

    arrival.queued();
    guard::GuardResult input = score(small, {check.conversation}, {}, deadline).front();
    count_decisions(small, {input});
    if (input.unsafe) {
      record.flagged = 1;
      write_json(res, 200, blocked_completion(model_name, "input", input.p_unsafe));
      return;
    }
    if (!config.defense_text.empty())
      messages->insert(messages->begin(), json{{"role", "system"}, {"content", config.defense_text}});

    httplib::Client upstream(config.upstream_url);
    upstream.set_connection_timeout(2, 0);
    auto timeout_us = std::chrono::duration_cast<std::chrono::microseconds>(config.upstream_timeout).count();
    upstream.set_read_timeout(timeout_us / 1000000, timeout_us % 1000000);
    upstream.set_tcp_nodelay(true);
    httplib::Headers headers;
    if (!config.upstream_api_key.empty()) headers.emplace("Authorization", "Bearer " + config.upstream_api_key);
    auto answer = upstream.Post("/v1/chat/completions", headers, body.dump(), "application/json");
    if (!answer) {
      if (answer.error() == httplib::Error::Read)
        upstream_failure(504, "timeout", fmt::format("the upstream did not answer within {} ms",
                                                     config.upstream_timeout.count()));
      upstream_failure(502, "unavailable",
                       fmt::format("the upstream is unreachable ({})", httplib::to_string(answer.error())));
    }
    if (answer->status >= 500)
      upstream_failure(502, "status", fmt::format("the upstream answered HTTP {}", answer->status));
    json reply = json::parse(answer->body, nullptr, false);
    if (reply.is_discarded() || !reply.is_object())
      upstream_failure(502, "malformed", "the upstream answer is not a JSON object");
    if (answer->status != 200) {  // the upstream's own 4xx: passed through
      write_json(res, answer->status, reply);
      return;
    }
    if (!reply.contains("choices") || !reply["choices"].is_array())
      upstream_failure(502, "malformed", "the upstream answer has no 'choices'");

    // Output check: each returned message, judged as the response to the conversation.
    json output_scores = json::array();
    for (auto& choice : reply["choices"]) {
      if (!choice.contains("message") || !choice["message"].contains("content") ||
          !choice["message"]["content"].is_string())
        continue;
      guard::Conversation judged_reply = check.conversation;
      judged_reply.messages.push_back({"assistant", choice["message"]["content"].get<std::string>()});
      guard::GuardResult output = score(small, {judged_reply}, {}, deadline).front();
      count_decisions(small, {output});
      output_scores.push_back(output.p_unsafe);
      if (output.unsafe) {
        record.flagged = 1;
        choice["message"]["content"] = config.refusal_text;
        choice["finish_reason"] = "content_filter";
      }
    }
    reply["guardkit"] = {{"input_score", input.p_unsafe}, {"output_scores", output_scores}};
    write_json(res, 200, reply);
  }

  void models(const httplib::Request&, httplib::Response& res, RequestRecord&) {
    json data = json::array();
    for (size_t i = 0; i < guards.size(); ++i)
      data.push_back({{"id", guards[i].name},
                      {"object", "model"},
                      {"owned_by", "guardkit"},
                      {"role", role_of(i)},
                      {"threshold", guards[i].guard->threshold()}});
    if (config.generator)
      data.push_back({{"id", config.generator_name}, {"object", "model"}, {"owned_by", "guardkit"}, {"role", "generator"}});
    write_json(res, 200, {{"object", "list"}, {"data", data}});
  }

  void setup_routes() {
    http.new_task_queue = [threads = config.http_threads] { return new httplib::ThreadPool(threads); };
    http.set_payload_max_length(config.max_body_bytes);
    // Small JSON answers on keep-alive connections: without TCP_NODELAY, Nagle + delayed ACKs add ~40 ms each.
    http.set_tcp_nodelay(true);
    http.set_keep_alive_timeout(config.keep_alive_seconds);
    http.set_read_timeout(10, 0);
    http.set_write_timeout(10, 0);
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) { return on_error(req, res); }));
    http.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
      std::string message = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        message = e.what();
      } catch (...) {
      }
      write_error(res, 500, "server_error", "internal_error", message);
    });

    auto route = [this](const std::string& endpoint, bool needs_auth, Handler handler) {
      return [this, endpoint, needs_auth, handler](const httplib::Request& req, httplib::Response& res) {
        handle(endpoint, needs_auth, req, res, handler);
      };
    };
    using namespace std::placeholders;
    http.Post("/v1/moderations", route("/v1/moderations", true, [this](auto& q, auto& s, auto& r) { moderations(q, s, r); }));
    http.Post("/v1/guard", route("/v1/guard", true, [this](auto& q, auto& s, auto& r) { guard_endpoint(q, s, r); }));
    http.Post("/v1/completions",
              route("/v1/completions", true, [this](auto& q, auto& s, auto& r) { completions(q, s, r); }));
    http.Post("/v1/chat/completions",
              route("/v1/chat/completions", true, [this](auto& q, auto& s, auto& r) { chat_proxy(q, s, r); }));
    http.Get("/v1/models", route("/v1/models", true, [this](auto& q, auto& s, auto& r) { models(q, s, r); }));
    http.Get("/healthz", route("/healthz", false, [this](auto&, auto& s, auto&) {
               write_json(s, 200, {{"status", "ok"}});
             }));
    http.Get("/readyz", route("/readyz", false, [this](auto&, auto& s, auto&) {
               bool ok = started && !draining;
               write_json(s, ok ? 200 : 503, {{"status", ok ? "ready" : draining ? "draining" : "starting"}});
             }));
    http.Get("/metrics", route("/metrics", false, [this](auto&, auto& s, auto&) {
               s.status = 200;
               s.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
             }));
  }

  int start() {
    if (started) return bound_port;
    if (config.port == 0) {
      bound_port = http.bind_to_any_port(config.host);
    } else {
      bound_port = http.bind_to_port(config.host, config.port) ? config.port : -1;
    }
    if (bound_port <= 0) fail("guard server: cannot listen on {}:{}", config.host, config.port);
    listener = std::thread([this] { http.listen_after_bind(); });
    // stop() only reaches a server that is running: wait until the accept loop is up.
    for (int i = 0; i < 5000 && !http.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    started = true;
    spdlog::info("guard server listening on http://{}:{} ({} guards, max batch {}, max wait {} us)", config.host,
                 bound_port, guards.size(), config.max_batch, config.max_wait.count());
    return bound_port;
  }

  void stop() {
    std::call_once(stop_once, [this] {
      draining = true;
      for (auto& batcher : batchers) batcher->flush_now();
      if (listener.joinable()) {
        // httplib closes the listening socket, lets every connection finish the request it is on, and joins its
        // worker threads; the batchers are still running, so those requests get their results.
        http.stop();
        listener.join();
      }
      for (auto& batcher : batchers) batcher->shutdown();
      spdlog::info("guard server stopped");
    });
  }
};

GuardServer::GuardServer(ServerConfig config, std::vector<ServedGuard> guards)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(guards))) {}

GuardServer::~GuardServer() { stop(); }

int GuardServer::start() { return impl_->start(); }
void GuardServer::stop() { impl_->stop(); }
int GuardServer::port() const { return impl_->bound_port; }
bool GuardServer::ready() const { return impl_->started && !impl_->draining; }
MetricsRegistry& GuardServer::metrics() { return impl_->metrics; }

}  // namespace guardkit::serve
