#include "serve/generator_api.h"

#include <fmt/format.h>

#include <ATen/ATen.h>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include "models/llama.h"
#include "serve/api.h"
#include "text/chat_format.h"
#include "text/prompt.h"
#include "text/tokenizer.h"

namespace guardkit::serve {

using nlohmann::json;

namespace {

bool is_set(const json& body, const char* field) {
  auto it = body.find(field);
  return it != body.end() && !it->is_null();
}

int64_t integer_field(const json& body, const char* field, int64_t fallback, int64_t low, int64_t high) {
  if (!is_set(body, field)) return fallback;
  const json& value = body.at(field);
  if (!value.is_number_integer()) bad_request("invalid_type", fmt::format("'{}' must be an integer", field));
  // Unsigned values above int64's range read as negative: compare as unsigned first.
  if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad_request("invalid_value", fmt::format("'{}' must be in [{}, {}]", field, low, high));
  const int64_t v = value.get<int64_t>();
  if (v < low || v > high) bad_request("invalid_value", fmt::format("'{}' must be in [{}, {}], got {}", field, low, high, v));
  return v;
}

double number_field(const json& body, const char* field, double fallback, double low, double high) {
  if (!is_set(body, field)) return fallback;
  const json& value = body.at(field);
  if (!value.is_number()) bad_request("invalid_type", fmt::format("'{}' must be a number", field));
  const double v = value.get<double>();
  if (!std::isfinite(v) || v < low || v > high)
    bad_request("invalid_value", fmt::format("'{}' must be in [{}, {}], got {}", field, low, high, v));
  return v;
}

bool bool_field(const json& body, const char* field) {
  if (!is_set(body, field)) return false;
  if (!body.at(field).is_boolean()) bad_request("invalid_type", fmt::format("'{}' must be true or false", field));
  return body.at(field).get<bool>();
}

std::vector<std::string> stop_strings(const json& body) {
  if (!is_set(body, "stop")) return {};
  const json& stop = body.at("stop");
  std::vector<std::string> out;
  if (stop.is_string()) {
    out.push_back(stop.get<std::string>());
  } else if (stop.is_array()) {
    if (stop.size() > 4) bad_request("invalid_value", fmt::format("'stop' holds at most 4 strings, got {}", stop.size()));
    for (const auto& s : stop) {
      if (!s.is_string()) bad_request("invalid_type", "'stop' must be a string or a list of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad_request("invalid_type", "'stop' must be a string or a list of strings");
  }
  for (const auto& s : out)
    if (s.empty()) bad_request("invalid_value", "'stop' strings must not be empty");
  return out;
}

std::string decode_one(const text::Tokenizer& tokenizer, int64_t id, bool skip_special = false) {
  return tokenizer.decode({static_cast<int32_t>(id)}, skip_special);
}

json token_bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

CompletionSettings parse_completion_settings(const json& body, bool chat, const GeneratorLimits& limits) {
  CompletionSettings s;
  s.stream = bool_field(body, "stream");
  if (!chat && bool_field(body, "echo")) bad_request("unsupported", "'echo' is not supported");
  const int64_t fallback_tokens = chat ? limits.max_tokens : std::min<int64_t>(16, limits.max_tokens);
  const char* tokens_field = chat && !is_set(body, "max_tokens") ? "max_completion_tokens" : "max_tokens";
  s.generation.max_new_tokens = integer_field(body, tokens_field, fallback_tokens, 1, limits.max_tokens);
  const double temperature = number_field(body, "temperature", 1.0, 0.0, 2.0);
  s.generation.do_sample = temperature > 0.0;
  s.generation.temperature = s.generation.do_sample ? temperature : 1.0;
  s.generation.top_p = number_field(body, "top_p", 1.0, 0.0, 1.0);
  if (s.generation.top_p <= 0.0) bad_request("invalid_value", "'top_p' must be in (0, 1]");
  s.seeded = is_set(body, "seed");
  s.generation.seed = s.seeded ? static_cast<uint64_t>(integer_field(body, "seed", 0, std::numeric_limits<int64_t>::min(),
                                                                      std::numeric_limits<int64_t>::max()))
                               : std::random_device{}();
  s.stop = stop_strings(body);
  s.n = integer_field(body, "n", 1, 1, limits.max_choices);
  if (chat) {
    const bool logprobs = bool_field(body, "logprobs");
    const int64_t top = integer_field(body, "top_logprobs", 0, 0, limits.max_top_logprobs);
    if (is_set(body, "top_logprobs") && !logprobs)
      bad_request("invalid_request", "'top_logprobs' needs 'logprobs': true");
    s.top_logprobs = logprobs ? top : -1;
  } else {
    if (is_set(body, "logprobs") && body["logprobs"].is_boolean())
      bad_request("invalid_type", "'logprobs' of /v1/completions is an integer (how many alternatives), not a bool");
    s.top_logprobs = integer_field(body, "logprobs", -1, 0, limits.max_top_logprobs);
  }
  if (s.stream && s.n != 1) bad_request("unsupported", "streaming from the local generator takes n = 1");
  if (s.stream && s.top_logprobs >= 0) bad_request("unsupported", "streaming from the local generator gives no logprobs");
  return s;
}

std::vector<int64_t> completion_prompt_ids(const json& body, const text::Tokenizer& tokenizer, int64_t vocab_size) {
  if (!is_set(body, "prompt")) bad_request("missing_input", "'prompt' is required");
  json prompt = body.at("prompt");
  // A list holding one prompt (a string or a list of ids) is that prompt.
  if (prompt.is_array() && prompt.size() == 1 && (prompt[0].is_string() || prompt[0].is_array())) prompt = prompt[0];
  if (prompt.is_string()) {
    const std::string text = prompt.get<std::string>();
    if (text.empty()) bad_request("empty_input", "'prompt' is empty");
    const text::Encoding encoding = tokenizer.encode_for_model(text);
    if (encoding.ids.empty()) bad_request("empty_input", "'prompt' encodes to no tokens");
    return {encoding.ids.begin(), encoding.ids.end()};
  }
  if (!prompt.is_array())
    bad_request("invalid_type", "'prompt' must be a string or a list of token ids");
  if (prompt.empty()) bad_request("empty_input", "'prompt' is empty");
  std::vector<int64_t> ids;
  for (const auto& id : prompt) {
    if (id.is_string() || id.is_array())
      bad_request("unsupported", "one prompt per request: send a string or a list of token ids");
    if (!id.is_number_integer()) bad_request("invalid_type", "'prompt' token ids must be integers");
    const int64_t v = id.get<int64_t>();
    if (v < 0 || v >= vocab_size)
      bad_request("invalid_value", fmt::format("prompt token id {} is outside the vocabulary [0, {})", v, vocab_size));
    ids.push_back(v);
  }
  return ids;
}

std::vector<int64_t> chat_prompt_ids(const json& body, const text::Tokenizer& tokenizer) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) bad_request("missing_input", "'messages' is required");
  if (!it->is_array()) bad_request("invalid_type", "'messages' must be a list");
  if (it->empty()) bad_request("empty_input", "'messages' is empty");
  std::vector<text::ChatMessage> messages;
  for (const auto& m : *it) {
    if (!m.is_object()) bad_request("invalid_type", "each message must be an object with 'role' and 'content'");
    if (!m.contains("role") || !m["role"].is_string()) bad_request("invalid_type", "a message's 'role' must be a string");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system turn
    if (role != "system" && role != "user" && role != "assistant")
      bad_request("invalid_role", fmt::format("unknown role '{}' (system, user or assistant)", role));
    std::string content;
    const json content_value = m.value("content", json());
    if (content_value.is_string()) {
      content = content_value.get<std::string>();
    } else if (content_value.is_array()) {
      for (const auto& part : content_value) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          bad_request("unsupported_content", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
        content += part["text"].get<std::string>();
      }
    } else if (!(content_value.is_null() && role == "assistant")) {
      bad_request("invalid_type", "a message's 'content' must be a string or a list of text parts");
    }
    messages.push_back({role, content});
  }
  text::ChatFormatOptions options;
  options.add_generation_prompt = true;
  options.bos_token = "<|begin_of_text|>";
  const std::vector<int32_t> ids = text::encode_prompt(tokenizer, text::render_llama3_chat(messages, options));
  return {ids.begin(), ids.end()};
}

GeneratedCompletion run_completion(const models::LlamaModel& model, const text::Tokenizer& tokenizer,
                                   const std::vector<int64_t>& prompt_ids, const CompletionSettings& settings) {
  models::GenerationOptions options = settings.generation;
  if (auto pad = tokenizer.pad_id()) options.pad_id = *pad;
  if (!settings.stop.empty()) {
    // A row stops as soon as its text holds a stop string (the text is cut before it below).
    options.should_stop = [&](size_t, const std::vector<int64_t>& ids) {
      const std::string text = tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.end()), true);
      for (const auto& s : settings.stop)
        if (text.find(s) != std::string::npos) return true;
      return false;
    };
  }
  const std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(settings.n), prompt_ids);
  const models::GenerationResult generated = models::generate(model, prompts, options);

  GeneratedCompletion out;
  out.prompt_tokens = static_cast<int64_t>(prompt_ids.size());
  for (size_t c = 0; c < prompts.size(); ++c) {
    GeneratedChoice choice;
    choice.ids = generated.new_ids.at(c);
    choice.finish_reason = generated.finish_reasons.at(c);
    out.completion_tokens += static_cast<int64_t>(choice.ids.size());
    // Per-token text (special tokens count as empty text): concatenated, it is the decoded completion.
    std::vector<std::string> pieces;
    for (int64_t id : choice.ids) pieces.push_back(decode_one(tokenizer, id, /*skip_special=*/true));
    std::vector<int32_t> ids32(choice.ids.begin(), choice.ids.end());
    choice.text = tokenizer.decode(ids32, /*skip_special_tokens=*/true);
    // OpenAI's stop strings: the text ends right before the earliest one, which is not returned.
    size_t cut = std::string::npos;
    for (const auto& s : settings.stop)
      if (size_t at = choice.text.find(s); at != std::string::npos) cut = std::min(cut, at);
    size_t kept_tokens = choice.ids.size();
    if (cut != std::string::npos) {
      choice.text.resize(cut);
      choice.finish_reason = "stop";
      size_t offset = 0;
      kept_tokens = 0;
      while (kept_tokens < pieces.size() && offset < cut) offset += pieces[kept_tokens++].size();
    }
    if (settings.top_logprobs >= 0 && kept_tokens > 0) {
      // One teacher-forced forward over prompt + completion: position p's logits predict token p + 1.
      std::vector<int64_t> all = prompt_ids;
      all.insert(all.end(), choice.ids.begin(), choice.ids.begin() + static_cast<int64_t>(kept_tokens) - 1);
      models::ForwardOptions forward_options;
      forward_options.logits = models::LogitsMode::All;
      at::NoGradGuard no_grad;
      at::Tensor logits = model.forward(all, nullptr, forward_options).logits;  // [1, T, V]
      at::Tensor logprobs = at::log_softmax(
          logits[0].slice(0, static_cast<int64_t>(prompt_ids.size()) - 1).to(at::kCPU).to(at::kDouble), -1);
      const int64_t k = std::min<int64_t>(settings.top_logprobs, logprobs.size(1));
      at::Tensor top_values, top_indices;
      if (k > 0) std::tie(top_values, top_indices) = logprobs.topk(k, -1, /*largest=*/true, /*sorted=*/true);
      for (size_t t = 0; t < kept_tokens; ++t) {
        GeneratedToken token;
        token.id = choice.ids[t];
        token.text = decode_one(tokenizer, token.id);
        token.logprob = logprobs[static_cast<int64_t>(t)][token.id].item<double>();
        if (k > 0) {
          at::Tensor values = top_values[static_cast<int64_t>(t)].contiguous();
          at::Tensor indices = top_indices[static_cast<int64_t>(t)].contiguous();
          const double* v = values.data_ptr<double>();
          const int64_t* i = indices.data_ptr<int64_t>();
          for (int64_t j = 0; j < k; ++j) token.top.emplace_back(i[j], v[j]);
        }
        choice.tokens.push_back(std::move(token));
      }
    }
    out.choices.push_back(std::move(choice));
  }
  return out;
}

