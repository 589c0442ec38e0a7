// `guardkit eval`: run a guard over labelled datasets and measure it as the papers do (papers.md §1.5, §2.3-2.4):
// precision / recall / F1 / AUPRC / AUROC / ECE with bootstrap intervals per dataset and their macro average, and the
// cost columns: tokens, FLOPs, wall time, peak memory. Examples are scored in batches sorted by length (so a batch
// wastes little padding) and results go back to dataset order; predictions can be logged per dataset so a killed
// run resumes where it stopped.
#pragma once
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/cost.h"
#include "eval/example.h"
#include "eval/metrics.h"
#include "guard/guard.h"
#include "util/shard.h"

namespace guardkit::eval {

struct EvalOptions {
  size_t batch_size = 16;
  bool sort_by_length = true;
  size_t limit = 0;  // score only the first `limit` examples of each dataset (0 = all): quick looks
  MetricOptions metrics;
  bool progress = true;  // progress bar with ETA on stderr
  // FLOPs for guards that report none (remote guards): estimated from this shape and the tokens the guard reports.
  std::optional<TransformerShape> shape;
  // When set: <dir>/<dataset>.predictions.jsonl, appended after every batch and reused on the next run.
  std::optional<std::filesystem::path> predictions_dir;
};

// One shard of an eval (util/shard.h): scores only the rows the shard owns (after `limit`) into the predictions
// folder, which must be set, and records shard.json there (incomplete while running). `guardkit merge` joins the
// shards' predictions; `guardkit eval --predictions MERGED` then scores nothing and reports on every row.
void score_eval_shard(guard::Guard& guard, const std::vector<std::string>& datasets, const EvalOptions& options,
                      const Shard& shard);

struct DatasetResult {
  std::string name;
  std::string label_kind;  // "prompt", "response", "refusal", "harmful-prompts", or "user" for a JSONL file
  MetricReport metrics;
  int64_t tokens = 0;
  double flops = 0.0;
  double wall_seconds = 0.0;        // this run's scoring time (resumed predictions cost none)
  int64_t scored_this_run = 0;      // examples scored now (the rest came from the predictions log)
  int64_t peak_rss_bytes = 0;       // process peak after this dataset
  std::vector<double> p_unsafe;     // per example, dataset order
  std::vector<int> predictions;
};

struct EvalReport {
  std::string model;
  double threshold = 0.5;
  EvalOptions options;
  std::vector<DatasetResult> datasets;
  MetricReport average;  // macro average over datasets
};

// Scores `examples` (already loaded) with `guard`.
DatasetResult evaluate_dataset(guard::Guard& guard, const std::string& name, const std::vector<Example>& examples,
                               const EvalOptions& options);

// Loads each dataset by name or path (eval/datasets.h) and evaluates it.
EvalReport evaluate(guard::Guard& guard, const std::vector<std::string>& datasets, const EvalOptions& options);

nlohmann::json report_to_json(const EvalReport& report);
std::string report_to_markdown(const EvalReport& report);

}  // namespace guardkit::eval
