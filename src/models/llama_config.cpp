#include "models/llama_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/paths.h"

namespace guardkit::models {

namespace {

// A field read with its default when absent or null; a wrong JSON type is an error naming the field.
template <typename T>
T field(const nlohmann::json& json, const char* name, T fallback, const std::string& origin) {
  auto it = json.find(name);
  if (it == json.end() || it->is_null()) return fallback;
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!it->is_boolean()) throw std::runtime_error("not a boolean");
    } else if constexpr (std::is_integral_v<T>) {
      if (!it->is_number_integer()) throw std::runtime_error("not an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!it->is_number()) throw std::runtime_error("not a number");
    }
    return it->get<T>();
  } catch (const std::exception&) {
    fail("{}: field '{}' has an unexpected value {}", origin, name, it->dump());
  }
}

// `bos_token_id` / `eos_token_id` / `pad_token_id`: null, an int, or (eos) a list of ints.
std::vector<int64_t> token_ids(const nlohmann::json& json, const char* name, std::vector<int64_t> fallback,
                               const std::string& origin) {
  auto it = json.find(name);
  if (it == json.end()) return fallback;
  if (it->is_null()) return {};
  if (it->is_number_integer()) return {it->get<int64_t>()};
  if (it->is_array()) {
    std::vector<int64_t> ids;
    for (const auto& id : *it) {
      if (!id.is_number_integer()) fail("{}: field '{}' must hold integers, got {}", origin, name, it->dump());
      ids.push_back(id.get<int64_t>());
    }
    return ids;
  }
  fail("{}: field '{}' must be an integer or a list of integers, got {}", origin, name, it->dump());
}

