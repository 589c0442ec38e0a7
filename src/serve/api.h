// Request parsing and validation for the guard server's JSON API, independent of the HTTP library: every bad input
// becomes an ApiError carrying the HTTP status and the OpenAI-style error body {"error":{"message","type","code"}}.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "guard/guard.h"
#include "util/error.h"

namespace guardkit::serve {

class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string code, const std::string& message)
      : Error(message), status(status), type(std::move(type)), code(std::move(code)) {}
  int status;
  std::string type;  // "invalid_request_error", "authentication_error", "rate_limit_error", "server_error", ...
  std::string code;  // machine-readable: "invalid_json", "too_many_inputs", "model_not_found", ...
};

// 400 invalid_request_error with `code`.
[[noreturn]] void bad_request(const std::string& code, const std::string& message);

// {"error":{"message":..., "type":..., "code":...}}
nlohmann::json error_body(const std::string& message, const std::string& type, const std::string& code);

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). Returns the byte offset of the first invalid
// sequence, or npos when the text is valid.
size_t find_invalid_utf8(std::string_view text);

// Parses a request body that must be a JSON object: invalid UTF-8, malformed JSON and non-objects are 400s.
nlohmann::json parse_json_object(const std::string& body);

struct ModerationRequest {
  std::optional<std::string> model;
  std::vector<std::string> inputs;
};
// OpenAI's shape: {"input": "text" | ["text", ...] | [{"type":"text","text":...}, ...], "model"?: "name"}.
ModerationRequest parse_moderation_request(const nlohmann::json& body, size_t max_inputs);

enum class RoutingPolicy { kSmall, kLarge, kSafeRoute };
const char* policy_name(RoutingPolicy policy);

struct GuardRequest {
  std::optional<std::string> model;   // a served guard by name: scores with it directly, no routing
  guard::Conversation conversation;
  std::optional<RoutingPolicy> policy;  // absent: the server's default
  std::optional<double> epsilon;        // saferoute: route to the large guard when router score >= epsilon
  std::optional<double> budget;         // saferoute: target share of large-guard calls in (0, 1]
  bool categories = false;              // ask the guard to name categories when unsafe
};
// {"messages":[{"role":"user"|"assistant","content":"..."}...]} or {"prompt":"...","response"?:"..."}, plus
// "model"?, "policy"?: "small"|"large"|"saferoute", "epsilon"?, "budget"?, "categories"?: bool.
GuardRequest parse_guard_request(const nlohmann::json& body);

}  // namespace guardkit::serve
