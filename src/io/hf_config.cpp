#include "io/hf_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "util/error.h"
#include "util/printable.h"

namespace guardkit::io {

using Json = nlohmann::json;

HfConfig HfConfig::load(const std::filesystem::path& file_or_dir) {
  const std::filesystem::path path =
      std::filesystem::is_directory(file_or_dir) ? file_or_dir / "config.json" : file_or_dir;
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the model config", path.string());
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path.string());
}

HfConfig HfConfig::parse(const std::string& text, const std::string& origin) {
  Json parsed;
  try {
    parsed = Json::parse(text);
  } catch (const Json::exception& e) {
    fail("{}: not valid JSON: {}", origin, printable(e.what()));
  }
  if (!parsed.is_object()) fail("{}: a model config must be a JSON object", origin);
  return HfConfig(std::move(parsed), origin, "");
}

const Json* HfConfig::find(const std::string& key) const {
  auto it = json_.find(key);
  if (it == json_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool HfConfig::has(const std::string& key) const { return find(key) != nullptr; }

void HfConfig::fail_missing(const std::string& key) const {
  fail("{}: required key '{}{}' is missing", origin_, prefix_, printable(key));
}

std::optional<HfConfig> HfConfig::section(const std::string& key) const {
  const Json* value = find(key);
  if (!value) return std::nullopt;
  if (!value->is_object())
    fail("{}: key '{}{}' must be an object, got {}", origin_, prefix_, printable(key), value->type_name());
  return HfConfig(*value, origin_, prefix_ + key + ".");
}

namespace {
// Integral values may be written as 768 or 768.0 (some exporters write floats); anything else is a type error.
std::optional<int64_t> as_integer(const Json& value) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      return std::nullopt;
    return value.get<int64_t>();
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}
}  // namespace

#define GUARDKIT_CONFIG_TYPE_ERROR(expected)                                                               \
  fail("{}: key '{}{}' must be {}, got {} {}", origin_, prefix_, printable(key), expected, value.type_name(), \
       printable(value.dump(), 60))

template <>
bool HfConfig::convert<bool>(const Json& value, const std::string& key) const {
  if (!value.is_boolean()) GUARDKIT_CONFIG_TYPE_ERROR("true or false");
  return value.get<bool>();
}

template <>
int64_t HfConfig::convert<int64_t>(const Json& value, const std::string& key) const {
  auto integer = as_integer(value);
  if (!integer) GUARDKIT_CONFIG_TYPE_ERROR("an integer");
  return *integer;
}

template <>
int HfConfig::convert<int>(const Json& value, const std::string& key) const {
  auto integer = as_integer(value);
  if (!integer || *integer < std::numeric_limits<int>::min() || *integer > std::numeric_limits<int>::max())
    GUARDKIT_CONFIG_TYPE_ERROR("an integer that fits in 32 bits");
  return static_cast<int>(*integer);
}

template <>
double HfConfig::convert<double>(const Json& value, const std::string& key) const {
  if (!value.is_number()) GUARDKIT_CONFIG_TYPE_ERROR("a number");
  return value.get<double>();
}

template <>
float HfConfig::convert<float>(const Json& value, const std::string& key) const {
  return static_cast<float>(convert<double>(value, key));
}

template <>
std::string HfConfig::convert<std::string>(const Json& value, const std::string& key) const {
  if (!value.is_string()) GUARDKIT_CONFIG_TYPE_ERROR("a string");
  return value.get<std::string>();
}

namespace {
template <typename T, typename Convert>
std::vector<T> convert_list(const Json& value, Convert&& convert_one) {
  std::vector<T> out;
  if (!value.is_array()) {
    out.push_back(convert_one(value));
    return out;
  }
  for (const Json& item : value) out.push_back(convert_one(item));
  return out;
}
}  // namespace

template <>
std::vector<int> HfConfig::convert<std::vector<int>>(const Json& value, const std::string& key) const {
  return convert_list<int>(value, [&](const Json& item) { return convert<int>(item, key); });
}

template <>
std::vector<int64_t> HfConfig::convert<std::vector<int64_t>>(const Json& value, const std::string& key) const {
  return convert_list<int64_t>(value, [&](const Json& item) { return convert<int64_t>(item, key); });
}

template <>
std::vector<double> HfConfig::convert<std::vector<double>>(const Json& value, const std::string& key) const {
  return convert_list<double>(value, [&](const Json& item) { return convert<double>(item, key); });
}

template <>
std::vector<std::string> HfConfig::convert<std::vector<std::string>>(const Json& value, const std::string& key) const {
  return convert_list<std::string>(value, [&](const Json& item) { return convert<std::string>(item, key); });
}

}  // namespace guardkit::io
