// `guardkit serve`: the OpenAI-compatible guard server (serve/server.h) over guards from the models file or model
// folders named directly. Runs until SIGINT/SIGTERM, then drains (/readyz 503 for --drain-seconds while still
// answering, so load balancers take the replica out) and stops gracefully (every accepted request is answered).
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iostream>
#include <mutex>
#include <pthread.h>
#include <thread>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "guard/registry.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/tokenizer.h"
#include "route/baselines.h"
#include "route/router.h"
#include "serve/budget_reference.h"
#include "serve/process.h"
#include "serve/server.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::cli {

namespace {

struct ServeOptions {
  std::string config;  // models file
  std::string small, large;
  std::vector<std::string> extra_models;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::vector<std::string> api_keys;
  std::string api_keys_file;
  std::string default_policy = "small";
  std::string generator;  // a Llama model folder for /v1/completions
  std::string generator_dtype;  // empty: the models file entry's dtype (fp32 for a folder)
  int64_t max_completion_tokens = 256;
  int64_t max_logprobs = 20;
  std::string upstream;         // guarded proxy target for /v1/chat/completions
  int64_t upstream_timeout_ms = 60000;
  std::string defense_file;     // BiasDefense text injected as a system message
  size_t stream_check_chars = 256;
  size_t stream_check_deltas = 0;
  bool fail_open = false;
  std::string router;  // a SafeRoute router folder, or a baseline name (entropy, small_only, large_only, random)
  double route_threshold = -1;  // < 0: the router's default ε
  size_t budget_window = 1024;
  std::string budget_reference;  // a feature cache, a scores JSON file or a URL shared by a fleet
  double budget_refresh_s = 30;
  double drain_seconds = 0;
  int max_batch = 16;
  int workers = 0;  // 0 = auto (see choose_workers_and_threads)
  double max_wait_ms = 2.0;
  size_t queue = 1024;
  int64_t timeout_ms = 30000;
  size_t max_body_bytes = 1 << 20;
  size_t max_inputs = 64;
  int http_threads = 64;
  std::string access_log = "-";
};

std::vector<std::string> read_keys_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot read API keys file {}", path);
  std::vector<std::string> keys;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty() && line[0] != '#') keys.push_back(line);
  }
  if (keys.empty()) fail("API keys file {} holds no key", path);
  return keys;
}

// The models file's optional top-level "generator": a configured model name or a Llama folder (relative to the file).
std::string models_file_generator(const std::string& explicit_path) {
  std::filesystem::path path = explicit_path;
  if (path.empty()) {
    if (const char* env = std::getenv("GUARDKIT_MODELS"); env && *env) path = env;
    else if (std::filesystem::is_regular_file("models.json")) path = "models.json";
    else return "";
  }
  nlohmann::json document = nlohmann::json::parse(read_file(path), nullptr, false);
  if (!document.is_object() || !document.contains("generator")) return "";
  const auto& generator = document["generator"];
  if (!generator.is_string() || generator.get<std::string>().empty())
    fail("{}: 'generator' must be a model name or a Llama model folder", path.string());
  const std::string value = generator.get<std::string>();
  const std::filesystem::path relative = path.parent_path() / value;
  if (std::filesystem::path(value).is_relative() && std::filesystem::is_directory(relative)) return relative.string();
  return value;
}

// Batch workers and libtorch threads when the user chose neither: one thread per worker and a worker per core (up to
// 8), because on small CPUs splitting a small guard's GEMMs across cores loses to scoring independent batches on
// each (bench_serve: 2 cores, bootstrap's small guard 1508 -> 3368 req/s at 16 clients; a DeBERTa-v3-xsmall shape
// 64 -> 108). A local Llama (guard or generator) keeps every core for each request's latency. With --threads T:
// cores / T workers. Returns the number of workers; sets libtorch's threads to 1 in the automatic case.
int choose_workers_and_threads(int requested, const GlobalOptions& global, bool has_local_llm) {
  if (requested > 0) return requested;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool threads_chosen = global.threads > 0 || (std::getenv("GUARDKIT_THREADS") && *std::getenv("GUARDKIT_THREADS"));
  if (!threads_chosen && !has_local_llm) {
    models::init_runtime(1);
    return std::min(cores, 8);
  }
  return std::max(1, cores / std::max(1, at::get_num_threads()));
}

// The key a replica sends when it fetches a shared budget window from another: $GUARDKIT_BUDGET_API_KEY, else its
// own first accepted key (a fleet usually shares them).
std::string budget_api_key(const serve::ServerConfig& config) {
  if (const char* key = std::getenv("GUARDKIT_BUDGET_API_KEY"); key && *key) return key;
  return config.api_keys.empty() ? "" : config.api_keys.front();
}

