#include "serve/api.h"

#include <fmt/format.h>

#include <cmath>

namespace guardkit::serve {

using nlohmann::json;

void bad_request(const std::string& code, const std::string& message) {
  throw ApiError(400, "invalid_request_error", code, message);
}

json error_body(const std::string& message, const std::string& type, const std::string& code) {
  return json{{"error", {{"message", message}, {"type", type}, {"code", code}}}};
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), i = 0;
  while (i < n) {
    unsigned char c = bytes[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t min_code;
    uint32_t code;
    if ((c & 0xE0) == 0xC0) length = 2, min_code = 0x80, code = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) length = 3, min_code = 0x800, code = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) length = 4, min_code = 0x10000, code = c & 0x07;
    else return i;
    if (i + length > n) return i;
    for (size_t k = 1; k < length; ++k) {
      if ((bytes[i + k] & 0xC0) != 0x80) return i;
      code = (code << 6) | (bytes[i + k] & 0x3F);
    }
    if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return i;
    i += length;
  }
  return std::string_view::npos;
}

json parse_json_object(const std::string& body) {
  if (body.empty()) bad_request("empty_body", "the request body is empty; send a JSON object");
  if (size_t at = find_invalid_utf8(body); at != std::string_view::npos)
    bad_request("invalid_utf8", fmt::format("the request body is not valid UTF-8 (byte offset {})", at));
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::parse_error& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] "; keep the useful part.
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    bad_request("invalid_json", "the request body is not valid JSON: " + what);
  }
  if (!parsed.is_object()) bad_request("invalid_json", "the request body must be a JSON object");
  return parsed;
}

namespace {

const char* json_type_name(const json& value) { return value.type_name(); }

std::optional<std::string> optional_string(const json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string())
    bad_request("invalid_type", fmt::format("'{}' must be a string, got {}", field, json_type_name(*it)));
  return it->get<std::string>();
}

// A message content: a string, or OpenAI's list of content parts of which only "text" parts are accepted.
std::string content_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const auto& part : content) {
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
        bad_request("invalid_type", fmt::format("{}: each content part must be an object with a 'type'", where));
      if (part["type"] != "text")
        bad_request("unsupported_content",
                    fmt::format("{}: content part type '{}' is not supported (text only)", where,
                                part["type"].get<std::string>()));
      if (!part.contains("text") || !part["text"].is_string())
        bad_request("invalid_type", fmt::format("{}: a text part needs a string 'text'", where));
      if (!text.empty()) text += "\n";
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad_request("invalid_type",
              fmt::format("{} must be a string or a list of text parts, got {}", where, json_type_name(content)));
}

bool is_blank(const std::string& text) { return text.find_first_not_of(" \t\r\n") == std::string::npos; }

}  // namespace

ModerationRequest parse_moderation_request(const json& body, size_t max_inputs) {
  ModerationRequest request;
  request.model = optional_string(body, "model");
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) bad_request("missing_input", "'input' is required");
  if (input->is_string()) {
    request.inputs.push_back(input->get<std::string>());
  } else if (input->is_array()) {
    if (input->empty()) bad_request("empty_input", "'input' is an empty list");
    if (input->size() > max_inputs)
      bad_request("too_many_inputs",
                  fmt::format("'input' has {} items; at most {} are accepted per request", input->size(), max_inputs));
    for (size_t i = 0; i < input->size(); ++i) {
      const json& item = (*input)[i];
      if (item.is_string()) {
        request.inputs.push_back(item.get<std::string>());
      } else if (item.is_object()) {
        request.inputs.push_back(content_text(json::array({item}), fmt::format("input[{}]", i)));
      } else {
        bad_request("invalid_type",
                    fmt::format("input[{}] must be a string or a text part, got {}", i, json_type_name(item)));
      }
    }
  } else {
    bad_request("invalid_type",
                fmt::format("'input' must be a string or a list of strings, got {}", json_type_name(*input)));
  }
  for (size_t i = 0; i < request.inputs.size(); ++i)
    if (is_blank(request.inputs[i]))
      bad_request("empty_input", request.inputs.size() == 1 ? std::string("'input' is empty")
                                                            : fmt::format("input[{}] is empty", i));
  return request;
}

