#include "eval/evaluate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "eval/datasets.h"
#include "util/error.h"
#include "util/jsonl.h"
#include "util/progress.h"

namespace guardkit::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

guard::Conversation conversation_of(const Example& example) {
  return guard::Conversation::from_pair(example.prompt, example.response);
}

struct Scored {
  double p_unsafe = 0.0;
  int unsafe = 0;
  int64_t tokens = 0;
  double flops = 0.0;
};

// A file name for a dataset name or path ("toxicchat", "data/my set.jsonl" -> "my_set").
std::string log_name(const std::string& dataset) {
  std::string stem = fs::path(dataset).filename().string();
  for (const char* suffix : {".gz", ".jsonl"})
    if (stem.size() > std::strlen(suffix) && stem.ends_with(suffix)) stem.resize(stem.size() - std::strlen(suffix));
  for (char& c : stem)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return stem;
}

}  // namespace

DatasetResult evaluate_dataset(guard::Guard& guard, const std::string& name, const std::vector<Example>& all_examples,
                               const EvalOptions& options) {
  if (options.batch_size == 0) fail("eval: batch size must be at least 1");
  const size_t n = options.limit ? std::min(options.limit, all_examples.size()) : all_examples.size();
  if (n == 0) fail("eval: dataset {} has no examples", name);
  const std::vector<Example> examples(all_examples.begin(), all_examples.begin() + static_cast<ptrdiff_t>(n));

  DatasetResult result;
  result.name = name;
  std::vector<std::optional<Scored>> scored(n);

  // Resume: reuse the predictions logged by an earlier (killed) run of the same guard on the same dataset.
  std::ofstream log;
  fs::path log_path;
  if (options.predictions_dir) {
    fs::create_directories(*options.predictions_dir);
    log_path = *options.predictions_dir / (log_name(name) + ".predictions.jsonl");
    std::map<std::string, size_t> index_of;
    for (size_t i = 0; i < n; ++i)
      if (!index_of.emplace(examples[i].id, i).second)
        fail("eval: dataset {} has the id '{}' twice; a predictions log needs unique ids", name, examples[i].id);
    for (const json& row : read_jsonl_log_for_resume(log_path)) {
      if (row.value("model", std::string()) != guard.name())
        fail("{}: written by model '{}', not '{}'; use another predictions folder", log_path.string(),
             row.value("model", std::string()), guard.name());
      auto it = index_of.find(row.value("id", std::string()));
      if (it == index_of.end()) continue;
      scored[it->second] = Scored{row.at("p_unsafe").get<double>(), row.at("unsafe").get<bool>() ? 1 : 0,
                                  row.value("tokens", int64_t{0}), row.value("flops", 0.0)};
    }
    log.open(log_path, std::ios::app | std::ios::binary);
    if (!log) fail("{}: cannot open for appending", log_path.string());
  }

  // Longest first: the most padding-sensitive batches run together, and a too-large batch fails at once.
  std::vector<size_t> todo;
  for (size_t i = 0; i < n; ++i)
    if (!scored[i]) todo.push_back(i);
  auto length_of = [&](size_t i) { return examples[i].prompt.size() + (examples[i].response ? examples[i].response->size() : 0); };
  if (options.sort_by_length)
    std::stable_sort(todo.begin(), todo.end(), [&](size_t a, size_t b) { return length_of(a) > length_of(b); });

  CostMeter meter;
  ProgressBar progress(fmt::format("{} on {}", guard.name(), name), n, options.progress);
  progress.update(n - todo.size());
  for (size_t start = 0; start < todo.size(); start += options.batch_size) {
    const size_t end = std::min(todo.size(), start + options.batch_size);
    std::vector<guard::Conversation> batch;
    for (size_t k = start; k < end; ++k) batch.push_back(conversation_of(examples[todo[k]]));
    std::vector<guard::GuardResult> results = guard.score(batch);
    if (results.size() != batch.size())
      fail("eval: guard {} returned {} results for {} conversations", guard.name(), results.size(), batch.size());
    for (size_t k = start; k < end; ++k) {
      const guard::GuardResult& r = results[k - start];
      if (!(r.p_unsafe >= 0.0 && r.p_unsafe <= 1.0))
        fail("eval: guard {} gave P(unsafe) = {} for {}", guard.name(), r.p_unsafe, examples[todo[k]].id);
      double flops = r.flops;
      if (flops == 0.0 && r.tokens > 0 && options.shape) flops = forward_flops(*options.shape, r.tokens);
      scored[todo[k]] = Scored{r.p_unsafe, r.unsafe ? 1 : 0, r.tokens, flops};
      if (log.is_open())
        log << to_jsonl_line(json{{"id", examples[todo[k]].id}, {"model", guard.name()}, {"label", examples[todo[k]].label},
                                  {"p_unsafe", r.p_unsafe}, {"unsafe", r.unsafe}, {"tokens", r.tokens}, {"flops", flops}})
            << '\n';
    }
    if (log.is_open()) {
      log.flush();
      if (!log) fail("{}: write failed (disk full?)", log_path.string());
    }
    result.scored_this_run += static_cast<int64_t>(end - start);
    progress.update(n - todo.size() + end);
  }
  progress.finish();
  result.wall_seconds = meter.seconds();
  result.peak_rss_bytes = meter.peak_rss();

  std::vector<int> labels(n);
  result.p_unsafe.resize(n);
  result.predictions.resize(n);
  for (size_t i = 0; i < n; ++i) {
    labels[i] = examples[i].label;
    result.p_unsafe[i] = scored[i]->p_unsafe;
    result.predictions[i] = scored[i]->unsafe;
    result.tokens += scored[i]->tokens;
    result.flops += scored[i]->flops;
  }
  result.metrics = compute_metrics(labels, result.p_unsafe, result.predictions, options.metrics);
  return result;
}