void run_serve(const ServeOptions& o, const GlobalOptions& global) {
  serve::ensure_passive_omp_wait();
  // Block SIGINT/SIGTERM before any thread starts, so every thread inherits the mask and this one takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  guard::ModelRegistry registry = guard::ModelRegistry::load_default(o.config);
  std::string small = o.small;
  if (small.empty()) {
    if (registry.specs().empty()) fail("serve: name the small guard (--small NAME|DIR) or give a models file (--config)");
    small = registry.specs().front().name;
  }
  std::vector<serve::ServedGuard> guards;
  bool has_local_llm = false;
  auto add = [&](const std::string& name_or_path) -> std::string {
    guard::ModelSpec spec = registry.resolve(name_or_path);
    for (const auto& g : guards)
      if (g.name == spec.name) return spec.name;
    spdlog::info("loading guard {} ({})", spec.name, guard::guard_kind_name(spec.kind));
    // A local Llama Guard (directly or as a routed guard's large model) wants every core on each request.
    if (spec.kind == guard::GuardKind::kLlamaGuard) has_local_llm = true;
    if (spec.kind == guard::GuardKind::kRouted && spec.options.contains("large") && spec.options["large"].is_string() &&
        registry.resolve(spec.options["large"].get<std::string>()).kind == guard::GuardKind::kLlamaGuard)
      has_local_llm = true;
    guards.push_back({spec.name, registry.guard(name_or_path)});
    return spec.name;
  };
  serve::ServerConfig config;
  config.small_model = add(small);
  if (!o.large.empty()) config.large_model = add(o.large);
  for (const auto& m : o.extra_models) add(m);

  config.host = o.host;
  config.port = o.port;
  config.api_keys = o.api_keys;
  if (!o.api_keys_file.empty())
    for (auto& k : read_keys_file(o.api_keys_file)) config.api_keys.push_back(k);
  if (const char* env = std::getenv("GUARDKIT_API_KEYS"); env && *env) {
    std::stringstream list(env);
    for (std::string key; std::getline(list, key, ',');)
      if (!key.empty()) config.api_keys.push_back(key);
  }
  if (o.default_policy == "small") config.default_policy = serve::RoutingPolicy::kSmall;
  else if (o.default_policy == "large") config.default_policy = serve::RoutingPolicy::kLarge;
  else if (o.default_policy == "saferoute") config.default_policy = serve::RoutingPolicy::kSafeRoute;
  else fail("serve: --default-policy must be small, large or saferoute, got '{}'", o.default_policy);
  if (!o.router.empty()) {
    if (std::filesystem::is_directory(o.router)) {
      config.router = std::make_shared<route::SafeRouteRouter>(route::SafeRouteRouter::load(o.router));
    } else if (o.router == "entropy" || o.router == "small_only" || o.router == "large_only" || o.router == "random") {
      config.router = route::make_baseline(o.router, route::FeatureCache{});
    } else {
      fail("serve: --router must be a SafeRoute router folder or one of entropy, small_only, large_only, random; got '{}'",
           o.router);
    }
    if (o.route_threshold >= 0) config.route_threshold = o.route_threshold;
    config.budget_window = o.budget_window;
    if (!o.budget_reference.empty()) {
      config.budget_reference = serve::load_budget_reference(o.budget_reference, *config.router, budget_api_key(config));
      spdlog::info("budgets over the shared window {} ({} scores)", o.budget_reference, config.budget_reference.size());
    }
  } else if (!o.budget_reference.empty()) {
    fail("serve: --budget-reference needs --router");
  }
  // The generator: --generator, else the models file's top-level "generator" (a name or a folder).
  std::string generator = o.generator;
  if (generator.empty()) generator = models_file_generator(o.config);
  if (!generator.empty()) {
    guard::ModelSpec spec = registry.resolve(generator);
    if (spec.kind != guard::GuardKind::kLlamaGuard)
      fail("serve: generator '{}' is a {} model; a generator must be a Llama checkpoint", generator,
           guard::guard_kind_name(spec.kind));
    const std::string dtype = o.generator_dtype.empty() ? spec.dtype : o.generator_dtype;
    spdlog::info("loading generator {} ({}, {})", spec.name, spec.path.string(), dtype);
    config.generator = models::LlamaModel::load(spec.path, models::parse_dtype(dtype), models::parse_device(spec.device));
    config.generator_tokenizer = text::load_tokenizer(spec.path);
    config.generator_name = spec.name;
    config.max_completion_tokens = o.max_completion_tokens;
    config.max_top_logprobs = o.max_logprobs;
  }
  if (!o.upstream.empty()) {
    config.upstream_url = o.upstream;
    config.upstream_timeout = std::chrono::milliseconds(o.upstream_timeout_ms);
    if (const char* key = std::getenv("GUARDKIT_UPSTREAM_API_KEY"); key && *key) config.upstream_api_key = key;
    if (!o.defense_file.empty()) config.defense_text = read_file(o.defense_file);
    config.stream_check_chars = o.stream_check_chars;
    config.stream_check_deltas = o.stream_check_deltas;
    config.fail_open = o.fail_open;
  }
  config.max_batch = o.max_batch;
  config.batch_workers = choose_workers_and_threads(o.workers, global, has_local_llm || config.generator != nullptr);
  spdlog::info("scoring: {} batch worker(s) per guard x {} libtorch thread(s)", config.batch_workers,
               at::get_num_threads());
  config.max_wait = std::chrono::microseconds(static_cast<int64_t>(o.max_wait_ms * 1000.0));
  config.queue_capacity = o.queue;
  config.request_timeout = std::chrono::milliseconds(o.timeout_ms);
  config.max_body_bytes = o.max_body_bytes;
  config.max_inputs = o.max_inputs;
  config.http_threads = o.http_threads;

  auto log_mutex = std::make_shared<std::mutex>();
  std::shared_ptr<std::ofstream> log_file;
  if (o.access_log == "-") {
    config.access_log = [log_mutex](const std::string& line) {
      std::lock_guard lock(*log_mutex);
      std::cout << line << '\n' << std::flush;
    };
  } else if (o.access_log != "off") {
    log_file = std::make_shared<std::ofstream>(o.access_log, std::ios::app);
    if (!*log_file) fail("serve: cannot open access log {}", o.access_log);
    config.access_log = [log_mutex, log_file](const std::string& line) {
      std::lock_guard lock(*log_mutex);
      *log_file << line << '\n' << std::flush;
    };
  }
  if (config.api_keys.empty() && o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1")
    spdlog::warn("serving on {} without API keys: anyone who can reach it can use it", o.host);

  serve::GuardServer server(config, guards);
  int port = server.start();
  fmt::print(stderr, "guardkit serve: http://{}:{} (small: {}{}); Ctrl-C stops gracefully\n", o.host, port,
             config.small_model, config.large_model.empty() ? "" : ", large: " + config.large_model);
  std::unique_ptr<serve::BudgetReferenceRefresher> refresher;
  if (serve::is_url(o.budget_reference))
    refresher = std::make_unique<serve::BudgetReferenceRefresher>(
        o.budget_reference, budget_api_key(config),
        std::chrono::milliseconds(static_cast<int64_t>(o.budget_refresh_s * 1000.0)), *config.router,
        [&server](std::vector<double> scores) { server.set_budget_reference(std::move(scores)); });
  int received = 0;
  sigwait(&signals, &received);
  server.drain();
  spdlog::info("signal {}: draining: /readyz answers 503{}", received,
               o.drain_seconds > 0 ? fmt::format("; still serving for {} s while load balancers take this replica out",
                                                 o.drain_seconds)
                                   : "");
  if (o.drain_seconds > 0) {
    // A second signal ends the wait early.
    const auto seconds = std::chrono::duration<double>(o.drain_seconds);
    const auto whole = std::chrono::duration_cast<std::chrono::seconds>(seconds);
    timespec wait{static_cast<time_t>(whole.count()),
                  static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(seconds - whole).count())};
    sigtimedwait(&signals, nullptr, &wait);
  }
  spdlog::info("closing the listener; answering the requests in flight");
  refresher.reset();
  server.stop();
}

