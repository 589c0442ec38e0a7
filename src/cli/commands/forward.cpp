// `guardkit forward`: runs a checkpoint on JSONL inputs and prints logits, probabilities and the router feature —
// the quickest way to compare guardkit's numbers with another implementation's.
#include <torch/torch.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "models/deberta.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/jsonl.h"
#include "util/paths.h"

namespace guardkit::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct ForwardCliOptions {
  std::string model_dir;
  std::string input = "-";
  std::string dtype = "fp32";
  std::string device = "cpu";
  std::vector<int64_t> ids;
  int top_k = 5;
  size_t max_length = 0;
  size_t batch_size = 16;
  bool no_feature = false;
  bool plain_specials = false;
};

struct Row {
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;
};

std::vector<float> to_vector(const at::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kFloat).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// Reads every line into model inputs: {"input_ids": [...]} as given, {"text"[, "text_pair"]} through the tokenizer.
std::vector<Row> read_rows(const ForwardCliOptions& opt, const text::Tokenizer* tokenizer) {
  std::vector<Row> rows;
  for_each_jsonl_file(opt.input, [&](const json& line, size_t n) {
    Row row;
    if (line.contains("input_ids")) {
      if (!line["input_ids"].is_array() || line["input_ids"].empty())
        fail("{}:{}: \"input_ids\" must be a non-empty array of integers", opt.input, n);
      for (const auto& v : line["input_ids"]) {
        if (!v.is_number_integer()) fail("{}:{}: \"input_ids\" must hold integers", opt.input, n);
        row.ids.push_back(v.get<int64_t>());
      }
    } else if (line.contains("text")) {
      if (!line["text"].is_string()) fail("{}:{}: \"text\" must be a string", opt.input, n);
      if (!tokenizer) fail("{}: no tokenizer files; give {{\"input_ids\": [...]}} lines", opt.model_dir);
      const std::string text = line["text"].get<std::string>();
      std::optional<std::string> pair;
      if (line.contains("text_pair")) {
        if (!line["text_pair"].is_string()) fail("{}:{}: \"text_pair\" must be a string", opt.input, n);
        pair = line["text_pair"].get<std::string>();
      }
      std::optional<std::string_view> pair_view;
      if (pair) pair_view = *pair;
      auto enc = tokenizer->encode_for_model(text, pair_view, opt.max_length, text::Truncation::LongestFirst,
                                             !opt.plain_specials);
      row.ids.assign(enc.ids.begin(), enc.ids.end());
      row.type_ids.assign(enc.type_ids.begin(), enc.type_ids.end());
    } else {
      fail("{}:{}: expected \"text\" (and optional \"text_pair\") or \"input_ids\"", opt.input, n);
    }
    rows.push_back(std::move(row));
  });
  return rows;
}

std::string model_type(const fs::path& dir) {
  auto config = json::parse(read_file(dir / "config.json"), nullptr, false);
  if (config.is_discarded() || !config.is_object()) fail("{}: not valid JSON", (dir / "config.json").string());
  return config.value("model_type", "");
}

void run_classifier(const ForwardCliOptions& opt, const std::vector<Row>& rows) {
  models::DebertaLoadOptions load;
  load.dtype = models::parse_dtype(opt.dtype);
  load.device = models::parse_device(opt.device);
  auto model = models::DebertaClassifier::load(opt.model_dir, load);
  torch::NoGradGuard no_grad;
  for (size_t start = 0; start < rows.size(); start += opt.batch_size) {
    const size_t end = std::min(rows.size(), start + opt.batch_size);
    size_t longest = 0;
    for (size_t i = start; i < end; ++i) longest = std::max(longest, rows[i].ids.size());
    const auto b = static_cast<int64_t>(end - start), t = static_cast<int64_t>(longest);
    auto ids = torch::full({b, t}, model.config().pad_token_id, torch::kLong);
    auto mask = torch::zeros({b, t}, torch::kLong), types = torch::zeros({b, t}, torch::kLong);
    for (size_t i = start; i < end; ++i) {
      const auto r = static_cast<int64_t>(i - start);
      const auto n = static_cast<int64_t>(rows[i].ids.size());
      for (int64_t j = 0; j < n; ++j) {
        if (rows[i].ids[j] < 0 || rows[i].ids[j] >= model.config().vocab_size)
          fail("input line {}: token id {} is outside the vocabulary (size {})", i + 1, rows[i].ids[j],
               model.config().vocab_size);
        ids[r][j] = rows[i].ids[j];
        mask[r][j] = 1;
        if (j < static_cast<int64_t>(rows[i].type_ids.size())) types[r][j] = rows[i].type_ids[j];
      }
    }
    auto out = model.forward(ids.to(load.device), mask.to(load.device), types.to(load.device));
    for (int64_t r = 0; r < b; ++r) {
      json line = {{"logits", to_vector(out.logits[r])}, {"probs", to_vector(out.probs[r])}};
      if (!opt.no_feature) line["feature"] = to_vector(out.pooled[r]);
      std::cout << to_jsonl_line(line) << '\n';
    }
  }
}

