#include "io/openai_client.h"

#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <tuple>
#include <thread>

#include "util/printable.h"

namespace guardkit::io {

using nlohmann::json;

namespace {

[[noreturn]] void remote_fail(RemoteError::Kind kind, int status, const std::string& message) {
  throw RemoteError(kind, status, printable(message, 600));
}

void check(bool ok, const std::string& url, const std::string& what) {
  if (!ok) remote_fail(RemoteError::Kind::kBadResponse, 200, url + ": unexpected response shape: " + what);
}

// Completions: logprobs = {tokens: [...], token_logprobs: [...], top_logprobs: [{token: lp, ...} | null, ...]}.
std::vector<TokenLogprob> parse_completion_logprobs(const json& logprobs, const std::string& url) {
  std::vector<TokenLogprob> out;
  if (logprobs.is_null()) return out;
  check(logprobs.is_object(), url, "logprobs is not an object");
  const json& tokens = logprobs.value("tokens", json::array());
  const json& token_logprobs = logprobs.value("token_logprobs", json::array());
  const json& top = logprobs.value("top_logprobs", json::array());
  check(tokens.is_array() && token_logprobs.is_array() && (top.is_array() || top.is_null()), url,
        "logprobs fields are not lists");
  for (size_t i = 0; i < tokens.size(); ++i) {
    TokenLogprob position;
    check(tokens[i].is_string(), url, "logprobs.tokens holds a non-string");
    position.token = tokens[i].get<std::string>();
    if (i < token_logprobs.size() && token_logprobs[i].is_number()) position.logprob = token_logprobs[i].get<double>();
    if (top.is_array() && i < top.size() && top[i].is_object()) {
      for (auto it = top[i].begin(); it != top[i].end(); ++it) {
        check(it.value().is_number(), url, "top_logprobs holds a non-number");
        position.top.push_back({it.key(), it.value().get<double>()});
      }
    }
    std::stable_sort(position.top.begin(), position.top.end(),
                     [](const TopLogprob& a, const TopLogprob& b) { return a.logprob > b.logprob; });
    out.push_back(std::move(position));
  }
  return out;
}

// Chat: logprobs = {content: [{token, logprob, top_logprobs: [{token, logprob}, ...]}, ...]}.
std::vector<TokenLogprob> parse_chat_logprobs(const json& logprobs, const std::string& url) {
  std::vector<TokenLogprob> out;
  if (logprobs.is_null()) return out;
  check(logprobs.is_object(), url, "logprobs is not an object");
  const json& content = logprobs.value("content", json::array());
  if (content.is_null()) return out;
  check(content.is_array(), url, "logprobs.content is not a list");
  for (const json& item : content) {
    check(item.is_object() && item.contains("token") && item["token"].is_string(), url, "logprobs.content item");
    TokenLogprob position;
    position.token = item["token"].get<std::string>();
    if (item.contains("logprob") && item["logprob"].is_number()) position.logprob = item["logprob"].get<double>();
    if (item.contains("top_logprobs") && item["top_logprobs"].is_array())
      for (const json& t : item["top_logprobs"]) {
        check(t.is_object() && t.contains("token") && t["token"].is_string() && t.contains("logprob") &&
                  t["logprob"].is_number(),
              url, "top_logprobs item");
        position.top.push_back({t["token"].get<std::string>(), t["logprob"].get<double>()});
      }
    std::stable_sort(position.top.begin(), position.top.end(),
                     [](const TopLogprob& a, const TopLogprob& b) { return a.logprob > b.logprob; });
    out.push_back(std::move(position));
  }
  return out;
}

CompletionResponse parse_response(const json& body, bool is_chat, const std::string& url) {
  CompletionResponse response;
  check(body.is_object(), url, "body is not a JSON object");
  check(body.contains("choices") && body["choices"].is_array() && !body["choices"].empty(), url,
        "no 'choices' list");
  for (const json& choice : body["choices"]) {
    check(choice.is_object(), url, "a choice is not an object");
    CompletionChoice out;
    out.index = choice.value("index", json(static_cast<int>(response.choices.size()))).is_number_integer()
                    ? choice.value("index", 0)
                    : static_cast<int>(response.choices.size());
    if (is_chat) {
      check(choice.contains("message") && choice["message"].is_object(), url, "a choice has no 'message'");
      const json& content = choice["message"].value("content", json(""));
      check(content.is_string() || content.is_null(), url, "message.content is not a string");
      out.text = content.is_string() ? content.get<std::string>() : "";
      if (choice.contains("logprobs")) out.logprobs = parse_chat_logprobs(choice["logprobs"], url);
    } else {
      check(choice.contains("text") && choice["text"].is_string(), url, "a choice has no 'text'");
      out.text = choice["text"].get<std::string>();
      if (choice.contains("logprobs")) out.logprobs = parse_completion_logprobs(choice["logprobs"], url);
    }
    if (choice.contains("finish_reason") && choice["finish_reason"].is_string())
      out.finish_reason = choice["finish_reason"].get<std::string>();
    response.choices.push_back(std::move(out));
  }
  std::stable_sort(response.choices.begin(), response.choices.end(),
                   [](const CompletionChoice& a, const CompletionChoice& b) { return a.index < b.index; });
  if (body.contains("usage") && body["usage"].is_object()) {
    const json& usage = body["usage"];
    if (usage.contains("prompt_tokens") && usage["prompt_tokens"].is_number_integer())
      response.prompt_tokens = usage["prompt_tokens"].get<int64_t>();
    if (usage.contains("completion_tokens") && usage["completion_tokens"].is_number_integer())
      response.completion_tokens = usage["completion_tokens"].get<int64_t>();
  }
  response.raw = body;
  return response;
}

void add_sampling(json& body, const SamplingParams& params, bool is_chat) {
  body["max_tokens"] = params.max_tokens;
  body["temperature"] = params.temperature;
  body["top_p"] = params.top_p;
  body["n"] = params.n;
  if (params.seed) body["seed"] = *params.seed;
  if (!params.stop.empty()) body["stop"] = params.stop;
  if (params.logprobs) {
    if (is_chat) {
      body["logprobs"] = true;
      body["top_logprobs"] = *params.logprobs;
    } else {
      body["logprobs"] = *params.logprobs;
    }
  }
}

// Retry-After in seconds (the HTTP-date form is not used by inference servers; it counts as absent).
std::optional<double> retry_after_seconds(const httplib::Result& result) {
  if (!result || !result->has_header("Retry-After")) return std::nullopt;
  const std::string value = result->get_header_value("Retry-After");
  char* end = nullptr;
  const double seconds = std::strtod(value.c_str(), &end);
  if (end == value.c_str() || !std::isfinite(seconds) || seconds < 0) return std::nullopt;
  return seconds;
}

}  // namespace

namespace {

// "http://host:port/prefix" -> ("http://host:port", "/prefix" without a trailing /v1), checked.
std::pair<std::string, std::string> split_base_url(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) fail("base URL '{}' must start with http://", printable(url));
  const std::string scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") fail("base URL '{}': unsupported scheme '{}'", printable(url), scheme);
  const size_t path_begin = url.find('/', scheme_end + 3);
  const std::string host_port = url.substr(scheme_end + 3, path_begin == std::string::npos ? std::string::npos
                                                                                           : path_begin - scheme_end - 3);
  if (host_port.empty()) fail("base URL '{}' has no host", printable(url));
  const size_t colon = host_port.rfind(':');
  if (colon != std::string::npos) {
    const std::string port = host_port.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) || std::stoi(port) > 65535)
      fail("base URL '{}' has a bad port '{}'", printable(url), printable(port));
  }
  std::string prefix = path_begin == std::string::npos ? "" : url.substr(path_begin);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (prefix.size() >= 3 && prefix.substr(prefix.size() - 3) == "/v1") prefix.resize(prefix.size() - 3);
  return {scheme + "://" + host_port, prefix};
}

