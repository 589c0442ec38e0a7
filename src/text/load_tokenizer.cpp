// load_tokenizer: picks the tokenizer implementation a Hugging Face model directory calls for.
#include <nlohmann/json.hpp>

#include "text/bpe_tokenizer.h"
#include "text/deberta_tokenizer.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace fs = std::filesystem;

namespace {
// The "model.type" of a tokenizer.json ("BPE", "Unigram", "WordPiece", ...).
std::string tokenizer_json_model_type(const fs::path& path) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object())
    fail("{}: no \"model\" object: not a Hugging Face tokenizer.json", path.string());
  const auto& model = root["model"];
  if (model.contains("type") && model["type"].is_string()) return model["type"].get<std::string>();
  // Old files omit the type; the keys tell.
  if (model.contains("merges")) return "BPE";
  if (model.contains("vocab") && model["vocab"].is_array()) return "Unigram";
  fail("{}: cannot tell the tokenizer model type (no model.type)", path.string());
}
}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& model_dir) {
  if (!fs::is_directory(model_dir)) fail("{}: not a directory (expected a Hugging Face model directory)", model_dir.string());
  const fs::path tokenizer_json = model_dir / "tokenizer.json";
  const bool has_spm = fs::exists(model_dir / "spm.model") || fs::exists(model_dir / "tokenizer.model");
  if (fs::exists(tokenizer_json)) {
    const std::string type = tokenizer_json_model_type(tokenizer_json);
    if (type == "BPE") return BpeTokenizer::from_file(tokenizer_json);
    if (type == "Unigram") {
      // DeBERTa-v3 checkpoints ship both; the SentencePiece model is what the slow reference tokenizer reads.
      if (has_spm) return DebertaV2Tokenizer::from_dir(model_dir);
      return DebertaV2Tokenizer::from_tokenizer_json(tokenizer_json);
    }
    if (!has_spm) fail("{}: tokenizer model type \"{}\" is not supported (BPE and Unigram are)", tokenizer_json.string(), type);
  }
  if (has_spm) return DebertaV2Tokenizer::from_dir(model_dir);
  fail("{}: no tokenizer found (looked for tokenizer.json, spm.model, tokenizer.model)", model_dir.string());
}

}  // namespace guardkit::text