// `max_position_embeddings` is needed by yarn, whose factor transformers 4.57 derives from it when the block names
// the original context length.
RopeScaling parse_rope_scaling(const nlohmann::json& json, int64_t max_position_embeddings, const std::string& origin) {
  RopeScaling scaling;
  auto it = json.find("rope_scaling");
  if (it == json.end() || it->is_null()) return scaling;
  if (!it->is_object()) fail("{}: 'rope_scaling' must be an object or null, got {}", origin, it->dump());
  const nlohmann::json& block = *it;
  // transformers >= 4.43 writes "rope_type"; older configs "type".
  std::string type = field<std::string>(block, "rope_type", field<std::string>(block, "type", "", origin), origin);
  if (type == "default" || type.empty()) return scaling;
  scaling.factor = field<double>(block, "factor", 1.0, origin);
  if (!(scaling.factor >= 1.0)) fail("{}: rope_scaling.factor must be >= 1, got {}", origin, scaling.factor);
  if (type == "linear") {
    scaling.kind = RopeScaling::Kind::Linear;
  } else if (type == "llama3") {
    scaling.kind = RopeScaling::Kind::Llama3;
    scaling.low_freq_factor = field<double>(block, "low_freq_factor", 1.0, origin);
    scaling.high_freq_factor = field<double>(block, "high_freq_factor", 4.0, origin);
    scaling.original_max_position_embeddings =
        field<int64_t>(block, "original_max_position_embeddings", 8192, origin);
    if (!(scaling.high_freq_factor > scaling.low_freq_factor))
      fail("{}: rope_scaling high_freq_factor ({}) must exceed low_freq_factor ({})", origin,
           scaling.high_freq_factor, scaling.low_freq_factor);
  } else if (type == "yarn") {
    // As transformers 4.57 `_compute_yarn_parameters`: a given original context length replaces the factor by
    // max_position_embeddings / original (DeepSeek-V3 convention); `or` defaults for the betas (0 counts as absent).
    scaling.kind = RopeScaling::Kind::Yarn;
    scaling.original_max_position_embeddings = max_position_embeddings;
    if (block.contains("original_max_position_embeddings") && !block["original_max_position_embeddings"].is_null()) {
      scaling.original_max_position_embeddings = field<int64_t>(block, "original_max_position_embeddings", 0, origin);
      if (scaling.original_max_position_embeddings <= 0)
        fail("{}: rope_scaling.original_max_position_embeddings must be positive", origin);
      scaling.factor = static_cast<double>(max_position_embeddings) /
                       static_cast<double>(scaling.original_max_position_embeddings);
    }
    auto mscale_of = [](double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; };
    const double mscale = field<double>(block, "mscale", 0.0, origin);
    const double mscale_all_dim = field<double>(block, "mscale_all_dim", 0.0, origin);
    if (block.contains("attention_factor") && !block["attention_factor"].is_null())
      scaling.attention_factor = field<double>(block, "attention_factor", 1.0, origin);
    else if (mscale != 0 && mscale_all_dim != 0)
      scaling.attention_factor = mscale_of(scaling.factor, mscale) / mscale_of(scaling.factor, mscale_all_dim);
    else
      scaling.attention_factor = mscale_of(scaling.factor, 1.0);
    const double beta_fast = field<double>(block, "beta_fast", 0.0, origin);
    const double beta_slow = field<double>(block, "beta_slow", 0.0, origin);
    scaling.beta_fast = beta_fast != 0 ? beta_fast : 32.0;
    scaling.beta_slow = beta_slow != 0 ? beta_slow : 1.0;
    scaling.truncate = field<bool>(block, "truncate", true, origin);
  } else {
    fail("{}: rope_scaling type '{}' is not supported (supported: llama3, linear, yarn, default)", origin, type);
  }
  return scaling;
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const nlohmann::json& json, const std::string& origin) {
  if (!json.is_object()) fail("{}: a model config must be a JSON object", origin);
  LlamaConfig c;
  c.model_type = field<std::string>(json, "model_type", "llama", origin);
  if (!supports(c.model_type))
    fail("{}: model_type '{}' is not a decoder this build loads (llama, qwen3)", origin, c.model_type);
  const bool qwen3 = c.model_type == "qwen3";
  if (qwen3) {
    // transformers Qwen3Config defaults; no BOS/EOS unless the file names them.
    c.qk_norm = true;
    c.vocab_size = 151936;
    c.intermediate_size = 22016;
    c.max_position_embeddings = 32768;
    c.bos_token_id.reset();
    c.eos_token_ids.clear();
    if (field<bool>(json, "use_sliding_window", false, origin))
      fail("{}: use_sliding_window is true; sliding-window attention is not supported", origin);
  }
  c.vocab_size = field<int64_t>(json, "vocab_size", c.vocab_size, origin);
  c.hidden_size = field<int64_t>(json, "hidden_size", c.hidden_size, origin);
  c.intermediate_size = field<int64_t>(json, "intermediate_size", c.intermediate_size, origin);
  c.num_hidden_layers = field<int64_t>(json, "num_hidden_layers", c.num_hidden_layers, origin);
  c.num_attention_heads = field<int64_t>(json, "num_attention_heads", c.num_attention_heads, origin);
  c.num_key_value_heads = field<int64_t>(json, "num_key_value_heads", c.num_attention_heads, origin);
  c.max_position_embeddings = field<int64_t>(json, "max_position_embeddings", c.max_position_embeddings, origin);
  c.rms_norm_eps = field<double>(json, "rms_norm_eps", c.rms_norm_eps, origin);
  c.rope_theta = field<double>(json, "rope_theta", c.rope_theta, origin);
  c.hidden_act = field<std::string>(json, "hidden_act", c.hidden_act, origin);
  c.tie_word_embeddings = field<bool>(json, "tie_word_embeddings", c.tie_word_embeddings, origin);
  c.attention_bias = field<bool>(json, "attention_bias", c.attention_bias, origin);
  c.mlp_bias = field<bool>(json, "mlp_bias", c.mlp_bias, origin);
  c.rope_scaling = parse_rope_scaling(json, c.max_position_embeddings, origin);

  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_hidden_layers <= 0 ||
      c.num_attention_heads <= 0 || c.num_key_value_heads <= 0)
    fail("{}: sizes and head counts must be positive (vocab {}, hidden {}, intermediate {}, layers {}, heads {}, "
         "kv heads {})", origin, c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers,
         c.num_attention_heads, c.num_key_value_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", origin,
         c.num_attention_heads, c.num_key_value_heads);
  // Qwen3Config's head_dim defaults to 128 when absent (not hidden / heads); null means hidden / heads for both.
  c.head_dim = qwen3 && !json.contains("head_dim") ? 128 : field<int64_t>(json, "head_dim", 0, origin);
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail("{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given", origin,
           c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) fail("{}: head_dim must be positive and even, got {}", origin, c.head_dim);
  if (!(c.rms_norm_eps > 0)) fail("{}: rms_norm_eps must be positive", origin);
  if (!(c.rope_theta > 0)) fail("{}: rope_theta must be positive", origin);

  auto bos = token_ids(json, "bos_token_id", c.bos_token_id ? std::vector<int64_t>{*c.bos_token_id} : std::vector<int64_t>{},
                       origin);
  c.bos_token_id = bos.empty() ? std::nullopt : std::optional<int64_t>(bos.front());
  c.eos_token_ids = token_ids(json, "eos_token_id", c.eos_token_ids, origin);
  auto pad = token_ids(json, "pad_token_id", {}, origin);
  c.pad_token_id = pad.empty() ? std::nullopt : std::optional<int64_t>(pad.front());
  for (int64_t id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size) fail("{}: eos_token_id {} is outside the vocabulary ({})", origin, id, c.vocab_size);
  return c;
}

bool LlamaConfig::supports(const std::string& model_type) { return model_type == "llama" || model_type == "qwen3"; }

