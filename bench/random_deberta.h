// Benchmarks' test models: a DeBERTa-v2/v3 classifier of a chosen shape with random weights (same code path as a real
// checkpoint: config.json + model.safetensors + the fixture's SentencePiece tokenizer). Shared by bench_serve and
// bench_router.
#pragma once
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "io/safetensors.h"
#include "models/weights.h"
#include "util/paths.h"

namespace guardkit::bench {

namespace fs = std::filesystem;
using nlohmann::json;

// A DeBERTa-v2/v3 classifier of a given shape with random weights, built from the fixture's tensor names and
// tokenizer (every hidden dim 32 -> hidden, FFN dim 64 -> ffn, relative-position rows -> 2 x buckets, layers 2 ->
// layers), written to a temp folder.
struct Shape {
  int64_t hidden, ffn, layers, heads, position_buckets;
};
inline const Shape kXsmall{384, 1536, 12, 6, 256};      // DeBERTa-v3-xsmall
inline const Shape kSmallDefault{128, 512, 2, 2, 64};   // guardkit bootstrap's small guard (src/train/bootstrap.h)

inline std::filesystem::path write_random_deberta(const Shape& shape, const std::string& tag) {
  const fs::path fixture = shared_dir() / "fixtures" / "deberta";
  const fs::path dir = fs::temp_directory_path() / ("guardkit_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* file : {"spm.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"})
    fs::copy_file(fixture / file, dir / file, fs::copy_options::overwrite_existing);
  json config = json::parse(std::ifstream(fixture / "config.json"));
  const int64_t hidden = shape.hidden, ffn = shape.ffn, layers = shape.layers;
  config["hidden_size"] = hidden;
  config["intermediate_size"] = ffn;
  config["num_attention_heads"] = shape.heads;
  config["num_hidden_layers"] = layers;
  config["pooler_hidden_size"] = hidden;
  config["position_buckets"] = shape.position_buckets;
  std::ofstream(dir / "config.json") << config.dump(2);

  io::Checkpoint checkpoint = io::Checkpoint::open(fixture / "model.safetensors");
  torch::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const std::regex layer0(R"(\.layer\.0\.)");
  for (const auto& name : checkpoint.names()) {
    if (name.find(".layer.1.") != std::string::npos) continue;
    std::vector<int64_t> shape_of;
    for (int64_t d : checkpoint.get(name).shape) shape_of.push_back(d == 32 ? hidden : d == 64 ? ffn : d);
    if (name.find("rel_embeddings") != std::string::npos) shape_of[0] = 2 * shape.position_buckets;
    bool is_norm = name.find("LayerNorm") != std::string::npos;
    bool is_bias = name.ends_with(".bias");
    auto make = [&] {
      if (is_norm && !is_bias) return at::ones(shape_of);
      if (is_bias) return at::zeros(shape_of);
      return at::randn(shape_of) * 0.02;
    };
    if (name.find(".layer.0.") != std::string::npos) {
      for (int64_t l = 0; l < layers; ++l)
        tensors.emplace_back(std::regex_replace(name, layer0, ".layer." + std::to_string(l) + "."), make());
    } else {
      tensors.emplace_back(name, make());
    }
  }
  models::save_tensors((dir / "model.safetensors").string(), tensors);
  return dir;
}

}  // namespace guardkit::bench