void score_eval_shard(guard::Guard& guard, const std::vector<std::string>& datasets, const EvalOptions& options,
                      const Shard& shard) {
  if (!options.predictions_dir) fail("eval --shard: give --predictions FOLDER, where this shard's rows are written");
  if (datasets.empty()) fail("eval: no datasets given");
  std::vector<std::vector<Example>> loaded;
  for (const auto& name : datasets) loaded.push_back(load_dataset(name));
  // Every row of the whole job goes into the fingerprint, so shards of different inputs never merge.
  Fingerprint inputs;
  for (size_t d = 0; d < datasets.size(); ++d) {
    const size_t n = options.limit ? std::min(options.limit, loaded[d].size()) : loaded[d].size();
    inputs.add(log_name(datasets[d]));
    for (size_t i = 0; i < n; ++i) {
      const Example& e = loaded[d][i];
      inputs.add(e.id).add(e.prompt).add(e.response ? "+" + *e.response : "-").add(std::to_string(e.label));
    }
  }
  ShardManifest manifest;
  manifest.job = "eval";
  manifest.shard = shard;
  manifest.inputs_fingerprint = inputs.hex();
  manifest.options = {{"model", guard.name()}, {"datasets", datasets}, {"limit", options.limit}};
  manifest.rows = json::object();
  write_shard_manifest(*options.predictions_dir, manifest);  // incomplete until every dataset is scored

  EvalOptions shard_options = options;
  shard_options.limit = 0;                      // applied below, before the shard takes its rows
  shard_options.metrics.bootstrap_resamples = 0;  // a shard's own metrics are thrown away
  for (size_t d = 0; d < datasets.size(); ++d) {
    const size_t n = options.limit ? std::min(options.limit, loaded[d].size()) : loaded[d].size();
    std::vector<Example> owned;
    for (size_t i = 0; i < n; ++i)
      if (shard.owns(loaded[d][i].id)) owned.push_back(loaded[d][i]);
    const std::string file = log_name(datasets[d]) + ".predictions.jsonl";
    if (!owned.empty()) evaluate_dataset(guard, datasets[d], owned, shard_options);
    manifest.rows[file] = owned.size();
  }
  manifest.complete = true;
  write_shard_manifest(*options.predictions_dir, manifest);
}

EvalReport evaluate(guard::Guard& guard, const std::vector<std::string>& datasets, const EvalOptions& options) {
  if (datasets.empty()) fail("eval: no datasets given");
  EvalReport report;
  report.model = guard.name();
  report.threshold = guard.threshold();
  report.options = options;
  // Load everything first: a typo in the last dataset name fails before an hour of scoring.
  std::vector<std::vector<Example>> loaded;
  for (const auto& name : datasets) loaded.push_back(load_dataset(name));
  for (size_t d = 0; d < datasets.size(); ++d) {
    DatasetResult result = evaluate_dataset(guard, datasets[d], loaded[d], options);
    const DatasetInfo* info = find_dataset(datasets[d]);
    result.label_kind = info ? label_kind_name(info->kind) : "user";
    report.datasets.push_back(std::move(result));
  }
  std::vector<MetricReport> reports;
  for (const auto& result : report.datasets) reports.push_back(result.metrics);
  report.average = average_reports(reports, options.metrics);
  return report;
}

namespace {

json metrics_json(const MetricReport& metrics) {
  json out = json::object();
  for (int m = 0; m < kMetricCount; ++m) {
    auto number = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
    out[kMetricNames[m]] = {{"value", number(metrics.value[m])},
                            {"ci95", {number(metrics.interval[m].low), number(metrics.interval[m].high)}}};
  }
  return out;
}

}  // namespace