LlamaConfig LlamaConfig::from_file(const std::filesystem::path& dir_or_file) {
  std::filesystem::path path = std::filesystem::is_directory(dir_or_file) ? dir_or_file / "config.json" : dir_or_file;
  const std::string text = read_file(path);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
  return from_json(json, path.string());
}

std::vector<float> LlamaConfig::rope_inv_freq() const {
  // transformers: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all float32.
  std::vector<float> inv_freq;
  const float base = static_cast<float>(rope_theta);
  for (int64_t i = 0; i < head_dim; i += 2) {
    const float exponent = static_cast<float>(i) / static_cast<float>(head_dim);
    inv_freq.push_back(1.0f / std::pow(base, exponent));
  }
  const float factor = static_cast<float>(rope_scaling.factor);
  switch (rope_scaling.kind) {
    case RopeScaling::Kind::None: break;
    case RopeScaling::Kind::Linear:
      for (float& f : inv_freq) f = f / factor;  // = positions divided by the factor
      break;
    case RopeScaling::Kind::Llama3: {
      // transformers _compute_llama3_parameters: keep high frequencies, divide low ones by the factor, and blend
      // smoothly between the two wavelength bounds.
      const float old_context = static_cast<float>(rope_scaling.original_max_position_embeddings);
      const float low = static_cast<float>(rope_scaling.low_freq_factor);
      const float high = static_cast<float>(rope_scaling.high_freq_factor);
      const float low_freq_wavelen = old_context / low;
      const float high_freq_wavelen = old_context / high;
      const float two_pi = static_cast<float>(2.0 * M_PI);
      for (float& f : inv_freq) {
        const float wavelen = two_pi / f;
        float scaled = wavelen > low_freq_wavelen ? f / factor : f;
        const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        if (medium) {
          const float smooth = (old_context / wavelen - low) / (high - low);
          scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
    case RopeScaling::Kind::Yarn: {
      // transformers _compute_yarn_parameters: interpolate (divide by the factor) the dimensions that rotate fewer
      // than beta_slow times over the original context, extrapolate (keep) those rotating more than beta_fast
      // times, and ramp linearly between the two.
      const double dim = static_cast<double>(head_dim), base = rope_theta;
      const double context = static_cast<double>(rope_scaling.original_max_position_embeddings);
      auto correction_dim = [&](double rotations) {
        return dim * std::log(context / (rotations * 2 * M_PI)) / (2 * std::log(base));
      };
      double low = correction_dim(rope_scaling.beta_fast), high = correction_dim(rope_scaling.beta_slow);
      if (rope_scaling.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1);
      if (low == high) high += 0.001;  // as transformers: no zero-width ramp
      for (size_t i = 0; i < inv_freq.size(); ++i) {
        const float ramp = std::clamp(static_cast<float>((static_cast<double>(i) - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolation_weight = 1.0f - ramp;
        // 1 / theta^(2i/d) and 1 / (factor * theta^(2i/d)), float32 as transformers computes them.
        const float position_freq = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(head_dim));
        const float extrapolated = 1.0f / position_freq;
        const float interpolated = 1.0f / (factor * position_freq);
        inv_freq[i] = interpolated * (1.0f - extrapolation_weight) + extrapolated * extrapolation_weight;
      }
      break;
    }
  }
  return inv_freq;
}

float LlamaConfig::rope_attention_scaling() const {
  return rope_scaling.kind == RopeScaling::Kind::Yarn ? static_cast<float>(rope_scaling.attention_factor) : 1.0f;
}

int64_t LlamaConfig::num_layer_parameters() const {
  const int64_t q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t attention = hidden_size * (q + 2 * kv) + q * hidden_size;
  if (attention_bias) attention += q + 2 * kv + hidden_size;
  if (qk_norm) attention += 2 * head_dim;
  int64_t mlp = 3 * hidden_size * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
  const int64_t norms = 2 * hidden_size;
  return num_hidden_layers * (attention + mlp + norms) + hidden_size;
}

int64_t LlamaConfig::num_parameters() const {
  const int64_t embeddings = vocab_size * hidden_size;
  return num_layer_parameters() + embeddings + (tie_word_embeddings ? 0 : embeddings);
}

double LlamaConfig::forward_flops(int64_t new_tokens, int64_t cached_tokens, int64_t lm_head_rows,
                                  int64_t lm_head_positions) const {
  const double n = static_cast<double>(new_tokens), cached = static_cast<double>(cached_tokens);
  const double matmuls = 2.0 * static_cast<double>(num_layer_parameters()) * n;
  // Token t attends to cached + t + 1 keys: QK^T and PV each cost 2 * heads * head_dim per key.
  const double keys = n * cached + n * (n + 1) / 2;
  const double attention = 4.0 * static_cast<double>(num_attention_heads * head_dim * num_hidden_layers) * keys;
  const double head = 2.0 * static_cast<double>(hidden_size * lm_head_rows * lm_head_positions);
  return matmuls + attention + head;
}

}  // namespace guardkit::models