namespace {

// The length of `text` without a trailing UTF-8 sequence that is not complete yet.
size_t complete_utf8_prefix(const std::string& text) {
  size_t end = text.size();
  for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back for the lead byte
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > back) end = text.size() - back;
    break;
  }
  return end;
}

}  // namespace

void stream_completion(const models::LlamaModel& model, const text::Tokenizer& tokenizer,
                       const std::vector<int64_t>& prompt_ids, const CompletionSettings& settings, bool chat,
                       const std::string& model_name, const std::string& id,
                       const std::function<bool(const std::string&)>& write) {
  const int64_t created = unix_seconds();
  auto chunk = [&](const std::string& text, const json& finish) {
    json choice = chat ? json{{"index", 0}, {"delta", json::object()}, {"finish_reason", finish}}
                       : json{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish}};
    if (chat && !text.empty()) choice["delta"]["content"] = text;
    return json{{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model_name},
                {"choices", json::array({choice})}};
  };
  auto send = [&](const json& payload) {
    return write("data: " + payload.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
  };
  size_t holdback = 0;  // a stop string may still be forming in the last (longest stop - 1) bytes
  for (const auto& s : settings.stop) holdback = std::max(holdback, s.size() - 1);

  bool client_gone = false;
  size_t released = 0;
  std::string text;
  size_t cut = std::string::npos;
  if (chat) client_gone = !send(json{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created},
                                     {"model", model_name},
                                     {"choices", json::array({{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                               {"finish_reason", nullptr}}})}});
  models::GenerationOptions options = settings.generation;
  if (auto pad = tokenizer.pad_id()) options.pad_id = *pad;
  options.should_stop = [&](size_t, const std::vector<int64_t>& ids) {
    if (client_gone) return true;
    text = tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.end()), /*skip_special_tokens=*/true);
    for (const auto& s : settings.stop)
      if (size_t at = text.find(s); at != std::string::npos) cut = std::min(cut, at);
    size_t ready = cut != std::string::npos ? cut : (text.size() > holdback ? text.size() - holdback : 0);
    ready = complete_utf8_prefix(text.substr(0, ready));
    if (ready > released) {
      client_gone = !send(chunk(text.substr(released, ready - released), nullptr));
      released = ready;
    }
    return cut != std::string::npos || client_gone;
  };
  const models::GenerationResult generated = models::generate(model, {prompt_ids}, options);
  if (client_gone) return;
  std::string finish = generated.finish_reasons.at(0);
  const std::vector<int64_t>& ids = generated.new_ids.at(0);
  text = tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.end()), /*skip_special_tokens=*/true);
  if (cut != std::string::npos) {
    text.resize(cut);
    finish = "stop";
  }
  if (text.size() > released && !send(chunk(text.substr(released), nullptr))) return;
  json last = chunk("", finish);
  const int64_t completion_tokens = static_cast<int64_t>(ids.size());
  last["usage"] = {{"prompt_tokens", prompt_ids.size()},
                   {"completion_tokens", completion_tokens},
                   {"total_tokens", static_cast<int64_t>(prompt_ids.size()) + completion_tokens}};
  if (send(last)) write("data: [DONE]\n\n");
}

