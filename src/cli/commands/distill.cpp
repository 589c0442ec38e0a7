// `guardkit distill`: HarmAug knowledge distillation of a DeBERTa student on teacher-labelled data.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "eval/datasets.h"
#include "models/deberta.h"
#include "models/deberta_config.h"
#include "models/runtime.h"
#include "text/tokenizer.h"
#include "train/distill.h"
#include "util/error.h"
#include "util/jsonl.h"
#include "util/paths.h"

namespace guardkit::cli {
namespace {
namespace fs = std::filesystem;

struct DistillArgs {
  std::string student, config, tokenizer, out = "distill_run";
  std::vector<std::string> data, eval_sets;
  size_t eval_max_rows = 0;
  bool no_balanced = false;
  train::DistillOptions options;
};

// A held-out set: a dataset name or a labelled JSONL file, optionally capped to a fixed random subset (seeded).
train::EvalSet read_eval_set(const std::string& source, size_t max_rows, uint64_t seed) {
  train::EvalSet set;
  set.name = source;
  auto rows = eval::load_dataset(source);
  if (max_rows && rows.size() > max_rows) {
    std::mt19937_64 rng(seed);
    std::shuffle(rows.begin(), rows.end(), rng);
    rows.resize(max_rows);
  }
  for (const auto& e : rows) set.examples.push_back({e.prompt, e.response, e.label, std::nullopt});
  if (set.examples.empty()) fail("evaluation set {} has no rows", source);
  return set;
}

// A JSONL of HarmAug rows ({prompt, response, unsafe-score}) or of the example schema ({prompt, response, label}).
std::vector<train::TrainExample> read_training_rows(const std::string& source) {
  std::vector<train::TrainExample> rows;
  if (!eval::is_dataset_path(source)) {
    if (const auto* info = eval::find_dataset(source); info && info->evaluation_only)
      fail("{} is licensed for evaluation only ({}): it cannot be trained on", source, info->licence);
    for (const auto& e : eval::load_dataset(source)) rows.push_back({e.prompt, e.response, e.label, std::nullopt});
    return rows;
  }
  for_each_jsonl_file(source, [&](const nlohmann::json& line, size_t n) {
    train::TrainExample e;
    if (!line.contains("prompt") || !line["prompt"].is_string()) fail("{}:{}: missing string \"prompt\"", source, n);
    e.prompt = line["prompt"].get<std::string>();
    if (line.contains("response") && line["response"].is_string()) e.response = line["response"].get<std::string>();
    if (line.contains("unsafe-score") && line["unsafe-score"].is_number()) {
      e.soft_label = line["unsafe-score"].get<double>();
      if (*e.soft_label < 0 || *e.soft_label > 1) fail("{}:{}: \"unsafe-score\" must be in [0, 1]", source, n);
    } else if (line.contains("label") && line["label"].is_number_integer()) {
      e.label = line["label"].get<int>();
    } else {
      fail("{}:{}: needs \"unsafe-score\" (teacher) or \"label\" (0/1)", source, n);
    }
    rows.push_back(std::move(e));
  });
  return rows;
}

void run_distill(DistillArgs& args, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  if (args.student.empty() == args.config.empty()) fail("give exactly one of --student DIR or --config FILE");
  if (args.data.empty()) fail("give --data: labelled JSONL files or dataset names");
  std::vector<train::TrainExample> rows;
  for (const auto& d : args.data) {
    auto part = read_training_rows(d);
    rows.insert(rows.end(), part.begin(), part.end());
  }
  if (args.no_balanced) args.options.balanced_sampler = false;
  for (const auto& name : args.eval_sets) {
    if (std::find(args.data.begin(), args.data.end(), name) != args.data.end())
      fail("{} is both training data and an evaluation set", name);
    args.options.eval_sets.push_back(read_eval_set(name, args.eval_max_rows, args.options.seed));
  }
  const fs::path tok_dir = !args.tokenizer.empty() ? fs::path(args.tokenizer) : fs::path(args.student);
  if (tok_dir.empty()) fail("--config needs --tokenizer DIR (an spm.model or tokenizer.json folder)");
  auto tokenizer = text::load_tokenizer(tok_dir);
  models::DebertaLoadOptions load;
  load.trainable = true;
  auto student = args.student.empty()
                     ? models::DebertaClassifier::random(models::DebertaConfig::load(args.config), args.options.seed, load)
                     : models::DebertaClassifier::load(args.student, load);
  auto state = train::distill(student, *tokenizer, tok_dir, rows, args.options, args.out);
  fmt::print("{} steps, final loss {:.4f}; model in {}\n", state.step, state.losses.empty() ? 0.0 : state.losses.back(),
             (fs::path(args.out) / "final").string());
  for (const auto& r : state.evals)
    if (r.step == state.step) fmt::print("  {}: {} rows, F1 {:.4f}, AUPRC {:.4f}\n", r.set, r.rows, r.f1, r.auprc);
  if (!state.evals.empty()) fmt::print("every evaluation: {}\n", (fs::path(args.out) / "log.jsonl").string());
}

void add_distill_command(CLI::App& app, GlobalOptions& global) {
  auto args = std::make_shared<DistillArgs>();
  auto* cmd = app.add_subcommand("distill", "Distil a DeBERTa student on teacher-labelled data (HarmAug loss)");
  cmd->footer(
      "Loss 0.5·(CE + KL to [1−s, s]) on rows with a teacher score s (\"unsafe-score\"), CE on rows with a \"label\".\n"
      "Killed runs resume from OUT/checkpoint; the final model (HF format with tokenizer) is OUT/final.\n"
      "Examples:\n"
      "  guardkit distill --student models/deberta-v3-small --data labelled.jsonl --out runs/student\n"
      "  guardkit distill --config tiny_config.json --tokenizer models/default/small --data xstest_prompts --epochs 1\n"
      "  guardkit distill --student models/default/small --data labelled.jsonl --eval-sets openai_moderation \\\n"
      "      --eval-every 50 --eval-max-rows 500 --bf16");
  cmd->add_option("--student", args->student, "Pretrained student model directory");
  cmd->add_option("--config", args->config, "Or: a config.json to train from scratch");
  cmd->add_option("--tokenizer", args->tokenizer, "Tokenizer directory (default: the student's)");
  cmd->add_option("--data", args->data, "Labelled JSONL files or dataset names")->required();
  cmd->add_option("--out", args->out, "Run directory")->capture_default_str();
  auto& o = args->options;
  cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW decay (not on bias/LayerNorm)")->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "Epochs")->capture_default_str();
  cmd->add_option("--max-steps", o.max_steps, "Stop after this many optimizer steps (0 = epochs)")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Examples per optimizer step")->capture_default_str();
  cmd->add_option("--micro-batch", o.micro_batch_size, "Gradient-accumulation chunk")->capture_default_str();
  cmd->add_option("--warmup", o.warmup_steps, "Linear warmup steps")->capture_default_str();
  cmd->add_option("--max-length", o.max_length, "Tokens per example")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Steps between checkpoints")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed")->capture_default_str();
  cmd->add_option("--eval-sets", args->eval_sets, "Held-out dataset names or labelled JSONL files (F1, AUPRC)");
  cmd->add_option("--eval-every", o.eval_every, "Steps between evaluations (0 = only at the end)")
      ->capture_default_str();
  cmd->add_option("--eval-max-rows", args->eval_max_rows, "Evaluate on a fixed random subset of each set (0 = all)")
      ->capture_default_str();
  cmd->add_flag("--bf16", o.bf16, "bf16 mixed precision (autocast forward; fp32 weights, optimizer and saved model)");
  cmd->add_flag("--no-balanced", args->no_balanced, "Shuffle instead of the class-balanced sampler");
  cmd->callback([args, &global]() { run_distill(*args, global); });
}

}  // namespace

GUARDKIT_COMMAND(55, add_distill_command);

}  // namespace guardkit::cli