void run_decoder(const ForwardCliOptions& opt, const std::vector<Row>& rows) {
  auto model = models::LlamaModel::load(opt.model_dir, models::parse_dtype(opt.dtype), models::parse_device(opt.device));
  const int64_t vocab = model->config().vocab_size;
  for (auto id : opt.ids)
    if (id < 0 || id >= vocab) fail("--ids: {} is outside the vocabulary (size {})", id, vocab);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < rows.size(); ++i) {
    for (auto id : rows[i].ids)
      if (id < 0 || id >= vocab) fail("input line {}: token id {} is outside the vocabulary (size {})", i + 1, id, vocab);
    auto out = model->forward(rows[i].ids, nullptr, models::ForwardOptions{models::LogitsMode::Last});
    auto logits = out.logits[0];
    auto log_probs = torch::log_softmax(logits, -1);
    json line;
    std::vector<int64_t> ids = opt.ids;
    if (ids.empty()) {
      auto top = std::get<1>(logits.topk(std::min<int64_t>(opt.top_k, vocab)));
      for (int64_t k = 0; k < top.size(0); ++k) ids.push_back(top[k].item<int64_t>());
    }
    std::vector<float> chosen_logits, chosen_probs;
    for (auto id : ids) {
      chosen_logits.push_back(logits[id].item<float>());
      chosen_probs.push_back(std::exp(log_probs[id].item<float>()));
    }
    line["ids"] = ids;
    line["logits"] = chosen_logits;
    line["probs"] = chosen_probs;  // full-vocabulary softmax at the last position
    line["logsumexp"] = torch::logsumexp(logits, -1).item<double>();
    if (!opt.no_feature) line["feature"] = to_vector(out.last_hidden[0]);
    std::cout << to_jsonl_line(line) << '\n';
  }
}

void run_forward(const ForwardCliOptions& opt) {
  const fs::path dir = opt.model_dir;
  if (!fs::exists(dir / "config.json")) fail("{}: no config.json (expected a Hugging Face model directory)", opt.model_dir);
  const std::string type = model_type(dir);
  std::unique_ptr<text::Tokenizer> tokenizer;
  if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "spm.model") || fs::exists(dir / "tokenizer.model"))
    tokenizer = text::load_tokenizer(dir);
  const auto rows = read_rows(opt, tokenizer.get());
  if (type.rfind("deberta", 0) == 0) return run_classifier(opt, rows);
  if (models::LlamaConfig::supports(type)) return run_decoder(opt, rows);
  fail("{}: model_type \"{}\" is not supported (deberta-v2 classifiers and llama / qwen3 decoders are)", opt.model_dir,
       type);
}

void add_forward_command(CLI::App& app, GlobalOptions&) {
  auto opt = std::make_shared<ForwardCliOptions>();
  auto* cmd = app.add_subcommand("forward", "Run a model on JSONL inputs; print logits, probabilities and the feature");
  cmd->footer(
      "Input lines: {\"text\": ...}, {\"text\": ..., \"text_pair\": ...} or {\"input_ids\": [...]}.\n"
      "Classifiers (DeBERTa) print every label's logit and probability and the pooled feature; decoders (Llama, Qwen3)\n"
      "print the logits and full-vocabulary probabilities of --ids (or the top-k) at the last position, the\n"
      "logsumexp, and the last-token hidden state as the feature.\n"
      "Example:\n"
      "  echo '{\"text\":\"How do I pick a lock?\"}' | guardkit forward --model models/default/small");
  cmd->add_option("--model", opt->model_dir, "Hugging Face model directory")->required();
  cmd->add_option("--input", opt->input, "JSONL file ('-' = stdin)")->capture_default_str();
  cmd->add_option("--dtype", opt->dtype, "fp32 or bf16")->capture_default_str();
  cmd->add_option("--device", opt->device, "cpu, cuda, cuda:N")->capture_default_str();
  cmd->add_option("--ids", opt->ids, "Decoders: token ids whose logits to print")->delimiter(',');
  cmd->add_option("--top-k", opt->top_k, "Decoders without --ids: print the k most likely ids")->capture_default_str();
  cmd->add_option("--max-length", opt->max_length, "Truncate text inputs to this many tokens (0 = no limit)");
  cmd->add_option("--batch-size", opt->batch_size, "Classifier rows per forward pass")->capture_default_str();
  cmd->add_flag("--no-feature", opt->no_feature, "Leave the feature vector out of the output");
  cmd->add_flag("--plain-specials", opt->plain_specials, "Tokenize special-token text in the input as plain text");
  cmd->callback([opt]() { run_forward(*opt); });
}

}  // namespace

GUARDKIT_COMMAND(20, add_forward_command);

}  // namespace guardkit::cli