constexpr double kMaxEjectSeconds = 60.0;

}  // namespace

OpenAIClient::OpenAIClient(OpenAIClientOptions options) : options_(std::move(options)) {
  std::stringstream list(options_.base_url);
  for (std::string url; std::getline(list, url, ',');) {
    while (!url.empty() && url.front() == ' ') url.erase(url.begin());
    while (!url.empty() && url.back() == ' ') url.pop_back();
    if (url.empty()) continue;
    Endpoint endpoint;
    std::tie(endpoint.scheme_host_port, endpoint.prefix) = split_base_url(url);
    endpoint.eject_s = options_.eject_s;
    endpoints_.push_back(std::move(endpoint));
  }
  if (endpoints_.empty()) fail("base URL '{}' names no server", printable(options_.base_url));
  if (options_.max_concurrency < 1) fail("max_concurrency must be at least 1");
  if (options_.max_concurrency_per_endpoint < 0) fail("max_concurrency_per_endpoint must not be negative");
  if (options_.max_retries < 0) fail("max_retries must not be negative");
  if (options_.eject_after_failures < 1) fail("eject_after_failures must be at least 1");
  if (!(options_.eject_s >= 0)) fail("eject_s must not be negative");
  per_endpoint_limit_ = options_.max_concurrency_per_endpoint ? options_.max_concurrency_per_endpoint
                                                              : options_.max_concurrency;
  rng_.seed(options_.jitter_seed ? options_.jitter_seed
                                 : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
}

OpenAIClient::~OpenAIClient() = default;

std::string OpenAIClient::endpoint(const std::string& path) const {
  return endpoints_.front().scheme_host_port + endpoints_.front().prefix + path;
}

int64_t OpenAIClient::attempts_made() const {
  std::lock_guard lock(mutex_);
  return attempts_;
}

std::vector<EndpointStatus> OpenAIClient::endpoints() const {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  std::vector<EndpointStatus> out;
  for (const auto& e : endpoints_)
    out.push_back({e.scheme_host_port + e.prefix, !e.on_trial && e.out_until <= now, e.in_flight, e.requests,
                   e.failures, e.ejections});
  return out;
}

// The endpoint with the fewest requests outstanding among those with a free slot, preferring ones this request has
// not tried; endpoints that are out count only when every endpoint is out (then the one due back first). Nothing
// when every candidate is at its limit (the caller waits).
std::optional<size_t> OpenAIClient::pick_endpoint(const std::vector<bool>& tried, Clock::time_point now) const {
  if (in_flight_ >= options_.max_concurrency) return std::nullopt;
  const size_t n = endpoints_.size();
  auto is_out = [&](const Endpoint& e) { return e.out_until > now || (e.on_trial && e.in_flight > 0); };
  const bool all_out = std::all_of(endpoints_.begin(), endpoints_.end(), is_out);
  std::optional<size_t> best;
  auto better = [&](size_t i, size_t j) {  // is i a better choice than j?
    if (tried[i] != tried[j]) return !tried[i];
    if (all_out && endpoints_[i].out_until != endpoints_[j].out_until)
      return endpoints_[i].out_until < endpoints_[j].out_until;
    return endpoints_[i].in_flight < endpoints_[j].in_flight;
  };
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (rotation_ + k) % n;
    const Endpoint& e = endpoints_[i];
    if (e.in_flight >= per_endpoint_limit_) continue;
    if (!all_out && is_out(e)) continue;
    if (!best || better(i, *best)) best = i;
  }
  return best;
}

