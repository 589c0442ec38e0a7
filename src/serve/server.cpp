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
#include "route/routed_guard.h"
#include "route/router.h"
#include "route/threshold.h"
#include "serve/batcher.h"
#include "serve/categories.h"
#include "serve/fleet_metrics.h"
#include "guard/remote_guard.h"
#include "serve/generator_api.h"
#include "serve/metrics.h"
#include "serve/upstream_stream.h"
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
                                             "/v1/chat/completions", "/v1/router/window",
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
    for (size_t i = 0; i < guards.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (guards[i].guard == guards[j].guard) fail("guard server: one guard object is served under two names");
    // One batcher per distinct guard object: a guard is scored by one thread at a time. A routed guard (models-file
    // kind "routed") calls guards that may also be served by name: then every batcher takes one shared lock.
    std::shared_ptr<std::mutex> shared_parts;
    for (const auto& g : guards)
      if (dynamic_cast<route::RoutedGuard*>(g.guard.get()) && guards.size() > 1) shared_parts = std::make_shared<std::mutex>();
    batchers.resize(guards.size());
    for (size_t i = 0; i < guards.size(); ++i) {
      BatcherOptions options;
      options.max_batch = config.max_batch;
      options.workers = config.batch_workers;
      options.max_wait = config.max_wait;
      options.queue_capacity = config.queue_capacity;
      options.name = guards[i].name;
      options.score_mutex = shared_parts;
      if (config.adaptive_wait)
        options.arriving = [this] { return static_cast<size_t>(std::max<int64_t>(0, arriving.load())); };
      batchers[i] = std::make_unique<Batcher>(*guards[i].guard, options, &metrics);
      Batcher* batcher = batchers[i].get();
      metrics.gauge_callback("guardkit_queue_depth", {{"model", guards[i].name}},
                             [batcher] { return static_cast<double>(batcher->queue_depth()); });
    }
    for (const auto& g : guards)
      if (auto* remote = dynamic_cast<guard::RemoteGuard*>(g.guard.get()))
        add_upstream_endpoint_metrics(metrics, g.name, remote->client());
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
    metrics.describe_counter("guardkit_guard_failures_total",
                             "Guarded-proxy checks that got no verdict (guard error or timeout), by the policy applied.");
    metrics.describe_counter("guardkit_stream_blocked_total", "Streamed answers cut by an output check.");
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
                             // guardkit extensions: the guard's own view, and who decided (a routed model names
                             // its small or large guard; a remote guard that failed says fail_closed/fail_open).
                             {"unsafe_score", r.p_unsafe},
                             {"llama_guard_categories", r.categories},
                             {"decided_by", r.decided_by.empty() ? guards[model].name : r.decided_by},
                             {"router_score", r.router_score ? json(*r.router_score) : json(nullptr)}});
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
    // A routed model served by name (models-file kind "routed") decided inside: report the guard it picked.
    if (dynamic_cast<route::RoutedGuard*>(guards[model].guard.get()) && !r.decided_by.empty())
      out["decided_by"] = r.decided_by;
    return out;
  }

  // ε for one saferoute request: explicit, from a budget over the recent router scores, configured, or default.
  std::pair<double, std::string> route_epsilon(const GuardRequest& request) {
    if (request.epsilon) return {*request.epsilon, "request"};
    std::lock_guard lock(router_mutex);
    if (request.budget && !config.budget_reference.empty())
      return {route::threshold_for_share(config.budget_reference, *request.budget), "budget (shared window)"};
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

  GeneratorLimits generator_limits() const {
    GeneratorLimits limits;
    limits.max_tokens = config.max_completion_tokens;
    limits.max_top_logprobs = config.max_top_logprobs;
    limits.max_choices = config.max_choices;
    return limits;
  }

  // The request's "model" must name the generator when given.
  void check_generator_model(const json& body, RequestRecord& record) {
    if (auto model = body.find("model"); model != body.end() && !model->is_null()) {
      if (!model->is_string()) bad_request("invalid_type", "'model' must be a string");
      if (*model != config.generator_name)
        throw ApiError(404, "invalid_request_error", "model_not_found",
                       fmt::format("the model '{}' does not exist; completions are served by '{}'",
                                   model->get<std::string>(), config.generator_name));
    }
    record.model = config.generator_name;
    record.inputs = 1;
  }

  // A streamed generation: SSE chunks written as tokens are generated (one generation at a time, as unstreamed).
  void stream_generation(std::vector<int64_t> prompt_ids, CompletionSettings settings, bool chat, std::string id,
                         httplib::Response& res) {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [this, prompt_ids = std::move(prompt_ids), settings = std::move(settings), chat,
                              id = std::move(id)](size_t, httplib::DataSink& sink) {
          auto write = [&sink](const std::string& text) { return sink.write(text.data(), text.size()); };
          try {
            std::lock_guard lock(generator_mutex);
            stream_completion(*config.generator, *config.generator_tokenizer, prompt_ids, settings, chat,
                              config.generator_name, id, write);
          } catch (const std::exception& e) {  // headers are out: the error goes in the stream
            spdlog::error("streamed generation: {}", e.what());
            write("data: " + error_body(e.what(), "server_error", "internal_error").dump() + "\n\ndata: [DONE]\n\n");
          }
          sink.done();
          return true;
        });
  }

  // OpenAI legacy completions from the local generator (serve/generator_api.h has the fields).
  void completions(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    json body = parse_json_object(req.body);
    if (!config.generator)
      throw ApiError(404, "invalid_request_error", "model_not_found", "this server has no completion model");
    check_generator_model(body, record);
    const text::Tokenizer& tokenizer = *config.generator_tokenizer;
    std::vector<int64_t> prompt_ids = completion_prompt_ids(body, tokenizer, config.generator->config().vocab_size);
    CompletionSettings settings = parse_completion_settings(body, /*chat=*/false, generator_limits());
    const size_t prompt_chars = body["prompt"].is_string() ? body["prompt"].get<std::string>().size() : 0;
    if (settings.stream)
      return stream_generation(std::move(prompt_ids), std::move(settings), /*chat=*/false,
                               fmt::format("cmpl-{}", next_request_id.fetch_add(1)), res);
    GeneratedCompletion completion;
    {
      std::lock_guard lock(generator_mutex);
      completion = run_completion(*config.generator, tokenizer, prompt_ids, settings);
    }
    write_json(res, 200,
               completion_response(completion, settings, tokenizer, config.generator_name,
                                   fmt::format("cmpl-{}", next_request_id.fetch_add(1)), prompt_chars));
  }

  // OpenAI chat completions from the local generator (Llama 3 chat template).
  void local_chat(const json& body, httplib::Response& res, RequestRecord& record) {
    check_generator_model(body, record);
    const text::Tokenizer& tokenizer = *config.generator_tokenizer;
    std::vector<int64_t> prompt_ids = chat_prompt_ids(body, tokenizer);
    CompletionSettings settings = parse_completion_settings(body, /*chat=*/true, generator_limits());
    if (settings.stream)
      return stream_generation(std::move(prompt_ids), std::move(settings), /*chat=*/true,
                               fmt::format("chatcmpl-{}", next_request_id.fetch_add(1)), res);
    GeneratedCompletion completion;
    {
      std::lock_guard lock(generator_mutex);
      completion = run_completion(*config.generator, tokenizer, prompt_ids, settings);
    }
    write_json(res, 200, chat_response(completion, settings, tokenizer, config.generator_name,
                                       fmt::format("chatcmpl-{}", next_request_id.fetch_add(1))));
  }

  // /v1/chat/completions: the guarded proxy when an upstream is configured, else the local generator.
  void chat_completions(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    if (!config.upstream_url.empty()) return chat_proxy(req, res, record);
    json body = parse_json_object(req.body);
    if (!config.generator)
      throw ApiError(404, "invalid_request_error", "model_not_found",
                     "this server serves no chat model (start it with --generator or --upstream)");
    local_chat(body, res, record);
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

  // A guard verdict for the proxy, with the failure policy applied: when the check itself fails (the guard errs or
  // the check times out), fail closed counts the text as unsafe and fail open lets it through unchecked. Overload
  // (429) and shutdown (503) are not guard failures: they still answer the request.
  struct Verdict {
    bool unsafe = false;
    double score = 0.0;
    std::string error;  // set when no verdict could be made (the policy decided)
  };
  Verdict check_conversation(const guard::Conversation& conversation, Clock::time_point deadline) {
    try {
      guard::GuardResult r = score(small, {conversation}, {}, deadline).front();
      count_decisions(small, {r});
      return {r.unsafe, r.p_unsafe, ""};
    } catch (const QueueFullError&) {
      throw;
    } catch (const ShuttingDownError&) {
      throw;
    } catch (const std::exception& e) {
      const char* policy = config.fail_open ? "fail_open" : "fail_closed";
      metrics.increment("guardkit_guard_failures_total", {{"policy", policy}});
      spdlog::warn("guarded proxy: no verdict ({}); {}", e.what(), policy);
      return {!config.fail_open, config.fail_open ? 0.0 : 1.0, e.what()};
    }
  }

  json verdict_info(const std::string& stage, const Verdict& v) {
    json info = {{"blocked", stage}, {"score", v.score}};
    if (!v.error.empty()) info["guard_error"] = v.error;
    return info;
  }

  static std::string sse(const json& payload) {
    return "data: " + payload.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  }

  json stream_chunk(const std::string& id, int64_t created, const std::string& model, json delta, json finish_reason) {
    return {{"id", id},
            {"object", "chat.completion.chunk"},
            {"created", created},
            {"model", model},
            {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", finish_reason}}})}};
  }

  static int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  // The guarded proxy: input check, BiasDefense injection, upstream call, output check (streamed: in chunks, each
  // checked before it is released).
  void chat_proxy(const httplib::Request& req, httplib::Response& res, RequestRecord& record) {
    Arrival arrival(arriving);
    auto deadline = Clock::now() + config.request_timeout;
    json body = parse_json_object(req.body);
    const bool stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();
    if (stream && body.contains("n") && body["n"].is_number_integer() && body["n"].get<int64_t>() != 1)
      bad_request("unsupported", "streamed chat completions through the guarded proxy take n = 1");
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
    const Verdict input = check_conversation(check.conversation, deadline);
    if (input.unsafe) {
      record.flagged = 1;
      if (!input.error.empty()) record.error_code = "guard_failure";
      if (stream) {
        // The refusal in the streamed shape: one content chunk, the content_filter finish, [DONE].
        const std::string id = fmt::format("chatcmpl-{}", next_request_id.fetch_add(1));
        const int64_t created = unix_now();
        json last = stream_chunk(id, created, model_name, json::object(), "content_filter");
        last["guardkit"] = verdict_info("input", input);
        res.status = 200;
        res.set_content(sse(stream_chunk(id, created, model_name,
                                         {{"role", "assistant"}, {"content", config.refusal_text}}, nullptr)) +
                            sse(last) + "data: [DONE]\n\n",
                        "text/event-stream");
        return;
      }
      json blocked = blocked_completion(model_name, "input", input.score);
      blocked["guardkit"] = verdict_info("input", input);
      write_json(res, 200, blocked);
      return;
    }
    if (!config.defense_text.empty())
      messages->insert(messages->begin(), json{{"role", "system"}, {"content", config.defense_text}});
    if (stream) return stream_proxy(std::move(body), check.conversation, model_name, input, res);

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
    json guard_errors = json::array();
    for (auto& choice : reply["choices"]) {
      if (!choice.contains("message") || !choice["message"].contains("content") ||
          !choice["message"]["content"].is_string())
        continue;
      guard::Conversation judged_reply = check.conversation;
      judged_reply.messages.push_back({"assistant", choice["message"]["content"].get<std::string>()});
      const Verdict output = check_conversation(judged_reply, Clock::now() + config.request_timeout);
      output_scores.push_back(output.score);
      if (!output.error.empty()) guard_errors.push_back(output.error);
      if (output.unsafe) {
        record.flagged = 1;
        choice["message"]["content"] = config.refusal_text;
        choice["finish_reason"] = "content_filter";
      }
    }
    reply["guardkit"] = {{"input_score", input.score}, {"output_scores", output_scores}};
    if (!input.error.empty()) reply["guardkit"]["input_guard_error"] = input.error;
    if (!guard_errors.empty()) reply["guardkit"]["output_guard_errors"] = guard_errors;
    write_json(res, 200, reply);
  }

  // Streamed proxy: the upstream's SSE is read on a background thread (serve/upstream_stream.h). Failures before the
  // status line are plain JSON errors (502/504); after it, the client gets SSE in OpenAI's chunk shape, released only
  // after each chunk of text passed the guard. The guard judges the whole answer so far at every check (unsafe text
  // that spans two chunks is judged together).
  void stream_proxy(json body, guard::Conversation conversation, std::string model_name, Verdict input,
                    httplib::Response& res) {
    body["stream"] = true;
    auto upstream = std::make_shared<UpstreamStream>(config.upstream_url, config.upstream_api_key,
                                                     "/v1/chat/completions", body, config.upstream_timeout);
    UpstreamHead head = upstream->head();
    if (head.status == 0)
      upstream_failure(head.error_kind == "timeout" ? 504 : 502, head.error_kind.empty() ? "unavailable" : head.error_kind,
                       head.message);
    if (head.status >= 500)
      upstream_failure(502, "status", fmt::format("the upstream answered HTTP {}", head.status));
    if (head.status != 200) {
      json reply = json::parse(head.body, nullptr, false);
      if (reply.is_discarded() || !reply.is_object())
        upstream_failure(502, "malformed", fmt::format("the upstream answered HTTP {} without a JSON body", head.status));
      write_json(res, head.status, reply);  // the upstream's own 4xx: passed through
      return;
    }
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, upstream, conversation = std::move(conversation), model_name = std::move(model_name), input](
            size_t, httplib::DataSink& sink) {
          relay_stream(*upstream, conversation, model_name, input, sink);
          upstream->cancel();
          sink.done();
          return true;
        });
  }

  void relay_stream(UpstreamStream& upstream, const guard::Conversation& conversation, std::string model,
                    const Verdict& input, httplib::DataSink& sink) {
    std::string id = fmt::format("chatcmpl-{}", next_request_id.fetch_add(1));
    int64_t created = unix_now();
    std::string released, pending, finish;
    size_t pending_deltas = 0;
    int checks = 0;
    bool role_sent = false, client_gone = false;
    json usage;
    auto write = [&](const std::string& text) {
      if (!client_gone && !sink.write(text.data(), text.size())) client_gone = true;
      return !client_gone;
    };
    auto check = [&] {
      guard::Conversation judged = conversation;
      judged.messages.push_back({"assistant", released + pending});
      ++checks;
      return check_conversation(judged, Clock::now() + config.request_timeout);
    };
    auto release = [&] {
      if (pending.empty()) return !client_gone;
      json delta = {{"content", pending}};
      if (!role_sent) delta["role"] = "assistant", role_sent = true;
      released += pending;
      pending.clear();
      pending_deltas = 0;
      return write(sse(stream_chunk(id, created, model, std::move(delta), nullptr)));
    };
    auto block = [&](const Verdict& v) {
      metrics.increment("guardkit_stream_blocked_total", {});
      json last = stream_chunk(id, created, model, json::object(), "content_filter");
      last["guardkit"] = verdict_info("output", v);
      last["guardkit"]["released_chars"] = released.size();
      write(sse(last) + "data: [DONE]\n\n");
    };
    for (;;) {
      UpstreamEvent event = upstream.next();
      if (event.kind == UpstreamEvent::Kind::kDelta) {
        const json& chunk = event.chunk;
        if (chunk.contains("id") && chunk["id"].is_string()) id = chunk["id"].get<std::string>();
        if (chunk.contains("model") && chunk["model"].is_string()) model = chunk["model"].get<std::string>();
        if (chunk.contains("created") && chunk["created"].is_number_integer()) created = chunk["created"].get<int64_t>();
        if (chunk.contains("usage") && chunk["usage"].is_object()) usage = chunk["usage"];
        if (!event.finish_reason.empty()) finish = event.finish_reason;
        pending += event.content;
        if (!event.content.empty()) ++pending_deltas;
        const bool due = (config.stream_check_chars > 0 && pending.size() >= config.stream_check_chars) ||
                         (config.stream_check_deltas > 0 && pending_deltas >= config.stream_check_deltas);
        if (due) {
          const Verdict v = check();
          if (v.unsafe) return block(v);
          if (!release()) return;  // the client went away
        }
        continue;
      }
      if (event.kind == UpstreamEvent::Kind::kDone) {
        if (!pending.empty()) {  // the final check: the whole answer
          const Verdict v = check();
          if (v.unsafe) return block(v);
        }
        if (!release()) return;
        json last = stream_chunk(id, created, model, json::object(), finish.empty() ? "stop" : finish);
        if (!usage.is_null()) last["usage"] = usage;
        last["guardkit"] = {{"input_score", input.score}, {"output_checks", checks}};
        write(sse(last) + "data: [DONE]\n\n");
        return;
      }
      // The upstream failed mid-stream.
      if (event.error_kind == "cancelled") return;
      metrics.increment("guardkit_upstream_errors_total", {{"upstream", "chat"}, {"kind", event.error_kind}});
      if (config.fail_open && !pending.empty()) {
        // Fail open: what did arrive is still checked, then released.
        const Verdict v = check();
        if (v.unsafe) return block(v);
        if (!release()) return;
      }
      json error = error_body(event.message, "upstream_error", "upstream_" + event.error_kind);
      error["guardkit"] = {{"withheld_chars", pending.size()}, {"released_chars", released.size()}};
      write(sse(error) + "data: [DONE]\n\n");
      return;
    }
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
    http.set_keep_alive_max_count(static_cast<size_t>(std::max(1, config.keep_alive_max_requests)));
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
              route("/v1/chat/completions", true, [this](auto& q, auto& s, auto& r) { chat_completions(q, s, r); }));
    http.Get("/v1/models", route("/v1/models", true, [this](auto& q, auto& s, auto& r) { models(q, s, r); }));
    // This replica's budget window, for replicas that share it (serve --budget-reference URL).
    http.Get("/v1/router/window", route("/v1/router/window", true, [this](auto&, auto& s, auto&) {
               std::lock_guard lock(router_mutex);
               write_json(s, 200, {{"scores", std::vector<double>(recent_router_scores.begin(), recent_router_scores.end())}});
             }));
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
void GuardServer::drain() { impl_->draining = true; }
void GuardServer::set_budget_reference(std::vector<double> scores) {
  std::lock_guard lock(impl_->router_mutex);
  impl_->config.budget_reference = std::move(scores);
}
bool GuardServer::ready() const { return impl_->started && !impl_->draining; }
MetricsRegistry& GuardServer::metrics() { return impl_->metrics; }

}  // namespace guardkit::serve
