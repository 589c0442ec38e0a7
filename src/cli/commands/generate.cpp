// `guardkit generate`: text generation with a Llama or Qwen3 checkpoint — JSONL prompts in ({"text"} or {"input_ids"}),
// JSONL continuations out, with the sampling options of models/generation.h. A prompt given as ids may end
// mid-assistant-turn (a forced assistant prefix): generation simply continues it.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "models/generation.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/jsonl.h"

namespace guardkit::cli {
namespace {

struct GenerateOptions {
  std::string model_dir;
  std::string input = "-";
  std::string dtype = "fp32";
  std::string device = "cpu";
  int64_t batch = 8;
  models::GenerationOptions generation;
  bool no_bos = false;
};

void flush_batch(const GenerateOptions& opt, const models::LlamaModel& model, const text::Tokenizer* tokenizer,
                 std::vector<std::vector<int64_t>>& prompts) {
  if (prompts.empty()) return;
  models::GenerationResult result = models::generate(model, prompts, opt.generation);
  for (size_t i = 0; i < prompts.size(); ++i) {
    nlohmann::json out;
    out["prompt_tokens"] = prompts[i].size();
    out["new_ids"] = result.new_ids[i];
    out["finish_reason"] = result.finish_reasons[i];
    if (tokenizer) {
      std::vector<int32_t> ids(result.new_ids[i].begin(), result.new_ids[i].end());
      out["text"] = tokenizer->decode(ids, /*skip_special_tokens=*/true);
    }
    std::cout << to_jsonl_line(out) << '\n';
  }
  std::cout.flush();
  prompts.clear();
}

void run_generate(GenerateOptions opt, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  if (opt.batch <= 0) fail("--batch must be positive");
  auto model = models::LlamaModel::load(opt.model_dir, models::parse_dtype(opt.dtype), models::parse_device(opt.device));
  std::unique_ptr<text::Tokenizer> tokenizer;
  try {
    tokenizer = text::load_tokenizer(opt.model_dir);
  } catch (const Error&) {
    tokenizer.reset();  // ids-only use still works; "text" inputs will report the missing tokenizer
  }
  if (model->config().pad_token_id) opt.generation.pad_id = *model->config().pad_token_id;
  std::vector<std::vector<int64_t>> prompts;
  for_each_jsonl_file(opt.input, [&](const nlohmann::json& line, size_t line_number) {
    std::vector<int64_t> ids;
    if (line.contains("input_ids")) {
      if (!line["input_ids"].is_array()) fail("{}:{}: \"input_ids\" must be a list of integers", opt.input, line_number);
      for (const auto& id : line["input_ids"]) {
        if (!id.is_number_integer()) fail("{}:{}: \"input_ids\" must be a list of integers", opt.input, line_number);
        ids.push_back(id.get<int64_t>());
      }
    } else if (line.contains("text")) {
      if (!line["text"].is_string()) fail("{}:{}: \"text\" must be a string", opt.input, line_number);
      if (!tokenizer) fail("{}: no tokenizer in {} for \"text\" inputs (give \"input_ids\")", opt.input, opt.model_dir);
      const std::string text = line["text"];
      std::vector<int32_t> encoded =
          opt.no_bos ? tokenizer->encode(text) : tokenizer->encode_for_model(text).ids;
      ids.assign(encoded.begin(), encoded.end());
    } else {
      fail("{}:{}: needs \"text\" or \"input_ids\"", opt.input, line_number);
    }
    if (ids.empty()) fail("{}:{}: empty prompt", opt.input, line_number);
    for (int64_t id : ids)
      if (id < 0 || id >= model->config().vocab_size)
        fail("{}:{}: token id {} outside the vocabulary ({})", opt.input, line_number, id, model->config().vocab_size);
    prompts.push_back(std::move(ids));
    if (static_cast<int64_t>(prompts.size()) == opt.batch) flush_batch(opt, *model, tokenizer.get(), prompts);
  });
  flush_batch(opt, *model, tokenizer.get(), prompts);
}

void add_generate_command(CLI::App& app, GlobalOptions& global) {
  auto opt = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Generate text with a Llama or Qwen3 checkpoint from JSONL prompts");
  cmd->footer(
      "Input lines: {\"text\": \"...\"} (tokenized with the model's tokenizer, its BOS added unless --no-bos;\n"
      "Qwen3's tokenizer adds none) or\n"
      "{\"input_ids\": [...]} (used as is: a prompt may end mid-assistant-turn to force a prefix).\n"
      "Output lines: {\"new_ids\", \"text\", \"finish_reason\", \"prompt_tokens\"}.\n"
      "Examples:\n"
      "  echo '{\"text\":\"The capital of France is\"}' | guardkit generate --model DIR --max-new-tokens 12\n"
      "  guardkit generate --model DIR --input prompts.jsonl --sample --temperature 0.7 --top-p 0.9 --seed 1");
  cmd->add_option("--model", opt->model_dir, "Hugging Face Llama or Qwen3 directory (config.json, model.safetensors)")
      ->required();
  cmd->add_option("--input", opt->input, "JSONL file to read ('-' = stdin)")->capture_default_str();
  cmd->add_option("--dtype", opt->dtype, "fp32 or bf16")->capture_default_str();
  cmd->add_option("--device", opt->device, "cpu, cuda, cuda:N")->capture_default_str();
  cmd->add_option("--batch", opt->batch, "Prompts generated together")->capture_default_str();
  cmd->add_option("--max-new-tokens", opt->generation.max_new_tokens, "Tokens to generate at most")
      ->capture_default_str();
  cmd->add_flag("--sample", opt->generation.do_sample, "Sample instead of greedy decoding");
  cmd->add_option("--temperature", opt->generation.temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--top-k", opt->generation.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", opt->generation.top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--repetition-penalty", opt->generation.repetition_penalty, "HF repetition penalty (1 = off)")
      ->capture_default_str();
  cmd->add_option("--seed", opt->generation.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop-id", opt->generation.stop_ids, "Stop after this token id (repeatable)");
  cmd->add_flag("--no-eos-stop", [opt](int64_t) { opt->generation.stop_at_eos = false; },
                "Do not stop at the config's eos ids");
  cmd->add_flag("--no-bos", opt->no_bos, "Do not add BOS to \"text\" prompts");
  cmd->callback([opt, &global]() { run_generate(*opt, global); });
}

}  // namespace

GUARDKIT_COMMAND(21, add_generate_command);

}  // namespace guardkit::cli
