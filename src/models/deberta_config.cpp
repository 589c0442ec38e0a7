#include "models/deberta_config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace guardkit::models {
namespace {

using nlohmann::json;

// The value of `key` when present and not null (HF reads null as None, i.e. the default).
const json* find(const json& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t get_int(const json& object, const std::string& key, int64_t fallback, const std::string& origin) {
  const json* value = find(object, key);
  if (!value) return fallback;
  if (value->is_number_integer()) return value->get<int64_t>();
  if (value->is_number_float() && value->get<double>() == static_cast<double>(static_cast<int64_t>(value->get<double>())))
    return static_cast<int64_t>(value->get<double>());
  fail("{}: '{}' must be an integer, got {}", origin, key, value->dump());
}

double get_double(const json& object, const std::string& key, double fallback, const std::string& origin) {
  const json* value = find(object, key);
  if (!value) return fallback;
  if (value->is_number()) return value->get<double>();
  fail("{}: '{}' must be a number, got {}", origin, key, value->dump());
}

bool get_bool(const json& object, const std::string& key, bool fallback, const std::string& origin) {
  const json* value = find(object, key);
  if (!value) return fallback;
  if (value->is_boolean()) return value->get<bool>();
  if (value->is_number_integer()) return value->get<int64_t>() != 0;  // Python truthiness, as getattr() uses it
  fail("{}: '{}' must be true or false, got {}", origin, key, value->dump());
}

std::string get_string(const json& object, const std::string& key, const std::string& fallback,
                       const std::string& origin) {
  const json* value = find(object, key);
  if (!value) return fallback;
  if (value->is_string()) return value->get<std::string>();
  fail("{}: '{}' must be a string, got {}", origin, key, value->dump());
}

std::string trim_lower(std::string text) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  text.erase(text.begin(), std::find_if(text.begin(), text.end(), not_space));
  text.erase(std::find_if(text.rbegin(), text.rend(), not_space).base(), text.end());
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// HF: a string "c2p|p2c" is lower-cased and split at '|'; a list is taken as is.
std::vector<std::string> split_bar(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, '|')) parts.push_back(trim_lower(part));
  if (text.empty()) parts.push_back("");
  return parts;
}

std::vector<std::string> get_string_list(const json& object, const std::string& key, const std::string& origin,
                                         bool lower) {
  const json* value = find(object, key);
  if (!value) return {};
  if (value->is_string()) return split_bar(value->get<std::string>());
  if (!value->is_array()) fail("{}: '{}' must be a string or a list of strings, got {}", origin, key, value->dump());
  std::vector<std::string> items;
  for (const json& item : *value) {
    if (!item.is_string()) fail("{}: '{}' must be a list of strings, got {}", origin, key, value->dump());
    items.push_back(lower ? trim_lower(item.get<std::string>()) : item.get<std::string>());
  }
  return items;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

}  // namespace

bool DebertaConfig::has_c2p() const { return contains(pos_att_type, "c2p"); }
bool DebertaConfig::has_p2c() const { return contains(pos_att_type, "p2c"); }
bool DebertaConfig::norm_relative_embeddings() const { return contains(norm_rel_ebd, "layer_norm"); }

bool is_known_activation(const std::string& name) {
  static const std::vector<std::string> known = {"gelu",  "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu",
                                                 "relu",  "silu",     "swish",             "tanh",      "mish",
                                                 "linear", "gelu_python"};
  return contains(known, name);
}

DebertaConfig DebertaConfig::from_json(const json& config, const std::string& origin) {
  if (!config.is_object()) fail("{}: a config must be a JSON object", origin);
  DebertaConfig c;
  c.raw = config;
  c.vocab_size = get_int(config, "vocab_size", c.vocab_size, origin);
  c.hidden_size = get_int(config, "hidden_size", c.hidden_size, origin);
  c.embedding_size = get_int(config, "embedding_size", -1, origin);
  c.num_hidden_layers = get_int(config, "num_hidden_layers", c.num_hidden_layers, origin);
  c.num_attention_heads = get_int(config, "num_attention_heads", c.num_attention_heads, origin);
  c.attention_head_size = get_int(config, "attention_head_size", -1, origin);
  c.intermediate_size = get_int(config, "intermediate_size", c.intermediate_size, origin);
  c.hidden_act = get_string(config, "hidden_act", c.hidden_act, origin);
  c.max_position_embeddings = get_int(config, "max_position_embeddings", c.max_position_embeddings, origin);
  c.type_vocab_size = get_int(config, "type_vocab_size", c.type_vocab_size, origin);
  c.layer_norm_eps = get_double(config, "layer_norm_eps", c.layer_norm_eps, origin);
  c.relative_attention = get_bool(config, "relative_attention", c.relative_attention, origin);
  c.max_relative_positions = get_int(config, "max_relative_positions", c.max_relative_positions, origin);
  c.position_buckets = get_int(config, "position_buckets", c.position_buckets, origin);
  c.pad_token_id = get_int(config, "pad_token_id", c.pad_token_id, origin);
  c.position_biased_input = get_bool(config, "position_biased_input", c.position_biased_input, origin);
  c.pos_att_type = get_string_list(config, "pos_att_type", origin, /*lower=*/false);
  c.share_att_key = get_bool(config, "share_att_key", c.share_att_key, origin);
  if (find(config, "norm_rel_ebd")) {
    const json& value = config["norm_rel_ebd"];
    if (!value.is_string()) fail("{}: 'norm_rel_ebd' must be a string, got {}", origin, value.dump());
    c.norm_rel_ebd = split_bar(value.get<std::string>());
  }
  c.conv_kernel_size = get_int(config, "conv_kernel_size", 0, origin);
  c.pooler_hidden_size = get_int(config, "pooler_hidden_size", -1, origin);
  c.pooler_hidden_act = get_string(config, "pooler_hidden_act", c.pooler_hidden_act, origin);

  // PretrainedConfig: id2label (keys are label ids as strings) fixes num_labels; else num_labels; else 2.
  if (const json* labels = find(config, "id2label")) {
    if (!labels->is_object() || labels->empty())
      fail("{}: 'id2label' must be a non-empty object {{\"0\": \"name\", ...}}", origin);
    c.num_labels = static_cast<int64_t>(labels->size());
    c.id2label.assign(c.num_labels, "");
    for (auto it = labels->begin(); it != labels->end(); ++it) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(it.key(), &used);
        if (used != it.key().size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0 || id >= c.num_labels) fail("{}: 'id2label' key '{}' is not a label id 0..{}", origin, it.key(), c.num_labels - 1);
      c.id2label[id] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    }
  } else {
    c.num_labels = get_int(config, "num_labels", 2, origin);
    for (int64_t i = 0; i < std::max<int64_t>(c.num_labels, 0); ++i) c.id2label.push_back("LABEL_" + std::to_string(i));
  }
  c.validate(origin);
  return c;
}