json completion_response(const GeneratedCompletion& completion, const CompletionSettings& settings,
                         const text::Tokenizer& tokenizer, const std::string& model, const std::string& id,
                         size_t prompt_chars) {
  json choices = json::array();
  for (size_t c = 0; c < completion.choices.size(); ++c) {
    const GeneratedChoice& g = completion.choices[c];
    json choice = {{"text", g.text}, {"index", c}, {"logprobs", nullptr}, {"finish_reason", g.finish_reason}};
    if (settings.top_logprobs >= 0) {
      json tokens = json::array(), token_logprobs = json::array(), tops = json::array(), offsets = json::array();
      size_t offset = prompt_chars;
      for (const auto& t : g.tokens) {
        tokens.push_back(t.text);
        token_logprobs.push_back(t.logprob);
        offsets.push_back(offset);
        offset += decode_one(tokenizer, t.id, true).size();
        // A JSON object keyed by token text, as OpenAI's legacy shape is (texts that collide keep the likeliest).
        json top = json::object();
        for (const auto& [top_id, lp] : t.top) {
          std::string key = decode_one(tokenizer, top_id);
          if (!top.contains(key)) top[key] = lp;
        }
        tops.push_back(std::move(top));
      }
      choice["logprobs"] = {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", tops},
                            {"text_offset", offsets}};
    }
    choices.push_back(std::move(choice));
  }
  return {{"id", id},
          {"object", "text_completion"},
          {"created", unix_seconds()},
          {"model", model},
          {"choices", choices},
          {"usage",
           {{"prompt_tokens", completion.prompt_tokens},
            {"completion_tokens", completion.completion_tokens},
            {"total_tokens", completion.prompt_tokens + completion.completion_tokens}}}};
}

