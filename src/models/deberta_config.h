// DeBERTa-v2/v3 configuration as Hugging Face's DebertaV2Config reads config.json: every key HF consults, with
// HF's default where the key is absent (or null), so an unmodified checkpoint directory configures the model.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace guardkit::models {

struct DebertaConfig {
  int64_t vocab_size = 128100;
  int64_t hidden_size = 1536;
  int64_t embedding_size = -1;  // HF: getattr(config, "embedding_size", hidden_size); != hidden adds embed_proj
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 24;
  int64_t attention_head_size = -1;  // HF: getattr(config, "attention_head_size", hidden // heads)
  int64_t intermediate_size = 6144;
  std::string hidden_act = "gelu";
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 0;
  double layer_norm_eps = 1e-7;
  bool relative_attention = false;
  int64_t max_relative_positions = -1;  // < 1 means max_position_embeddings (HF)
  int64_t position_buckets = -1;        // <= 0: no log buckets
  int64_t pad_token_id = 0;
  bool position_biased_input = true;
  std::vector<std::string> pos_att_type;  // subset of {"c2p", "p2c"}; "a|b" strings are split as HF does
  bool share_att_key = false;
  std::vector<std::string> norm_rel_ebd = {"none"};  // "layer_norm" normalises the relative embeddings
  int64_t conv_kernel_size = 0;         // DeBERTa-v2-xlarge's ConvLayer (not supported: error at load)
  int64_t pooler_hidden_size = -1;      // HF: kwargs.get("pooler_hidden_size", hidden_size)
  std::string pooler_hidden_act = "gelu";
  int64_t num_labels = 2;               // len(id2label) when present, else num_labels, else 2
  std::vector<std::string> id2label;    // label names in id order ("LABEL_0", ... when the config has none)

  nlohmann::json raw;  // the parsed config.json (kept so save_pretrained writes back every key it had)

  // Derived values, as HF's modules compute them.
  int64_t head_size() const { return attention_head_size > 0 ? attention_head_size : hidden_size / num_attention_heads; }
  int64_t all_head_size() const { return num_attention_heads * head_size(); }
  int64_t embed_size() const { return embedding_size > 0 ? embedding_size : hidden_size; }
  int64_t pooler_size() const { return pooler_hidden_size > 0 ? pooler_hidden_size : hidden_size; }
  int64_t max_relative() const { return max_relative_positions < 1 ? max_position_embeddings : max_relative_positions; }
  // att_span in HF: position_buckets when > 0, else max_relative(); rel_embeddings has 2 * span rows.
  int64_t relative_span() const { return position_buckets > 0 ? position_buckets : max_relative(); }
  bool has_c2p() const;
  bool has_p2c() const;
  bool norm_relative_embeddings() const;
  // HF's scale_factor: 1 + [c2p] + [p2c] (counted from pos_att_type even without relative attention).
  int64_t attention_scale_factor() const { return 1 + (has_c2p() ? 1 : 0) + (has_p2c() ? 1 : 0); }

  // Parses config.json text (origin names it in errors); throws guardkit::Error on wrong types or bad values.
  static DebertaConfig from_json(const nlohmann::json& json, const std::string& origin = "config.json");
  // Reads `dir/config.json` (or a file path).
  static DebertaConfig load(const std::filesystem::path& dir_or_file);
  // config.json as HF writes it for this configuration (the original keys, with our fields over them).
  nlohmann::json to_json() const;
  // Checks internal consistency (positive sizes, known activations, supported features).
  void validate(const std::string& origin = "config") const;
};

// Activations by HF name (ACT2FN): gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, silu, swish,
// tanh, mish, linear. True when `name` is known.
bool is_known_activation(const std::string& name);

}  // namespace guardkit::models