json report_to_json(const EvalReport& report) {
  json out;
  out["model"] = report.model;
  out["threshold"] = report.threshold;
  out["settings"] = {{"positive_class", "unsafe (label 1)"},
                     {"zero_division", report.options.metrics.zero_division},
                     {"ece_bins", report.options.metrics.ece_bins},
                     {"bootstrap_resamples", report.options.metrics.bootstrap_resamples},
                     {"confidence", report.options.metrics.confidence},
                     {"seed", report.options.metrics.seed},
                     {"batch_size", report.options.batch_size},
                     {"limit", report.options.limit}};
  json rows = json::array();
  for (const auto& result : report.datasets) {
    const MetricReport& m = result.metrics;
    rows.push_back({{"dataset", result.name},
                    {"label_kind", result.label_kind},
                    {"examples", m.examples},
                    {"positives", m.positives},
                    {"predicted_positives", m.predicted_positives},
                    {"confusion", {{"tp", m.confusion.tp}, {"fp", m.confusion.fp}, {"tn", m.confusion.tn}, {"fn", m.confusion.fn}}},
                    {"metrics", metrics_json(m)},
                    {"tokens", result.tokens},
                    {"flops", result.flops},
                    {"wall_seconds", result.wall_seconds},
                    {"scored_this_run", result.scored_this_run},
                    {"examples_per_second",
                     result.wall_seconds > 0 ? static_cast<double>(result.scored_this_run) / result.wall_seconds : 0.0},
                    {"peak_rss_bytes", result.peak_rss_bytes}});
  }
  out["datasets"] = rows;
  int64_t tokens = 0;
  double flops = 0.0, wall = 0.0;
  for (const auto& result : report.datasets) tokens += result.tokens, flops += result.flops, wall += result.wall_seconds;
  out["average"] = {{"metrics", metrics_json(report.average)},
                    {"datasets", report.datasets.size()},
                    {"examples", report.average.examples},
                    {"tokens", tokens},
                    {"flops", flops},
                    {"wall_seconds", wall},
                    {"peak_rss_bytes", report.datasets.empty() ? 0 : report.datasets.back().peak_rss_bytes}};
  return out;
}

std::string report_to_markdown(const EvalReport& report) {
  auto cell = [](const MetricReport& m, int metric) {
    const double v = m.value[metric];
    if (std::isnan(v)) return std::string("n/a");
    const Interval& ci = m.interval[metric];
    if (std::isnan(ci.low)) return fmt::format("{:.4f}", v);
    return fmt::format("{:.4f} [{:.3f}, {:.3f}]", v, ci.low, ci.high);
  };
  std::string out = fmt::format(
      "Model `{}`, threshold {}; positive = unsafe; 95% bootstrap intervals ({} resamples, seed {}); ECE over {} "
      "equal-width bins; zero_division = {}.\n\n",
      report.model, report.threshold, report.options.metrics.bootstrap_resamples, report.options.metrics.seed,
      report.options.metrics.ece_bins, report.options.metrics.zero_division);
  out += "| dataset | label | n | unsafe | precision | recall | F1 | AUPRC | AUROC | ECE | FPR | tokens | FLOPs | wall | "
         "peak RSS |\n";
  out += "|---|---|---:|---:|---|---|---|---|---|---|---|---:|---:|---:|---:|\n";
  int64_t tokens = 0;
  double flops = 0.0, wall = 0.0;
  for (const auto& r : report.datasets) {
    const MetricReport& m = r.metrics;
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} s | {} |\n", r.name,
                       r.label_kind, m.examples, m.positives, cell(m, kPrecision), cell(m, kRecall), cell(m, kF1),
                       cell(m, kAuprc), cell(m, kAuroc), cell(m, kEce), cell(m, kFpr), r.tokens,
                       format_flops(r.flops), r.wall_seconds, format_bytes(r.peak_rss_bytes));
    tokens += r.tokens, flops += r.flops, wall += r.wall_seconds;
  }
  const MetricReport& a = report.average;
  out += fmt::format("| **average** | | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} s | {} |\n",
                     a.examples, a.positives, cell(a, kPrecision), cell(a, kRecall), cell(a, kF1), cell(a, kAuprc),
                     cell(a, kAuroc), cell(a, kEce), cell(a, kFpr), tokens, format_flops(flops), wall,
                     format_bytes(report.datasets.empty() ? 0 : report.datasets.back().peak_rss_bytes));
  bool refusal = false, one_class = false;
  for (const auto& r : report.datasets) {
    refusal |= r.label_kind == "refusal";
    one_class |= std::isnan(r.metrics.value[kAuroc]);
  }
  out += "\nThe average is the macro mean over datasets (per resample for its interval). FPR = the share of safe "
         "examples flagged unsafe (over-flagging).";
  bool benign = false;
  for (const auto& r : report.datasets) benign |= r.metrics.positives == 0;
  if (benign) out += " On a set with no unsafe example F1 is only zero_division: read its FPR.";
  if (one_class) out += " AUROC is n/a for a dataset with one class (behaviour lists); the average skips it.";
  if (refusal) out += " Label `refusal` means the model refused, not that the response is unsafe.";
  out += "\n";
  return out;
}

}  // namespace guardkit::eval
