// `guardkit eval --model NAME --data SET...`: a guard from the models file over labelled datasets; prints the
// Markdown table, writes JSON (eval/evaluate.h).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "eval/datasets.h"
#include "eval/evaluate.h"
#include "guard/registry.h"
#include "util/error.h"
#include "util/shard.h"
#include "util/paths.h"

namespace guardkit::cli {

namespace {

struct EvalCommandOptions {
  std::string model;
  std::string models_file;
  std::vector<std::string> datasets;
  std::string json_out;
  std::string markdown_out;
  std::string predictions_dir;
  eval::EvalOptions eval;
  bool no_progress = false;
  std::string shard;
};

void run_eval(EvalCommandOptions& options) {
  guard::ModelRegistry registry = guard::ModelRegistry::load_default(options.models_file);
  const guard::ModelSpec spec = registry.resolve(options.model);
  // FLOPs for guards that report none (remote): the shape from the spec's config.json when there is one.
  if (!spec.config.empty() && std::filesystem::is_regular_file(spec.config))
    options.eval.shape = eval::load_shape(spec.config);
  if (!options.predictions_dir.empty()) options.eval.predictions_dir = std::filesystem::path(options.predictions_dir);
  options.eval.progress = !options.no_progress;
  for (const auto& name : options.datasets) {
    const eval::DatasetInfo* info = eval::find_dataset(name);
    if (info && info->kind == eval::LabelKind::kRefusal)
      fmt::print(stderr, "note: {} is labelled for refusal, not harmfulness: its scores measure agreement with refusal\n",
                 name);
  }

  std::shared_ptr<guard::Guard> guard = registry.guard(options.model);
  if (const Shard shard = parse_shard(options.shard); shard.sharded()) {
    eval::score_eval_shard(*guard, options.datasets, options.eval, shard);
    fmt::print(stderr,
               "shard {} scored into {}; when every shard is done: guardkit merge --out MERGED <shard folders>, then "
               "the same eval with --predictions MERGED (and no --shard) reports on every row\n",
               shard.label(), options.predictions_dir);
    return;
  }
  eval::EvalReport report = eval::evaluate(*guard, options.datasets, options.eval);
  const std::string markdown = eval::report_to_markdown(report);
  fmt::print("{}", markdown);
  if (!options.markdown_out.empty()) write_file_atomic(options.markdown_out, markdown);
  if (!options.json_out.empty()) write_file_atomic(options.json_out, eval::report_to_json(report).dump(2) + "\n");
}

void add_eval_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<EvalCommandOptions>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a guard on labelled datasets: P/R/F1/AUPRC/AUROC/ECE with bootstrap "
                                         "intervals, tokens, FLOPs, wall time, peak memory");
  cmd->add_option("--model", options->model, "Model name from the models file, or a model directory")->required();
  cmd->add_option("--models", options->models_file,
                  "Models configuration file (default: $GUARDKIT_MODELS, else ./models.json)");
  cmd->add_option("--data", options->datasets, "Dataset names (see `guardkit data list`) or JSONL files")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--json", options->json_out, "Write the full results as JSON here");
  cmd->add_option("--markdown", options->markdown_out, "Write the Markdown table here (it is printed anyway)");
  cmd->add_option("--predictions", options->predictions_dir,
                  "Folder for per-example predictions (<dataset>.predictions.jsonl); a rerun resumes from them");
  cmd->add_option("--batch-size", options->eval.batch_size, "Conversations per guard call")->capture_default_str();
  cmd->add_option("--limit", options->eval.limit, "Only the first N examples of each dataset (0 = all)")
      ->capture_default_str();
  cmd->add_option("--bootstrap", options->eval.metrics.bootstrap_resamples, "Bootstrap resamples (0 = no intervals)")
      ->capture_default_str();
  cmd->add_option("--seed", options->eval.metrics.seed, "Bootstrap seed")->capture_default_str();
  cmd->add_option("--ece-bins", options->eval.metrics.ece_bins, "Equal-width bins for ECE")->capture_default_str();
  cmd->add_option("--zero-division", options->eval.metrics.zero_division,
                  "Value of a 0/0 precision/recall/F1 (scikit-learn's default behaves as 0; HarmAug uses 1)")
      ->capture_default_str();
  cmd->add_flag("--no-progress", options->no_progress, "No progress bar on stderr");
  cmd->add_option("--shard", options->shard,
                  "Score only shard K of N (K/N, K from 0; auto: from $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT or "
                  "$JOB_COMPLETION_INDEX) into --predictions; join the shards with `guardkit merge`");
  cmd->callback([options]() { run_eval(*options); });
}

}  // namespace

GUARDKIT_COMMAND(32, add_eval_command);

}  // namespace guardkit::cli
