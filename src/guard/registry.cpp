#include "guard/registry.h"

#include "route/routed_guard.h"
#include "route/router.h"

#include <cstdlib>
#include <set>

#include "guard/classifier_guard.h"
#include "guard/llama_guard.h"
#include "guard/remote_guard.h"
#include "models/runtime.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::guard {

namespace fs = std::filesystem;
using nlohmann::json;

const char* guard_kind_name(GuardKind kind) {
  switch (kind) {
    case GuardKind::kClassifier: return "classifier";
    case GuardKind::kLlamaGuard: return "llama_guard";
    case GuardKind::kRemote: return "remote";
    case GuardKind::kRouted: return "routed";
  }
  return "?";
}

namespace {

GuardKind parse_kind(const std::string& text, const std::string& where) {
  if (text == "classifier") return GuardKind::kClassifier;
  if (text == "llama_guard") return GuardKind::kLlamaGuard;
  if (text == "remote") return GuardKind::kRemote;
  if (text == "routed") return GuardKind::kRouted;
  fail("{}: unknown kind '{}' (classifier, llama_guard or remote)", where, text);
}

// Checked here, without libtorch, so a typo is reported when the file is read rather than when the model loads.
void check_dtype(const std::string& dtype, const std::string& where) {
  static const std::set<std::string> kKnown = {"float32", "fp32", "bfloat16", "bf16", "float16", "fp16"};
  if (!kKnown.count(dtype)) fail("{}: unknown dtype '{}' (float32, bfloat16 or float16)", where, dtype);
}
void check_device(const std::string& device, const std::string& where) {
  if (device == "cpu" || device == "cuda") return;
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5 &&
      device.find_first_not_of("0123456789", 5) == std::string::npos)
    return;
  fail("{}: unknown device '{}' (cpu, cuda or cuda:N)", where, device);
}

}  // namespace

ModelSpec model_spec_from_json(const json& entry, const fs::path& base_dir, const std::string& where) {
  if (!entry.is_object()) fail("{}: expected an object", where);
  static const std::set<std::string> kKeys = {"name", "kind", "path", "url", "dtype", "threshold", "max_length",
                                              "device", "config", "options"};
  for (const auto& [key, value] : entry.items())
    if (!kKeys.count(key)) fail("{}: unknown field '{}' (kind-specific settings go in 'options')", where, key);

  auto string_of = [&](const char* key, bool required) -> std::string {
    auto it = entry.find(key);
    if (it == entry.end() || it->is_null()) {
      if (required) fail("{}: missing '{}'", where, key);
      return "";
    }
    if (!it->is_string()) fail("{}: '{}' must be a string", where, key);
    return it->get<std::string>();
  };

  ModelSpec spec;
  spec.name = string_of("name", true);
  if (spec.name.empty()) fail("{}: 'name' is empty", where);
  const std::string at = fmt::format("{} ('{}')", where, spec.name);
  spec.kind = parse_kind(string_of("kind", true), at);
  if (spec.kind == GuardKind::kRemote) {
    spec.url = string_of("url", true);
    if (spec.url.rfind("http://", 0) != 0 && spec.url.rfind("https://", 0) != 0)
      fail("{}: 'url' must start with http:// or https://, got '{}'", at, spec.url);
  } else {
    std::string path = string_of("path", true);
    spec.path = fs::path(path).is_absolute() ? fs::path(path) : base_dir / path;
  }
  if (std::string config = string_of("config", false); !config.empty())
    spec.config = fs::path(config).is_absolute() ? fs::path(config) : base_dir / config;
  else if (!spec.path.empty())
    spec.config = spec.path / "config.json";
  if (std::string dtype = string_of("dtype", false); !dtype.empty()) spec.dtype = dtype;
  check_dtype(spec.dtype, at);
  if (std::string device = string_of("device", false); !device.empty()) spec.device = device;
  check_device(spec.device, at);
  if (auto it = entry.find("threshold"); it != entry.end()) {
    if (!it->is_number() || it->get<double>() < 0.0 || it->get<double>() > 1.0)
      fail("{}: 'threshold' must be a number in [0, 1]", at);
    spec.threshold = it->get<double>();
  }
  if (auto it = entry.find("max_length"); it != entry.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0) fail("{}: 'max_length' must be a non-negative integer", at);
    spec.max_length = it->get<int64_t>();
  }
  if (auto it = entry.find("options"); it != entry.end()) {
    if (!it->is_object()) fail("{}: 'options' must be an object", at);
    spec.options = *it;
  }
  return spec;
}

