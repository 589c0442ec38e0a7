// LlamaConfig: a Hugging Face `config.json` of a Llama-architecture decoder, with the defaults transformers uses for
// every absent field: model_type "llama" (Llama 2/3/3.1/3.2, Llama Guard 3) and "qwen3" (Qwen3, Qwen3Guard), which is
// the same decoder plus a per-head RMSNorm on queries and keys (`qk_norm`).
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace guardkit::models {

struct RopeScaling {
  enum class Kind { None, Linear, Llama3, Yarn };
  Kind kind = Kind::None;
  double factor = 1.0;
  // yarn only (transformers `_compute_yarn_parameters`): the ramp between interpolated and extrapolated frequencies
  // and the factor cos/sin are multiplied by.
  double beta_fast = 32.0, beta_slow = 1.0;
  bool truncate = true;
  double attention_factor = 1.0;
  // llama3 only (transformers >= 4.43 `_compute_llama3_parameters`).
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";
  // Qwen3: q and k of every head pass an RMSNorm over head_dim (weights `self_attn.{q,k}_norm.weight`) before RoPE.
  bool qk_norm = false;
  // transformers LlamaConfig defaults (from_json applies Qwen3Config's for model_type qwen3).
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 0;  // 0 in the json (absent/null) = num_attention_heads (MHA)
  int64_t head_dim = 0;             // absent/null = hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::optional<int64_t> bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};  // `eos_token_id` may be an int or a list
  std::optional<int64_t> pad_token_id;

  // The model_type values this decoder loads.
  static bool supports(const std::string& model_type);
  // Parses a config object; `origin` (a file name) prefixes every error. Validates head counts and sizes.
  static LlamaConfig from_json(const nlohmann::json& json, const std::string& origin = "config.json");
  // Reads `dir/config.json` (or the file itself when given a file).
  static LlamaConfig from_file(const std::filesystem::path& dir_or_file);

  int64_t query_groups() const { return num_attention_heads / num_key_value_heads; }  // query heads per kv head

  // RoPE inverse frequencies as float32 values (head_dim / 2), with the configured scaling applied, computed as
  // transformers does (float32 arithmetic) so positions and angles round identically.
  std::vector<float> rope_inv_freq() const;
  // What cos and sin are multiplied by (yarn's attention factor; 1 otherwise), as transformers' attention_scaling.
  float rope_attention_scaling() const;

  // Parameters: all of them, and the ones a token's forward pass multiplies by (no embedding table; the LM head
  // counted separately because guard scoring projects onto only a few of its rows).
  int64_t num_parameters() const;
  int64_t num_layer_parameters() const;  // transformer layers + final norm
  // Forward FLOPs (multiply-add = 2) for `new_tokens` tokens appended after `cached_tokens` already in the KV cache,
  // with `lm_head_rows` rows of the LM head projected at each of `lm_head_positions` positions.
  double forward_flops(int64_t new_tokens, int64_t cached_tokens, int64_t lm_head_rows,
                       int64_t lm_head_positions) const;
};

}  // namespace guardkit::models
