#include "eval/cost.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/paths.h"

namespace guardkit::eval {

namespace {

int64_t get_int(const nlohmann::json& config, const char* key, const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || !it->is_number_integer()) fail("{}: missing integer field '{}'", source, key);
  return it->get<int64_t>();
}
int64_t get_int_or(const nlohmann::json& config, const char* key, int64_t fallback) {
  auto it = config.find(key);
  return it != config.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
}

}  // namespace

TransformerShape shape_from_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) fail("{}: expected a JSON object", source);
  TransformerShape shape;
  shape.model_type = config.value("model_type", std::string());
  if (shape.model_type.empty()) fail("{}: missing 'model_type'", source);
  shape.layers = get_int(config, "num_hidden_layers", source);
  shape.hidden = get_int(config, "hidden_size", source);
  shape.intermediate = get_int(config, "intermediate_size", source);
  shape.heads = get_int(config, "num_attention_heads", source);
  shape.kv_heads = get_int_or(config, "num_key_value_heads", shape.heads);
  if (shape.heads <= 0 || shape.kv_heads <= 0) fail("{}: attention heads must be positive", source);
  shape.head_dim = get_int_or(config, "head_dim", shape.hidden / shape.heads);
  shape.vocab = get_int(config, "vocab_size", source);

  const std::string& type = shape.model_type;
  shape.causal = type == "llama" || type == "mistral" || type == "qwen2" || type == "qwen3" || type == "gemma" || type == "gemma2" ||
                 type == "phi3" || type == "granite";
  shape.gated_mlp = shape.causal;
  if (!shape.causal) {
    // id2label is what transformers writes; num_labels only sometimes.
    int64_t labels = get_int_or(config, "num_labels", 0);
    if (labels == 0 && config.contains("id2label") && config["id2label"].is_object())
      labels = static_cast<int64_t>(config["id2label"].size());
    shape.num_labels = labels == 0 ? 2 : labels;
  }
  if (type == "deberta-v2" || type == "deberta") {
    if (config.value("relative_attention", false)) {
      const int64_t buckets = get_int_or(config, "position_buckets", -1);
      int64_t max_relative = get_int_or(config, "max_relative_positions", -1);
      if (max_relative < 1) max_relative = get_int_or(config, "max_position_embeddings", 512);
      shape.relative_positions = 2 * (buckets > 0 ? buckets : max_relative);
    }
  }
  return shape;
}

TransformerShape load_shape(const std::filesystem::path& path) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON ({})", file.string(), e.what());
  }
  return shape_from_config(config, file.string());
}

int64_t TransformerShape::layer_matmul_parameters() const {
  const int64_t q_and_o = 2 * hidden * heads * head_dim;
  const int64_t k_and_v = 2 * hidden * kv_heads * head_dim;
  const int64_t mlp = (gated_mlp ? 3 : 2) * hidden * intermediate;
  return layers * (q_and_o + k_and_v + mlp);
}

int64_t TransformerShape::total_parameters() const {
  int64_t total = vocab * hidden + layer_matmul_parameters();
  if (causal) {
    total += layers * 2 * hidden + hidden;  // RMSNorm weights (the LM head is usually tied; not counted twice)
  } else {
    // Biases of q,k,v,o and the MLP, two LayerNorms per layer, the embedding LayerNorm, pooler and classifier.
    total += layers * (4 * attention_width() + intermediate + hidden + 4 * hidden) + 2 * hidden;
    total += relative_positions * hidden + 2 * hidden;  // relative embeddings and their LayerNorm
    total += hidden * hidden + hidden + hidden * num_labels + num_labels;
  }
  return total;
}

double forward_flops(const TransformerShape& shape, int64_t tokens, int64_t cached_tokens, int64_t logit_positions) {
  if (tokens <= 0) return 0.0;
  const double t = static_cast<double>(tokens), c = static_cast<double>(cached_tokens);
  const double width = static_cast<double>(shape.attention_width()), d = static_cast<double>(shape.hidden);
  const double layers = static_cast<double>(shape.layers);
  double flops = 2.0 * static_cast<double>(shape.layer_matmul_parameters()) * t;
  // QKᵀ and AV: 2 FLOPs per multiply-add, d_attn multiply-adds per (query, key) pair, twice.
  const double pairs = shape.causal ? t * c + t * (t + 1) / 2 : t * (t + c);
  flops += layers * 4.0 * width * pairs;
  if (shape.relative_positions > 0) {
    const double k2 = static_cast<double>(shape.relative_positions);
    flops += layers * 4.0 * width * t * k2;  // c2p and p2c against the 2k relative positions
    flops += layers * 2.0 * 2.0 * k2 * d * width;  // relative embeddings through the query and key projections
  }
  if (shape.causal) {
    flops += 2.0 * d * static_cast<double>(shape.vocab) * static_cast<double>(logit_positions);
  } else {
    flops += 2.0 * (d * d + d * static_cast<double>(shape.num_labels));
  }
  return flops;
}

int64_t peak_rss_bytes() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return current_rss_bytes();
  // Linux reports kilobytes, and updates the high-water mark lazily (per-thread RSS counters are folded in batches),
  // so it can trail the current RSS by a few pages.
  return std::max(static_cast<int64_t>(usage.ru_maxrss) * 1024, current_rss_bytes());
}

int64_t current_rss_bytes() {
  FILE* file = std::fopen("/proc/self/statm", "r");
  if (!file) return 0;
  long pages_total = 0, pages_resident = 0;
  const int got = std::fscanf(file, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(file);
  if (got != 2) return 0;
  return static_cast<int64_t>(pages_resident) * sysconf(_SC_PAGESIZE);
}

std::string format_flops(double flops) {
  static const char* const kUnits[] = {"FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP"};
  int unit = 0;
  while (flops >= 1000.0 && unit < 6) flops /= 1000.0, ++unit;
  return fmt::format("{:.3g} {}", flops, kUnits[unit]);
}

std::string format_bytes(int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) value /= 1024.0, ++unit;
  return fmt::format("{:.3g} {}", value, kUnits[unit]);
}

}  // namespace guardkit::eval