json chat_response(const GeneratedCompletion& completion, const CompletionSettings& settings,
                   const text::Tokenizer& tokenizer, const std::string& model, const std::string& id) {
  json choices = json::array();
  for (size_t c = 0; c < completion.choices.size(); ++c) {
    const GeneratedChoice& g = completion.choices[c];
    json choice = {{"index", c},
                   {"message", {{"role", "assistant"}, {"content", g.text}}},
                   {"logprobs", nullptr},
                   {"finish_reason", g.finish_reason}};
    if (settings.top_logprobs >= 0) {
      json content = json::array();
      for (const auto& t : g.tokens) {
        json top = json::array();
        for (const auto& [top_id, lp] : t.top) {
          const std::string text = decode_one(tokenizer, top_id);
          top.push_back({{"token", text}, {"logprob", lp}, {"bytes", token_bytes(text)}});
        }
        content.push_back({{"token", t.text}, {"logprob", t.logprob}, {"bytes", token_bytes(t.text)}, {"top_logprobs", top}});
      }
      choice["logprobs"] = {{"content", content}};
    }
    choices.push_back(std::move(choice));
  }
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", unix_seconds()},
          {"model", model},
          {"choices", choices},
          {"usage",
           {{"prompt_tokens", completion.prompt_tokens},
            {"completion_tokens", completion.completion_tokens},
            {"total_tokens", completion.prompt_tokens + completion.completion_tokens}}}};
}

}  // namespace guardkit::serve