DebertaConfig DebertaConfig::load(const std::filesystem::path& dir_or_file) {
  const std::filesystem::path file =
      std::filesystem::is_directory(dir_or_file) ? dir_or_file / "config.json" : dir_or_file;
  std::ifstream in(file);
  if (!in) fail("{}: cannot open the model config", file.string());
  json config;
  try {
    config = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON ({})", file.string(), e.what());
  }
  return from_json(config, file.string());
}

void DebertaConfig::validate(const std::string& origin) const {
  auto positive = [&](const char* key, int64_t value) {
    if (value <= 0) fail("{}: '{}' must be positive, got {}", origin, key, value);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("intermediate_size", intermediate_size);
  positive("max_position_embeddings", max_position_embeddings);
  positive("num_labels", num_labels);
  if (head_size() <= 0) fail("{}: attention head size is 0 (hidden_size {} < num_attention_heads {})", origin, hidden_size, num_attention_heads);
  if (type_vocab_size < 0) fail("{}: 'type_vocab_size' must be >= 0, got {}", origin, type_vocab_size);
  if (layer_norm_eps <= 0) fail("{}: 'layer_norm_eps' must be positive, got {}", origin, layer_norm_eps);
  if (!is_known_activation(hidden_act)) fail("{}: unsupported hidden_act '{}'", origin, hidden_act);
  if (!is_known_activation(pooler_hidden_act)) fail("{}: unsupported pooler_hidden_act '{}'", origin, pooler_hidden_act);
  for (const std::string& type : pos_att_type)
    if (type != "c2p" && type != "p2c")
      fail("{}: unsupported pos_att_type '{}' (DeBERTa-v2 implements c2p and p2c)", origin, type);
  if (conv_kernel_size > 0)
    fail("{}: conv_kernel_size {} (DeBERTa-v2-xlarge's ConvLayer) is not supported", origin, conv_kernel_size);
  if (relative_attention && relative_span() <= 0) fail("{}: relative attention span must be positive", origin);
}

nlohmann::json DebertaConfig::to_json() const {
  json out = raw.is_object() ? raw : json::object();
  out["model_type"] = "deberta-v2";
  if (!out.contains("architectures")) out["architectures"] = {"DebertaV2ForSequenceClassification"};
  out["vocab_size"] = vocab_size;
  out["hidden_size"] = hidden_size;
  if (embedding_size > 0) out["embedding_size"] = embedding_size;
  out["num_hidden_layers"] = num_hidden_layers;
  out["num_attention_heads"] = num_attention_heads;
  if (attention_head_size > 0) out["attention_head_size"] = attention_head_size;
  out["intermediate_size"] = intermediate_size;
  out["hidden_act"] = hidden_act;
  out["max_position_embeddings"] = max_position_embeddings;
  out["type_vocab_size"] = type_vocab_size;
  out["layer_norm_eps"] = layer_norm_eps;
  out["relative_attention"] = relative_attention;
  out["max_relative_positions"] = max_relative_positions;
  out["position_buckets"] = position_buckets;
  out["pad_token_id"] = pad_token_id;
  out["position_biased_input"] = position_biased_input;
  out["pos_att_type"] = pos_att_type;
  out["share_att_key"] = share_att_key;
  std::string norm;
  for (size_t i = 0; i < norm_rel_ebd.size(); ++i) norm += (i ? "|" : "") + norm_rel_ebd[i];
  out["norm_rel_ebd"] = norm;
  out["pooler_hidden_size"] = pooler_size();
  out["pooler_hidden_act"] = pooler_hidden_act;
  json id2label_json = json::object(), label2id_json = json::object();
  for (int64_t i = 0; i < num_labels; ++i) {
    const std::string name = i < static_cast<int64_t>(id2label.size()) ? id2label[i] : "LABEL_" + std::to_string(i);
    id2label_json[std::to_string(i)] = name;
    label2id_json[name] = i;
  }
  out["id2label"] = id2label_json;
  out["label2id"] = label2id_json;
  out.erase("num_labels");
  return out;
}

}  // namespace guardkit::models
