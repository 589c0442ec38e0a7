// The models configuration file: every guard the CLI and the server can use, described once and loaded once.
//   {"models": [
//     {"name": "harmaug", "kind": "classifier", "path": "models/HarmAug-Guard", "dtype": "bf16",
//      "threshold": 0.5, "max_length": 1024, "device": "cpu"},
//     {"name": "llama-guard-3-1b", "kind": "llama_guard", "path": "models/Llama-Guard-3-1B", "dtype": "bf16"},
//     {"name": "llama-guard-3-8b", "kind": "remote", "url": "http://127.0.0.1:8000",
//      "config": "models/Llama-Guard-3-8B/config.json", "options": {"model": "meta-llama/Llama-Guard-3-8B"}}
//   ]}
// (a bare list of models is accepted too). Relative paths are resolved against the file's folder. `options` holds
// kind-specific settings that the guard of that kind reads. A model directory can also be named directly where a
// model name goes: its config.json's model_type picks the kind (deberta* -> classifier, llama -> llama_guard).
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "guard/guard.h"

namespace guardkit::guard {

// kRouted: SafeRoute between two other models of the file; `path` is the router directory (guardkit route train),
// options {"small": name, "large": name, "epsilon": ε (default: the router's saved threshold)}.
enum class GuardKind { kClassifier, kLlamaGuard, kRemote, kRouted };
const char* guard_kind_name(GuardKind kind);  // "classifier", "llama_guard", "remote", "routed"

struct ModelSpec {
  std::string name;
  GuardKind kind = GuardKind::kClassifier;
  std::filesystem::path path;  // classifier, llama_guard: the Hugging Face model directory
  std::string url;             // remote: base URL of the OpenAI-compatible server
  std::string dtype = "float32";
  double threshold = 0.5;
  int64_t max_length = 0;      // tokens; 0 = the kind's default
  std::string device = "cpu";
  // config.json whose shape estimates FLOPs when the guard reports none (a remote guard); default: path/config.json.
  std::filesystem::path config;
  nlohmann::json options = nlohmann::json::object();  // kind-specific
};

// Validates one entry; `where` prefixes errors ("models.json: model 2"). Relative paths resolve against base_dir.
ModelSpec model_spec_from_json(const nlohmann::json& entry, const std::filesystem::path& base_dir,
                               const std::string& where);

// Builds the guard a spec describes. Throws guardkit::Error naming the model when its kind is not available in this
// build or its files are wrong.
std::unique_ptr<Guard> make_guard(const ModelSpec& spec);

class ModelRegistry {
 public:
  ModelRegistry() = default;
  // Parses and validates the whole file (unique names, known kinds, required fields) before anything is loaded.
  static ModelRegistry from_file(const std::filesystem::path& path);
  static ModelRegistry from_json(const nlohmann::json& document, const std::filesystem::path& base_dir,
                                 const std::string& source);
  // --models if given, else $GUARDKIT_MODELS, else ./models.json if it exists, else an empty registry (model
  // directories can still be named directly).
  static ModelRegistry load_default(const std::string& explicit_path = "");

  const std::vector<ModelSpec>& specs() const { return specs_; }
  // The spec of a configured name, or of a model directory named directly. Throws listing the configured names.
  ModelSpec resolve(const std::string& name_or_path) const;
  // Loads the guard on first use and shares it afterwards (thread-safe).
  std::shared_ptr<Guard> guard(const std::string& name_or_path);

 private:
  std::vector<ModelSpec> specs_;
  std::string source_;
  // Loaded guards, shared by copies of the registry (a registry is a value; the models it loaded are not copied).
  struct Loaded {
    std::mutex mutex;
    std::map<std::string, std::shared_ptr<Guard>> guards;
  };
  std::shared_ptr<Loaded> loaded_ = std::make_shared<Loaded>();
};

}  // namespace guardkit::guard