OpenAIClient::Lease OpenAIClient::acquire_connection(const std::vector<bool>& tried) {
  std::unique_lock lock(mutex_);
  std::optional<size_t> chosen;
  // Re-evaluated on every release, and at least every 100 ms (an ejection may run out meanwhile).
  while (!(chosen = pick_endpoint(tried, Clock::now()))) slot_free_.wait_for(lock, std::chrono::milliseconds(100));
  Endpoint& endpoint = endpoints_[*chosen];
  ++in_flight_;
  ++endpoint.in_flight;
  ++endpoint.requests;
  ++attempts_;
  ++rotation_;
  Lease lease{*chosen, nullptr};
  if (!endpoint.idle.empty()) {
    lease.client = std::move(endpoint.idle.back());
    endpoint.idle.pop_back();
    return lease;
  }
  const std::string origin = endpoint.scheme_host_port;
  lock.unlock();
  lease.client = std::make_unique<httplib::Client>(origin);
  lease.client->set_keep_alive(true);
  const auto seconds = std::chrono::duration<double>(options_.timeout_s);
  const auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(seconds);
  lease.client->set_connection_timeout(timeout);
  lease.client->set_read_timeout(timeout);
  lease.client->set_write_timeout(timeout);
  if (!options_.api_key.empty()) lease.client->set_bearer_token_auth(options_.api_key);
  return lease;
}

void OpenAIClient::release_connection(Lease lease, bool failed) {
  {
    std::lock_guard lock(mutex_);
    Endpoint& endpoint = endpoints_[lease.endpoint];
    --in_flight_;
    --endpoint.in_flight;
    if (lease.client) endpoint.idle.push_back(std::move(lease.client));  // null: the connection broke, drop it
    if (!failed) {
      endpoint.consecutive_failures = 0;
      endpoint.on_trial = false;
      endpoint.eject_s = options_.eject_s;
    } else {
      ++endpoint.failures;
      ++endpoint.consecutive_failures;
      const bool trial_failed = endpoint.on_trial;
      if (trial_failed || endpoint.consecutive_failures >= options_.eject_after_failures) {
        if (trial_failed) endpoint.eject_s = std::min(kMaxEjectSeconds, std::max(endpoint.eject_s, 0.001) * 2.0);
        endpoint.out_until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(endpoint.eject_s));
        endpoint.on_trial = true;
        endpoint.idle.clear();  // its pooled connections may be as dead as it is
        ++endpoint.ejections;
      }
    }
  }
  slot_free_.notify_all();
}