void add_serve_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible guard server: /v1/moderations, /v1/guard, /metrics");
  cmd->add_option("--config,--models", options->config, "Models file (JSON); default $GUARDKIT_MODELS or ./models.json");
  cmd->add_option("--small", options->small, "Small guard: a configured name or a model folder (default: first configured)");
  cmd->add_option("--large", options->large, "Large guard for policies large/saferoute: a name or a model folder");
  cmd->add_option("--model", options->extra_models, "More guards served by name (repeatable)");
  cmd->add_option("--host", options->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", options->port, "Port (0: any free port)")->capture_default_str();
  cmd->add_option("--api-key", options->api_keys, "Accepted bearer key (repeatable); also $GUARDKIT_API_KEYS=k1,k2");
  cmd->add_option("--api-keys-file", options->api_keys_file, "File with one accepted key a line");
  cmd->add_option("--default-policy", options->default_policy, "small, large or saferoute")->capture_default_str();
  cmd->add_option("--generator", options->generator,
                  "Llama served at /v1/completions and (without --upstream) /v1/chat/completions: a model folder or "
                  "a models-file name; default: the models file's top-level \"generator\"");
  cmd->add_option("--generator-dtype", options->generator_dtype, "fp32 or bf16 (default: the models file's, else fp32)");
  cmd->add_option("--max-completion-tokens", options->max_completion_tokens, "Cap on a completion's max_tokens")
      ->capture_default_str();
  cmd->add_option("--max-logprobs", options->max_logprobs, "Cap on logprobs/top_logprobs alternatives per token")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--upstream", options->upstream,
                  "Guarded proxy: forward /v1/chat/completions to this OpenAI-compatible server (http://host:port); "
                  "its key from $GUARDKIT_UPSTREAM_API_KEY");
  cmd->add_option("--upstream-timeout-ms", options->upstream_timeout_ms, "Upstream read timeout (504)")
      ->capture_default_str();
  cmd->add_option("--defense-file", options->defense_file, "BiasDefense text injected as a leading system message");
  cmd->add_option("--stream-check-chars", options->stream_check_chars,
                  "Streamed proxy answers: check (then release) every this many characters; 0: off")
      ->capture_default_str();
  cmd->add_option("--stream-check-deltas", options->stream_check_deltas,
                  "Streamed proxy answers: also check every this many upstream deltas (~tokens); 0: off")
      ->capture_default_str();
  cmd->add_flag("--fail-open", options->fail_open,
                "Proxy: release unchecked text when a check fails or the upstream fails mid-stream (default: fail closed)");
  cmd->add_option("--router", options->router,
                  "Enables policy saferoute: a router folder (guardkit route train) or entropy|small_only|large_only|random");
  cmd->add_option("--route-threshold", options->route_threshold, "ε when a request names none (default: the router's)");
  cmd->add_option("--budget-window", options->budget_window, "Recent router scores a request's budget is computed over")
      ->capture_default_str();
  cmd->add_option("--budget-reference", options->budget_reference,
                  "Shared budget window for a fleet: a feature cache (route features), a JSON file of router scores, "
                  "or a URL answering one (another replica's /v1/router/window); budgets use it instead of this "
                  "replica's own recent scores");
  cmd->add_option("--budget-refresh-s", options->budget_refresh_s, "How often a --budget-reference URL is refetched")
      ->capture_default_str()->check(CLI::Range(0.1, 86400.0));
  cmd->add_option("--drain-seconds", options->drain_seconds,
                  "On SIGTERM keep serving this long with /readyz 503 before closing the listener (load balancers "
                  "and Kubernetes endpoints take the replica out meanwhile; keep it below terminationGracePeriodSeconds "
                  "minus --timeout-ms)")
      ->capture_default_str()->check(CLI::Range(0.0, 3600.0));
  cmd->add_option("--max-batch", options->max_batch, "Conversations per forward pass (1: batching off)")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--workers", options->workers,
                  "Threads scoring batches per guard (0: one per core with one libtorch thread each, unless "
                  "--threads is given or a local Llama guard or generator is served; then cores / threads). "
                  "Independent batches on each core beat splitting small GEMMs across cores: docs/BENCHMARKS.md")
      ->capture_default_str()->check(CLI::Range(0, 256));
  cmd->add_option("--max-wait-ms", options->max_wait_ms, "Longest wait for a batch to fill")
      ->capture_default_str()->check(CLI::Range(0.0, 10000.0));
  cmd->add_option("--queue", options->queue, "Conversations waiting per guard before 429")->capture_default_str();
  cmd->add_option("--timeout-ms", options->timeout_ms, "Per-request timeout (504)")->capture_default_str();
  cmd->add_option("--max-body-bytes", options->max_body_bytes, "Larger request bodies get 413")->capture_default_str();
  cmd->add_option("--max-inputs", options->max_inputs, "Most /v1/moderations inputs per request")->capture_default_str();
  cmd->add_option("--http-threads", options->http_threads, "Concurrent connections served")->capture_default_str();
  cmd->add_option("--access-log", options->access_log, "JSON-lines access log: - (stdout), a file, or off")
      ->capture_default_str();
  cmd->callback([options, &global]() { run_serve(*options, global); });
}

}  // namespace

GUARDKIT_COMMAND(70, add_serve_command);

}  // namespace guardkit::cli
