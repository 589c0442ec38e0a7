#include "augment/backends.h"

#include <cstdlib>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "io/openai_client.h"
#include "models/generation.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/chat_format.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace guardkit::augment {
namespace {

std::vector<text::ChatMessage> to_text_messages(const std::vector<ChatMessage>& messages) {
  std::vector<text::ChatMessage> out;
  out.reserve(messages.size());
  for (const auto& m : messages) out.push_back({m.role, m.content});
  return out;
}

text::RenderedPrompt render_request(const ChatRequest& request, const std::string& bos_token) {
  text::ChatFormatOptions options;
  options.add_generation_prompt = true;
  options.bos_token = bos_token;
  if (!request.assistant_prefix.empty()) options.assistant_prefix = request.assistant_prefix;
  return text::render_llama3_chat(to_text_messages(request.messages), options);
}

// Cuts `text` at the first stop string (OpenAI semantics: the stop string is not returned). True when it cut.
bool cut_at_stop(std::string& text, const std::vector<std::string>& stops) {
  size_t cut = std::string::npos;
  for (const auto& s : stops) {
    if (s.empty()) continue;
    size_t at = text.find(s);
    if (at != std::string::npos && (cut == std::string::npos || at < cut)) cut = at;
  }
  if (cut == std::string::npos) return false;
  text.resize(cut);
  return true;
}

// A key equal for requests that may share one models::generate call.
std::string sampling_key(const SamplingParams& p) {
  nlohmann::json key = {{"t", p.temperature}, {"p", p.top_p},         {"k", p.top_k},
                        {"r", p.repetition_penalty}, {"m", p.max_tokens}, {"stop", p.stop}};
  // The seed is not part of the key: every sampled row draws from its own seed's stream (GenerationOptions::
  // row_seeds), so requests with different seeds batch together and get what they would get alone. Unseeded
  // requests get a random seed each.
  return key.dump();
}

Completion error_completion(const std::string& message) {
  Completion c;
  c.finish_reason = "error";
  c.error = message;
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// LocalLlamaBackend

LocalLlamaBackend::LocalLlamaBackend(const std::filesystem::path& model_dir, LocalLlamaOptions options)
    : name_("local:" + model_dir.filename().string()), options_(std::move(options)) {
  if (options_.max_batch == 0) fail("LocalLlamaBackend: max_batch must be positive");
  model_ = models::LlamaModel::load(model_dir, models::parse_dtype(options_.dtype),
                                    models::parse_device(options_.device));
  tokenizer_ = text::load_tokenizer(model_dir);
}

LocalLlamaBackend::~LocalLlamaBackend() = default;

std::vector<int64_t> LocalLlamaBackend::prompt_ids(const ChatRequest& request) const {
  std::vector<int32_t> ids = text::encode_prompt(*tokenizer_, render_request(request, "<|begin_of_text|>"));
  return {ids.begin(), ids.end()};
}

std::vector<Completion> LocalLlamaBackend::generate_group(const std::vector<const ChatRequest*>& requests) {
  const SamplingParams& p = requests.front()->sampling;
  std::vector<Completion> out(requests.size());
  if (p.max_tokens <= 0) {
    for (auto& c : out) c = error_completion("max_tokens must be positive");
    return out;
  }
  models::GenerationOptions g;
  g.max_new_tokens = p.max_tokens;
  g.do_sample = p.temperature > 0;
  g.temperature = p.temperature > 0 ? p.temperature : 1.0;
  g.top_k = p.top_k;
  g.top_p = p.top_p;
  g.repetition_penalty = p.repetition_penalty;
  for (const ChatRequest* r : requests) g.row_seeds.push_back(r->sampling.seed ? *r->sampling.seed : std::random_device{}());
  if (model_->config().pad_token_id) g.pad_id = *model_->config().pad_token_id;

  std::vector<std::vector<int64_t>> prompts;
  for (const ChatRequest* r : requests) prompts.push_back(prompt_ids(*r));
  models::GenerationResult result = models::generate(*model_, prompts, g);
  for (size_t i = 0; i < requests.size(); ++i) {
    std::vector<int32_t> ids(result.new_ids[i].begin(), result.new_ids[i].end());
    Completion& c = out[i];
    c.text = tokenizer_->decode(ids, /*skip_special_tokens=*/true);
    c.finish_reason = result.finish_reasons[i];
    if (cut_at_stop(c.text, p.stop)) c.finish_reason = "stop";
    c.prompt_tokens = static_cast<int64_t>(prompts[i].size());
    c.completion_tokens = static_cast<int64_t>(ids.size());
  }
  return out;
}

std::vector<Completion> LocalLlamaBackend::generate(const std::vector<ChatRequest>& batch) {
  std::vector<Completion> out(batch.size());
  // Group by sampling parameters, keeping request order inside a group; each group runs in chunks of max_batch.
  std::map<std::string, std::vector<size_t>> groups;
  std::vector<std::string> order;
  for (size_t i = 0; i < batch.size(); ++i) {
    std::string key = sampling_key(batch[i].sampling);
    auto [it, inserted] = groups.try_emplace(key);
    if (inserted) order.push_back(key);
    it->second.push_back(i);
  }
  for (const auto& key : order) {
    const auto& indices = groups[key];
    for (size_t start = 0; start < indices.size(); start += options_.max_batch) {
      size_t end = std::min(indices.size(), start + options_.max_batch);
      std::vector<const ChatRequest*> chunk;
      for (size_t j = start; j < end; ++j) chunk.push_back(&batch[indices[j]]);
      std::vector<Completion> done;
      try {
        done = generate_group(chunk);
      } catch (const std::exception& e) {
        done.assign(chunk.size(), error_completion(e.what()));
      }
      for (size_t j = start; j < end; ++j) out[indices[j]] = std::move(done[j - start]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// OpenAIBackend

OpenAIBackend::OpenAIBackend(OpenAIBackendOptions options) : options_(std::move(options)) {
  if (options_.api_key.empty())
    if (const char* key = std::getenv("OPENAI_API_KEY")) options_.api_key = key;
  if (options_.max_concurrency <= 0) fail("OpenAIBackend: max_concurrency must be positive");
  io::OpenAIClientOptions client;
  client.base_url = options_.base_url;
  client.api_key = options_.api_key;
  client.timeout_s = options_.timeout_s;
  client.max_retries = options_.max_retries;
  client.max_concurrency = options_.max_concurrency;
  client_ = std::make_unique<io::OpenAIClient>(client);
}

OpenAIBackend::~OpenAIBackend() = default;

std::string OpenAIBackend::name() const {
  return "openai:" + options_.base_url + (options_.model_name.empty() ? "" : "#" + options_.model_name);
}

Completion OpenAIBackend::generate_one(const ChatRequest& request) {
  const SamplingParams& p = request.sampling;
  nlohmann::json body = {{"max_tokens", p.max_tokens}, {"temperature", p.temperature}, {"top_p", p.top_p}};
  if (!options_.model_name.empty()) body["model"] = options_.model_name;
  // Extensions understood by vLLM / llama.cpp; sent only when used so strict servers are not confused.
  if (p.top_k > 0) body["top_k"] = p.top_k;
  if (p.repetition_penalty != 1.0) body["repetition_penalty"] = p.repetition_penalty;
  if (p.seed) body["seed"] = *p.seed;
  if (!p.stop.empty()) body["stop"] = p.stop;
  const bool raw_prompt = !request.assistant_prefix.empty();
  std::string path;
  if (raw_prompt) {
    // The server's tokenizer adds BOS itself to a text prompt.
    body["prompt"] = render_request(request, "").text();
    path = "/v1/completions";
  } else {
    nlohmann::json messages = nlohmann::json::array();
    for (const auto& m : request.messages) messages.push_back({{"role", m.role}, {"content", m.content}});
    body["messages"] = messages;
    path = "/v1/chat/completions";
  }
  nlohmann::json answer = client_->post_json(path, body);
  const auto& choices = answer.value("choices", nlohmann::json::array());
  if (!choices.is_array() || choices.empty() || !choices[0].is_object())
    fail("{}: answer without choices", client_->endpoint(path));
  const auto& choice = choices[0];
  Completion c;
  if (raw_prompt) {
    if (!choice.contains("text") || !choice["text"].is_string()) fail("{}: choice without text", client_->endpoint(path));
    c.text = choice["text"].get<std::string>();
  } else {
    const auto& message = choice.value("message", nlohmann::json::object());
    if (message.contains("content") && message["content"].is_string()) c.text = message["content"].get<std::string>();
  }
  c.finish_reason = choice.contains("finish_reason") && choice["finish_reason"].is_string()
                        ? choice["finish_reason"].get<std::string>()
                        : "stop";
  if (answer.contains("usage") && answer["usage"].is_object()) {
    c.prompt_tokens = answer["usage"].value("prompt_tokens", int64_t{0});
    c.completion_tokens = answer["usage"].value("completion_tokens", int64_t{0});
  }
  return c;
}

std::vector<Completion> OpenAIBackend::generate(const std::vector<ChatRequest>& batch) {
  std::vector<Completion> out(batch.size());
  // The client limits requests in flight; launch in waves so a huge batch does not spawn a thread per request.
  const size_t wave = static_cast<size_t>(options_.max_concurrency);
  for (size_t start = 0; start < batch.size(); start += wave) {
    size_t end = std::min(batch.size(), start + wave);
    std::vector<std::future<Completion>> running;
    for (size_t i = start; i < end; ++i)
      running.push_back(std::async(std::launch::async, [this, &batch, i]() {
        try {
          return generate_one(batch[i]);
        } catch (const std::exception& e) {
          return error_completion(e.what());
        }
      }));
    for (size_t i = start; i < end; ++i) out[i] = running[i - start].get();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

std::unique_ptr<LlmBackend> make_llm_backend(const std::string& spec, const std::string& model_name) {
  if (spec.rfind("http://", 0) == 0 || spec.rfind("https://", 0) == 0) {
    OpenAIBackendOptions options;
    options.base_url = spec;
    options.model_name = model_name;
    return std::make_unique<OpenAIBackend>(options);
  }
  std::error_code ec;
  if (std::filesystem::is_directory(spec, ec)) return std::make_unique<LocalLlamaBackend>(spec);
  fail("LLM backend '{}': neither a model directory nor an http(s):// URL", spec);
}

}  // namespace guardkit::augment