ModelRegistry ModelRegistry::from_json(const json& document, const fs::path& base_dir, const std::string& source) {
  const json* list = &document;
  if (document.is_object()) {
    auto it = document.find("models");
    if (it == document.end()) fail("{}: expected {{\"models\": [...]}} or a list of models", source);
    list = &*it;
  }
  if (!list->is_array()) fail("{}: 'models' must be a list", source);
  ModelRegistry registry;
  registry.source_ = source;
  std::set<std::string> names;
  for (size_t i = 0; i < list->size(); ++i) {
    ModelSpec spec = model_spec_from_json((*list)[i], base_dir, fmt::format("{}: model {}", source, i + 1));
    if (!names.insert(spec.name).second) fail("{}: model name '{}' appears twice", source, spec.name);
    registry.specs_.push_back(std::move(spec));
  }
  return registry;
}

ModelRegistry ModelRegistry::from_file(const fs::path& path) {
  json document;
  try {
    document = json::parse(read_file(path));
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
  return from_json(document, path.parent_path(), path.string());
}

ModelRegistry ModelRegistry::load_default(const std::string& explicit_path) {
  if (!explicit_path.empty()) return from_file(explicit_path);
  if (const char* env = std::getenv("GUARDKIT_MODELS"); env && *env) return from_file(env);
  if (fs::is_regular_file("models.json")) return from_file("models.json");
  return ModelRegistry();
}

ModelSpec ModelRegistry::resolve(const std::string& name_or_path) const {
  for (const auto& spec : specs_)
    if (spec.name == name_or_path) return spec;
  const fs::path dir(name_or_path);
  if (fs::is_regular_file(dir / "config.json")) {
    json config;
    try {
      config = json::parse(read_file(dir / "config.json"));
    } catch (const json::parse_error& e) {
      fail("{}: not valid JSON ({})", (dir / "config.json").string(), e.what());
    }
    const std::string model_type = config.is_object() ? config.value("model_type", std::string()) : std::string();
    ModelSpec spec;
    spec.name = dir.filename().empty() ? dir.parent_path().filename().string() : dir.filename().string();
    spec.path = dir;
    spec.config = dir / "config.json";
    if (model_type.rfind("deberta", 0) == 0) {
      spec.kind = GuardKind::kClassifier;
    } else if (model_type == "llama") {
      spec.kind = GuardKind::kLlamaGuard;
    } else {
      fail("{}: model_type '{}' is neither a DeBERTa classifier nor a Llama Guard; describe it in a models file",
           (dir / "config.json").string(), model_type);
    }
    return spec;
  }
  std::string names;
  for (const auto& spec : specs_) names += (names.empty() ? "" : ", ") + spec.name;
  fail("unknown model '{}': not in {} ({}) and not a model directory", name_or_path,
       source_.empty() ? "a models file (--models, $GUARDKIT_MODELS or ./models.json)" : source_,
       names.empty() ? "no models" : names);
}

std::shared_ptr<Guard> ModelRegistry::guard(const std::string& name_or_path) {
  {
    std::lock_guard<std::mutex> lock(loaded_->mutex);
    if (auto it = loaded_->guards.find(name_or_path); it != loaded_->guards.end()) return it->second;
  }
  const ModelSpec spec = resolve(name_or_path);
  std::shared_ptr<Guard> guard;
  if (spec.kind == GuardKind::kRouted) {
    // SafeRoute over two other entries of this file: they are loaded (once) through the registry itself.
    auto name_option = [&](const char* key) {
      if (!spec.options.contains(key) || !spec.options[key].is_string())
        fail("model '{}': kind routed needs option '{}' naming another model", spec.name, key);
      return spec.options[key].get<std::string>();
    };
    for (const auto& [key, value] : spec.options.items())
      if (key != "small" && key != "large" && key != "epsilon")
        fail("model '{}': unknown option '{}' for kind routed (small, large, epsilon)", spec.name, key);
    const std::string small_name = name_option("small"), large_name = name_option("large");
    if (small_name == spec.name || large_name == spec.name) fail("model '{}': a routed model cannot route to itself", spec.name);
    auto small = this->guard(small_name);
    auto large = this->guard(large_name);
    auto router = std::make_shared<route::SafeRouteRouter>(route::SafeRouteRouter::load(spec.path));
    double epsilon = router->default_threshold();
    if (spec.options.contains("epsilon")) {
      if (!spec.options["epsilon"].is_number()) fail("model '{}': option 'epsilon' must be a number", spec.name);
      epsilon = spec.options["epsilon"].get<double>();
    }
    guard = std::make_shared<route::RoutedGuard>(small, large, router, epsilon, spec.name);
  } else {
    guard = make_guard(spec);
  }
  std::lock_guard<std::mutex> lock(loaded_->mutex);
  auto [it, inserted] = loaded_->guards.emplace(name_or_path, guard);
  return it->second;  // a concurrent loader may have won: everyone shares its guard
}

namespace {

// Reads the kind-specific `options` of a spec; every key must be consumed, so a typo is an error, not a silent default.
class OptionReader {
 public:
  explicit OptionReader(const ModelSpec& spec) : spec_(spec) {}

  bool has(const char* key) {
    used_.insert(key);
    return spec_.options.contains(key);
  }
  bool boolean(const char* key, bool fallback) {
    if (!has(key)) return fallback;
    const json& v = spec_.options[key];
    if (!v.is_boolean()) fail("model '{}': option '{}' must be true or false", spec_.name, key);
    return v.get<bool>();
  }
  int64_t integer(const char* key, int64_t fallback, int64_t minimum) {
    if (!has(key)) return fallback;
    const json& v = spec_.options[key];
    if (!v.is_number_integer() || v.get<int64_t>() < minimum)
      fail("model '{}': option '{}' must be an integer >= {}", spec_.name, key, minimum);
    return v.get<int64_t>();
  }
  double number(const char* key, double fallback, double minimum) {
    if (!has(key)) return fallback;
    const json& v = spec_.options[key];
    if (!v.is_number() || v.get<double>() < minimum)
      fail("model '{}': option '{}' must be a number >= {}", spec_.name, key, minimum);
    return v.get<double>();
  }
  std::string choice(const char* key, const std::string& fallback, const std::set<std::string>& allowed) {
    if (!has(key)) return fallback;
    const json& v = spec_.options[key];
    if (!v.is_string() || !allowed.count(v.get<std::string>())) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail("model '{}': option '{}' must be one of {}", spec_.name, key, list);
    }
    return v.get<std::string>();
  }
  const json& raw(const char* key) {
    used_.insert(key);
    return spec_.options[key];
  }
  void check_all_used() const {
    for (const auto& [key, value] : spec_.options.items())
      if (!used_.count(key)) fail("model '{}': unknown option '{}' for kind {}", spec_.name, key, guard_kind_name(spec_.kind));
  }

 private:
  const ModelSpec& spec_;
  std::set<std::string> used_;
};

std::unique_ptr<Guard> make_classifier_guard(const ModelSpec& spec) {
  OptionReader read(spec);
  ClassifierGuardOptions options;
  options.name = spec.name;
  options.threshold = spec.threshold;
  if (spec.max_length > 0) options.max_length = static_cast<size_t>(spec.max_length);
  options.dtype = models::parse_dtype(spec.dtype);
  options.device = models::parse_device(spec.device);
  options.pair_with_empty_response = read.boolean("pair_with_empty_response", options.pair_with_empty_response);
  options.parse_special = read.boolean("parse_special", options.parse_special);
  options.unsafe_label = read.integer("unsafe_label", options.unsafe_label, 0);
  options.batch_size = static_cast<size_t>(read.integer("batch_size", static_cast<int64_t>(options.batch_size), 1));
  options.pass_overhead_tokens = read.number("pass_overhead_tokens", options.pass_overhead_tokens, 0.0);
  const std::string truncation =
      read.choice("truncation", "longest_first", {"longest_first", "only_first", "only_second", "none"});
  options.truncation = truncation == "only_first"    ? text::Truncation::OnlyFirst
                       : truncation == "only_second" ? text::Truncation::OnlySecond
                       : truncation == "none"        ? text::Truncation::None
                                                     : text::Truncation::LongestFirst;
  read.check_all_used();
  return ClassifierGuard::load(spec.path, options);
}

std::unique_ptr<Guard> make_llama_guard(const ModelSpec& spec) {
  OptionReader read(spec);
  LlamaGuardOptions options;
  options.name = spec.name;
  options.threshold = spec.threshold;
  const std::string variant = read.choice("variant", "auto", {"auto", "1b", "8b"});
  options.variant = variant == "1b"   ? LlamaGuardVariant::Guard3_1B
                    : variant == "8b" ? LlamaGuardVariant::Guard3_8B
                                      : LlamaGuardVariant::Auto;
  const std::string score = read.choice("score", "2way", {"2way", "full_vocab"});
  options.score = score == "full_vocab" ? LlamaGuardScore::FullVocab : LlamaGuardScore::TwoWay;
  options.prefix_cache = read.boolean("prefix_cache", options.prefix_cache);
  options.max_category_tokens = read.integer("max_category_tokens", options.max_category_tokens, 1);
  options.max_batch = read.integer("max_batch", options.max_batch, 1);
  if (read.has("categories")) {
    const json& list = read.raw("categories");
    if (!list.is_array()) fail("model '{}': option 'categories' must be a list of {{code, description}}", spec.name);
    for (const json& item : list) {
      if (!item.is_object() || !item.contains("code") || !item["code"].is_string() || !item.contains("description") ||
          !item["description"].is_string())
        fail("model '{}': each category needs string 'code' and 'description'", spec.name);
      options.categories.push_back(GuardCategory{item["code"].get<std::string>(), item["description"].get<std::string>()});
    }
  }
  read.check_all_used();
  if (spec.max_length > 0)
    fail("model '{}': max_length is not supported for llama_guard (the prompt is never truncated)", spec.name);
  return LlamaGuard::load(spec.path, options, spec.dtype, spec.device);
}

// options: model (the server's model name; default: the entry's name), variant ("8b"/"1b"), top_logprobs,
// when_down ("fail_closed"/"fail_open"/"throw"), tokenizer (a model directory: send token ids), timeout_s,
// max_retries, max_concurrency, max_concurrency_per_endpoint, eject_after_failures, eject_s (a fleet's URLs, comma-
// separated in "url"), api_key_env (the environment variable holding the bearer key).
std::unique_ptr<Guard> make_remote_guard(const ModelSpec& spec) {
  OptionReader read(spec);
  RemoteGuardOptions options;
  options.name = spec.name;
  options.threshold = spec.threshold;
  options.client.base_url = spec.url;
  auto string_option = [&](const char* key, const std::string& fallback) {
    if (!read.has(key)) return fallback;
    const json& v = read.raw(key);
    if (!v.is_string()) fail("model '{}': option '{}' must be a string", spec.name, key);
    return v.get<std::string>();
  };
  options.model = string_option("model", spec.name);
  options.prompt.variant = text::parse_llama_guard_variant(read.choice("variant", "8b", {"8b", "1b"}));
  options.top_logprobs = static_cast<int>(read.integer("top_logprobs", options.top_logprobs, 1));
  options.when_down = parse_when_server_down(read.choice("when_down", "fail_closed", {"fail_closed", "fail_open", "throw"}));
  options.tokenizer_dir = string_option("tokenizer", "");
  if (read.has("timeout_s")) {
    const json& v = read.raw("timeout_s");
    if (!v.is_number() || v.get<double>() <= 0) fail("model '{}': option 'timeout_s' must be a positive number", spec.name);
    options.client.timeout_s = v.get<double>();
  }
  options.client.max_retries = static_cast<int>(read.integer("max_retries", options.client.max_retries, 0));
  options.client.max_concurrency = static_cast<int>(read.integer("max_concurrency", options.client.max_concurrency, 1));
  // A fleet ("url": "http://a:8000,http://b:8000"): io/openai_client.h.
  options.client.max_concurrency_per_endpoint = static_cast<int>(
      read.integer("max_concurrency_per_endpoint", options.client.max_concurrency_per_endpoint, 0));
  options.client.eject_after_failures =
      static_cast<int>(read.integer("eject_after_failures", options.client.eject_after_failures, 1));
  if (read.has("eject_s")) {
    const json& v = read.raw("eject_s");
    if (!v.is_number() || v.get<double>() < 0) fail("model '{}': option 'eject_s' must be a number >= 0", spec.name);
    options.client.eject_s = v.get<double>();
  }
  if (std::string env = string_option("api_key_env", ""); !env.empty()) {
    const char* key = std::getenv(env.c_str());
    if (!key) fail("model '{}': environment variable {} (api_key_env) is not set", spec.name, env);
    options.client.api_key = key;
  }
  read.check_all_used();
  return std::make_unique<RemoteGuard>(options);
}

}  // namespace

std::unique_ptr<Guard> make_guard(const ModelSpec& spec) {
  switch (spec.kind) {
    case GuardKind::kClassifier: return make_classifier_guard(spec);
    case GuardKind::kLlamaGuard: return make_llama_guard(spec);
    case GuardKind::kRemote: return make_remote_guard(spec);
    case GuardKind::kRouted:
      fail("model '{}': a routed model is built by a ModelRegistry (it names other models of the file)", spec.name);
  }
  fail("model '{}': unknown kind", spec.name);
}

}  // namespace guardkit::guard