double OpenAIClient::backoff_seconds(int retry) {
  const double base = std::min(options_.backoff_max_s, options_.backoff_initial_s * std::pow(2.0, retry));
  std::lock_guard lock(mutex_);
  return base * std::uniform_real_distribution<double>(0.5, 1.0)(rng_);
}

json OpenAIClient::post_json(const std::string& path, const json& body) {
  const std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string last_problem, last_url = endpoint(path);
  RemoteError::Kind last_kind = RemoteError::Kind::kUnreachable;
  int last_status = 0;
  std::vector<bool> tried(endpoints_.size(), false);
  int backoffs = 0;
  for (int attempt = 0; attempt <= options_.max_retries; ++attempt) {
    Lease lease = acquire_connection(tried);
    tried[lease.endpoint] = true;
    const Endpoint& target = endpoints_[lease.endpoint];  // its URL parts never change
    const std::string url = target.scheme_host_port + target.prefix + path;
    httplib::Result result = lease.client->Post(target.prefix + path, payload, "application/json");
    std::optional<double> wait;
    if (!result) {
      const httplib::Error error = result.error();
      lease.client.reset();
      release_connection(std::move(lease), true);
      last_kind = error == httplib::Error::Read || error == httplib::Error::Write
                      ? RemoteError::Kind::kTimeout
                      : RemoteError::Kind::kUnreachable;
      last_status = 0;
      last_problem = last_kind == RemoteError::Kind::kTimeout
                         ? fmt::format("no answer within {} s ({})", options_.timeout_s, httplib::to_string(error))
                         : fmt::format("cannot connect ({})", httplib::to_string(error));
    } else {
      const int status = result->status;
      const std::string response_body = result->body;
      const bool keep = result->get_header_value("Connection") != "close";
      wait = retry_after_seconds(result);
      const bool server_failed = status == 429 || status >= 500;
      if (!keep) lease.client.reset();
      release_connection(std::move(lease), server_failed);
      if (status >= 200 && status < 300) {
        try {
          return json::parse(response_body);
        } catch (const json::exception&) {
          remote_fail(RemoteError::Kind::kBadResponse, status,
                      fmt::format("{}: the answer is not JSON: '{}'", url, printable(response_body, 120)));
        }
      }
      last_kind = RemoteError::Kind::kHttpStatus;
      last_status = status;
      last_problem = fmt::format("HTTP {}: {}", status, printable(response_body, 200));
      if (!server_failed)
        remote_fail(last_kind, status, fmt::format("{}: {}", url, last_problem));  // a client error: retrying won't help
    }
    last_url = url;
    if (attempt == options_.max_retries) break;
    // Another endpoint this request has not tried goes at once; back off only when all of them were tried.
    if (std::find(tried.begin(), tried.end(), false) != tried.end()) continue;
    double seconds = backoff_seconds(backoffs++);
    if (wait) seconds = std::max(seconds, std::min(*wait, options_.retry_after_max_s));
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    std::fill(tried.begin(), tried.end(), false);
  }
  remote_fail(last_kind, last_status,
              fmt::format("{}: {} (after {} attempts)", last_url, last_problem, options_.max_retries + 1));
}

CompletionResponse OpenAIClient::complete(const std::string& model, const std::string& prompt,
                                          const SamplingParams& params) {
  json body = {{"model", model}, {"prompt", prompt}};
  add_sampling(body, params, false);
  return parse_response(post_json("/v1/completions", body), false, endpoint("/v1/completions"));
}

CompletionResponse OpenAIClient::complete(const std::string& model, const std::vector<int32_t>& prompt_ids,
                                          const SamplingParams& params) {
  json body = {{"model", model}, {"prompt", prompt_ids}};
  add_sampling(body, params, false);
  return parse_response(post_json("/v1/completions", body), false, endpoint("/v1/completions"));
}

CompletionResponse OpenAIClient::chat(const std::string& model, const std::vector<text::ChatMessage>& messages,
                                      const SamplingParams& params) {
  json list = json::array();
  for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  json body = {{"model", model}, {"messages", list}};
  add_sampling(body, params, true);
  return parse_response(post_json("/v1/chat/completions", body), true, endpoint("/v1/chat/completions"));
}

}  // namespace guardkit::io
