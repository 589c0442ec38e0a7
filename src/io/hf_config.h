// A Hugging Face config.json with typed getters. Model code builds its config structs on it:
//   HfConfig cfg = HfConfig::load(model_dir);            // a directory (its config.json) or the file itself
//   int hidden = cfg.get<int>("hidden_size", 768);        // HF's default when the key is absent (or null)
//   int vocab = cfg.require<int>("vocab_size");           // no default: absent is an error
//   auto scaling = cfg.section("rope_scaling");          // nested object, std::nullopt when absent or null
// A present key of the wrong type is a one-line guardkit::Error naming the file and the key. An absent key and a
// JSON null are treated alike (HF reads both as None).
// Types: bool, int, int64_t, float, double, std::string, std::vector<int>, std::vector<int64_t>,
// std::vector<std::string>, std::vector<double>. A list type also accepts a single scalar, as HF allows for
// e.g. eos_token_id (128009 or [128001, 128009]).
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace guardkit::io {

class HfConfig {
 public:
  static HfConfig load(const std::filesystem::path& file_or_dir);
  // Parses JSON text; `origin` names it in errors (a file name).
  static HfConfig parse(const std::string& text, const std::string& origin);

  bool has(const std::string& key) const;  // present and not null

  template <typename T>
  T get(const std::string& key, T default_value) const {
    const nlohmann::json* value = find(key);
    return value ? convert<T>(*value, key) : default_value;
  }
  template <typename T>
  T require(const std::string& key) const {
    const nlohmann::json* value = find(key);
    if (!value) fail_missing(key);
    return convert<T>(*value, key);
  }
  template <typename T>
  std::optional<T> get_optional(const std::string& key) const {
    const nlohmann::json* value = find(key);
    if (!value) return std::nullopt;
    return convert<T>(*value, key);
  }
  // A nested object (e.g. rope_scaling); errors inside it name "rope_scaling.factor".
  std::optional<HfConfig> section(const std::string& key) const;

  const nlohmann::json& json() const { return json_; }
  const std::string& origin() const { return origin_; }

 private:
  HfConfig(nlohmann::json json, std::string origin, std::string prefix)
      : json_(std::move(json)), origin_(std::move(origin)), prefix_(std::move(prefix)) {}
  const nlohmann::json* find(const std::string& key) const;
  template <typename T>
  T convert(const nlohmann::json& value, const std::string& key) const;
  [[noreturn]] void fail_missing(const std::string& key) const;

  nlohmann::json json_;
  std::string origin_;
  std::string prefix_;  // "rope_scaling." inside a section
};

// Defined in hf_config.cpp for the types listed above.
template <> bool HfConfig::convert<bool>(const nlohmann::json&, const std::string&) const;
template <> int HfConfig::convert<int>(const nlohmann::json&, const std::string&) const;
template <> int64_t HfConfig::convert<int64_t>(const nlohmann::json&, const std::string&) const;
template <> float HfConfig::convert<float>(const nlohmann::json&, const std::string&) const;
template <> double HfConfig::convert<double>(const nlohmann::json&, const std::string&) const;
template <> std::string HfConfig::convert<std::string>(const nlohmann::json&, const std::string&) const;
template <> std::vector<int> HfConfig::convert<std::vector<int>>(const nlohmann::json&, const std::string&) const;
template <>
std::vector<int64_t> HfConfig::convert<std::vector<int64_t>>(const nlohmann::json&, const std::string&) const;
template <>
std::vector<double> HfConfig::convert<std::vector<double>>(const nlohmann::json&, const std::string&) const;
template <>
std::vector<std::string> HfConfig::convert<std::vector<std::string>>(const nlohmann::json&, const std::string&) const;

}  // namespace guardkit::io
