// What scoring costs: forward FLOPs estimated from a Hugging Face config.json and token lengths, and the wall time /
// peak memory of a run. FLOPs count 2 per multiply-add:
//   linear layers  2 · (matmul parameters per token) · tokens       (the "2·params·tokens" rule, embeddings excluded:
//                                                                      a lookup is no matmul)
//   attention      QKᵀ and AV: 2 · 2 · d_attn · (query, key) pairs per layer; an encoder has T² pairs, a causal
//                  decoder Σ_i (cached + i) pairs
//   DeBERTa        c2p and p2c scores against the 2k relative positions: 2 · 2 · d_attn · T · 2k per layer, plus
//                  projecting the relative embeddings through the query and key projections once per forward
//   head           sequence classifier: pooler (d²) + classifier (d · labels); causal LM: d · vocab per position whose
//                  logits are read (a guard reads one)
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace guardkit::eval {

struct TransformerShape {
  std::string model_type;      // config's model_type, e.g. "deberta-v2", "llama"
  bool causal = false;         // decoder (causal attention, LM head) vs encoder (classifier head)
  int64_t layers = 0;
  int64_t hidden = 0;          // d_model
  int64_t intermediate = 0;    // MLP width
  int64_t heads = 0;
  int64_t kv_heads = 0;        // grouped-query attention (= heads without GQA)
  int64_t head_dim = 0;
  int64_t vocab = 0;
  bool gated_mlp = false;      // SwiGLU (gate, up, down) vs two matrices
  int64_t relative_positions = 0;  // DeBERTa: 2 · position_buckets (or 2 · max_relative_positions); 0 = none
  int64_t num_labels = 0;      // classifier head width (encoders)

  int64_t attention_width() const { return heads * head_dim; }
  // Weights multiplied per token in the transformer layers (q, k, v, o and the MLP), all layers.
  int64_t layer_matmul_parameters() const;
  // Every parameter (embeddings, layers, norms, head): what "a 1B model" counts.
  int64_t total_parameters() const;
};

// From a parsed config.json (deberta-v2/deberta, bert/roberta-style encoders, llama/mistral-style decoders).
// Throws guardkit::Error naming the missing field.
TransformerShape shape_from_config(const nlohmann::json& config, const std::string& source = "config.json");
// From a model directory (its config.json) or a config.json path.
TransformerShape load_shape(const std::filesystem::path& path);

// Forward FLOPs of one sequence of `tokens` new tokens after `cached_tokens` already in the KV cache (decoders),
// reading the logits of `logit_positions` positions (decoders; encoders always run their classifier head once).
double forward_flops(const TransformerShape& shape, int64_t tokens, int64_t cached_tokens = 0,
                     int64_t logit_positions = 1);

// Peak resident set size of this process so far (getrusage, never below the current RSS), in bytes.
int64_t peak_rss_bytes();
// Current resident set size (/proc/self/statm), in bytes; 0 when unavailable.
int64_t current_rss_bytes();

// Wall time since construction, and the process's peak RSS when asked.
class CostMeter {
 public:
  CostMeter() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  int64_t peak_rss() const { return peak_rss_bytes(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

// "1.23 TFLOP", "456 MFLOP"; "1.5 GiB".
std::string format_flops(double flops);
std::string format_bytes(int64_t bytes);

}  // namespace guardkit::eval