const char* policy_name(RoutingPolicy policy) {
  switch (policy) {
    case RoutingPolicy::kSmall: return "small";
    case RoutingPolicy::kLarge: return "large";
    case RoutingPolicy::kSafeRoute: return "saferoute";
  }
  return "?";
}

GuardRequest parse_guard_request(const json& body) {
  GuardRequest request;
  request.model = optional_string(body, "model");

  auto messages = body.find("messages");
  bool has_messages = messages != body.end() && !messages->is_null();
  bool has_prompt = body.contains("prompt") && !body["prompt"].is_null();
  if (has_messages && has_prompt) bad_request("invalid_request", "send either 'messages' or 'prompt', not both");
  if (has_messages) {
    if (!messages->is_array())
      bad_request("invalid_type", fmt::format("'messages' must be a list, got {}", json_type_name(*messages)));
    if (messages->empty()) bad_request("empty_input", "'messages' is empty");
    for (size_t i = 0; i < messages->size(); ++i) {
      const json& message = (*messages)[i];
      std::string where = fmt::format("messages[{}]", i);
      if (!message.is_object()) bad_request("invalid_type", where + " must be an object");
      auto role = message.find("role");
      if (role == message.end() || !role->is_string())
        bad_request("invalid_type", where + " needs a string 'role'");
      std::string role_name = role->get<std::string>();
      if (role_name != "user" && role_name != "assistant")
        bad_request("invalid_role", fmt::format("{}.role must be 'user' or 'assistant', got '{}'", where, role_name));
      auto content = message.find("content");
      if (content == message.end()) bad_request("invalid_type", where + " needs a 'content'");
      std::string text = content_text(*content, where + ".content");
      request.conversation.messages.push_back(guard::Message{role_name, std::move(text)});
    }
    bool has_user = false;
    for (const auto& m : request.conversation.messages) has_user |= m.role == "user";
    if (!has_user) bad_request("invalid_request", "'messages' needs at least one user message");
    if (is_blank(request.conversation.messages.back().content))
      bad_request("empty_input", "the last message (the one judged) is empty");
  } else if (has_prompt) {
    auto prompt = optional_string(body, "prompt");
    auto response = optional_string(body, "response");
    if (is_blank(*prompt) && (!response || is_blank(*response))) bad_request("empty_input", "'prompt' is empty");
    if (response && is_blank(*response)) bad_request("empty_input", "'response' is empty");
    request.conversation = guard::Conversation::from_pair(*prompt, response);
  } else {
    bad_request("missing_input", "send 'messages' (a conversation) or 'prompt' (and optionally 'response')");
  }

  if (auto policy = optional_string(body, "policy")) {
    if (*policy == "small") request.policy = RoutingPolicy::kSmall;
    else if (*policy == "large") request.policy = RoutingPolicy::kLarge;
    else if (*policy == "saferoute") request.policy = RoutingPolicy::kSafeRoute;
    else bad_request("invalid_policy", fmt::format("'policy' must be small, large or saferoute, got '{}'", *policy));
  }
  auto number_in = [&](const char* field, double low, double high, bool low_open) -> std::optional<double> {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) bad_request("invalid_type", fmt::format("'{}' must be a number", field));
    double v = it->get<double>();
    if (!std::isfinite(v) || v > high || (low_open ? v <= low : v < low))
      bad_request("invalid_value", fmt::format("'{}' must be in {}{}, {}], got {}", field, low_open ? "(" : "[", low,
                                               high, v));
    return v;
  };
  request.epsilon = number_in("epsilon", 0.0, 1.0, false);
  request.budget = number_in("budget", 0.0, 1.0, true);
  if (request.epsilon && request.budget) bad_request("invalid_request", "send 'epsilon' or 'budget', not both");
  if ((request.epsilon || request.budget) && request.policy && *request.policy != RoutingPolicy::kSafeRoute)
    bad_request("invalid_request", "'epsilon' and 'budget' apply to policy 'saferoute' only");
  if (auto it = body.find("categories"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) bad_request("invalid_type", "'categories' must be true or false");
    request.categories = it->get<bool>();
  }
  return request;
}

}  // namespace guardkit::serve
