#include "io/openai_client.h"

#include <httplib.h>

#include <algorithm>
#include <cmath>
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

OpenAIClient::OpenAIClient(OpenAIClientOptions options) : options_(std::move(options)) {
  const std::string& url = options_.base_url;
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
  scheme_host_port_ = scheme + "://" + host_port;
  prefix_ = path_begin == std::string::npos ? "" : url.substr(path_begin);
  while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
  if (prefix_.size() >= 3 && prefix_.substr(prefix_.size() - 3) == "/v1") prefix_.resize(prefix_.size() - 3);
  if (options_.max_concurrency < 1) fail("max_concurrency must be at least 1");
  if (options_.max_retries < 0) fail("max_retries must not be negative");
  rng_.seed(options_.jitter_seed ? options_.jitter_seed
                                 : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
}

OpenAIClient::~OpenAIClient() = default;

std::string OpenAIClient::endpoint(const std::string& path) const { return scheme_host_port_ + prefix_ + path; }

int64_t OpenAIClient::attempts_made() const {
  std::lock_guard lock(mutex_);
  return attempts_;
}

std::unique_ptr<httplib::Client> OpenAIClient::acquire_connection() {
  std::unique_lock lock(mutex_);
  slot_free_.wait(lock, [&] { return in_flight_ < options_.max_concurrency; });
  ++in_flight_;
  ++attempts_;
  if (!idle_.empty()) {
    auto client = std::move(idle_.back());
    idle_.pop_back();
    return client;
  }
  lock.unlock();
  auto client = std::make_unique<httplib::Client>(scheme_host_port_);
  client->set_keep_alive(true);
  const auto seconds = std::chrono::duration<double>(options_.timeout_s);
  const auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(seconds);
  client->set_connection_timeout(timeout);
  client->set_read_timeout(timeout);
  client->set_write_timeout(timeout);
  if (!options_.api_key.empty()) client->set_bearer_token_auth(options_.api_key);
  return client;
}

void OpenAIClient::release_connection(std::unique_ptr<httplib::Client> client) {
  {
    std::lock_guard lock(mutex_);
    --in_flight_;
    if (client) idle_.push_back(std::move(client));  // null: the connection broke, drop it
  }
  slot_free_.notify_one();
}

double OpenAIClient::backoff_seconds(int retry) {
  const double base = std::min(options_.backoff_max_s, options_.backoff_initial_s * std::pow(2.0, retry));
  std::lock_guard lock(mutex_);
  return base * std::uniform_real_distribution<double>(0.5, 1.0)(rng_);
}

json OpenAIClient::post_json(const std::string& path, const json& body) {
  const std::string url = endpoint(path);
  const std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string last_problem;
  RemoteError::Kind last_kind = RemoteError::Kind::kUnreachable;
  int last_status = 0;
  for (int attempt = 0; attempt <= options_.max_retries; ++attempt) {
    auto client = acquire_connection();
    httplib::Result result = client->Post(prefix_ + path, payload, "application/json");
    std::optional<double> wait;
    if (!result) {
      const httplib::Error error = result.error();
      release_connection(nullptr);
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
      release_connection(keep ? std::move(client) : nullptr);
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
      if (status != 429 && status < 500)
        remote_fail(last_kind, status, fmt::format("{}: {}", url, last_problem));  // a client error: retrying won't help
    }
    if (attempt == options_.max_retries) break;
    double seconds = backoff_seconds(attempt);
    if (wait) seconds = std::max(seconds, std::min(*wait, options_.retry_after_max_s));
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }
  remote_fail(last_kind, last_status,
              fmt::format("{}: {} (after {} attempts)", url, last_problem, options_.max_retries + 1));
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
