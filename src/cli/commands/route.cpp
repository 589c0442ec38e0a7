// `guardkit route features|train|eval`: SafeRoute end to end.
//   paraphrase: augment router training data with LLM paraphrases (papers.md §1.2), scored by both guards
//   features: score a dataset with the small guard (+ features) and the large guard, cache to safetensors
//   train:    train the Bayesian router on a cache; save router.safetensors + router.json
//   eval:     SafeRoute and every baseline on test caches: safety F1, routing F1, large share, relative FLOPs and
//             latency; trade-off curves over ε as JSON and SVG
// Guards are resolved through guard/registry.h: names from a models file, or model directories named directly.
#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "eval/plot_svg.h"
#include "guard/registry.h"
#include "models/runtime.h"
#include "route/baselines.h"
#include "route/features.h"
#include "augment/backends.h"
#include "route/metrics.h"
#include "route/paraphrase.h"
#include "route/router.h"
#include "route/threshold.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void write_text(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) fail("{}: cannot write", tmp.string());
  }
  fs::rename(tmp, path);
}

double resolve_threshold(const route::ThresholdSpec& spec, route::Router& router, const route::FeatureCache* reference,
                         double delta) {
  using K = route::ThresholdSpec::Kind;
  switch (spec.kind) {
    case K::Default: return router.default_threshold();
    case K::Fixed: return spec.value;
    case K::Share:
      if (!reference) fail("threshold '{}' needs a reference cache", spec.to_string());
      return route::threshold_for_share(router.scores(route::RouteBatch::of(*reference)), spec.value);
    case K::BestF1:
      if (!reference) fail("threshold 'f1' needs a validation cache");
      return route::best_f1_threshold(router.scores(route::RouteBatch::of(*reference)),
                                      reference->routing_labels(delta));
  }
  return router.default_threshold();
}

struct FeaturesArgs {
  std::string small, large, data, out, models;
  int batch = 8;
  size_t limit = 0;
};

struct ParaphraseArgs {
  std::string llm, llm_model, data, small, large, models, out, style = "code";
  route::ParaphraseOptions options;
  int guard_batch = 8;
  size_t limit = 0;
};

struct TrainArgs {
  std::vector<std::string> train;
  std::string val, out, threshold = "default";
  route::RouterConfig config;
};

struct EvalArgs {
  std::string router, train, reference, out, threshold = "default";
  std::vector<std::string> tests;
  int points = 21;
  double random_p = 0.5;
  uint64_t seed = 0;
  std::vector<std::string> baselines = route::baseline_names();
};

void run_features(const FeaturesArgs& a, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  auto examples = route::load_labeled(a.data);
  if (a.limit && examples.size() > a.limit) examples.resize(a.limit);
  auto registry = guard::ModelRegistry::load_default(a.models);
  auto small = registry.guard(a.small);
  auto large = registry.guard(a.large);
  route::FeatureBuildOptions options;
  options.batch_size = a.batch;
  const auto cache = route::build_feature_cache(*small, *large, examples, options, fs::path(a.out));
  const auto t = cache.routing_labels();
  size_t hard = 0;
  for (int v : t) hard += v;
  fmt::print("{}: {} items, {}-d features from {}, t=1 for {} ({:.1f}%), small {:.1f}s, large {:.1f}s\n", a.out,
             cache.size(), cache.dim, cache.feature_source, hard, 100.0 * hard / std::max<size_t>(1, cache.size()),
             cache.seconds_small, cache.seconds_large);
}

void run_paraphrase(const ParaphraseArgs& a, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  route::ParaphraseOptions options = a.options;
  if (a.style == "code") options.style = route::ParaphraseStyle::Code;
  else if (a.style == "paper") options.style = route::ParaphraseStyle::Paper;
  else fail("--style must be 'code' or 'paper', got '{}'", a.style);
  if (a.guard_batch <= 0) fail("--guard-batch must be positive, got {}", a.guard_batch);
  auto sources = route::load_labeled(a.data);
  if (a.limit && sources.size() > a.limit) sources.resize(a.limit);
  // Guards first: a wrong name fails before any LLM time is spent.
  auto registry = guard::ModelRegistry::load_default(a.models);
  auto small = registry.guard(a.small);
  auto large = registry.guard(a.large);
  const fs::path out(a.out);
  fs::create_directories(out);
  const fs::path log = out / "paraphrases.jsonl", cache_path = out / "features.safetensors";

  route::ParaphraseLogResult result;
  {
    auto backend = augment::make_llm_backend(a.llm, a.llm_model);
    result = route::paraphrase_to_log(*backend, sources, options, log);
  }  // the generator's memory is freed before the guards run
  const auto& r = result.this_run;
  fmt::print("{}: {} lines ({} parsed, {} unparsable and dropped); this run: {} requests ({} already logged), {} parsed, "
             "{} unparsable, {} failed (retried by the next run)\n",
             log.string(), result.logged, result.parsed.size(), result.unparsable, r.requested, result.skipped,
             r.parsed, r.dropped_unparsable, r.failed_requests);

  // Labels re-derived: every parsed paraphrase is scored by both guards (features from the small guard's pass). A
  // finished cache whose ids start the parsed list is continued: it becomes the partial of the longer one.
  if (fs::exists(cache_path)) {
    const auto previous = route::load_feature_cache(cache_path);
    bool prefix = previous.size() <= result.parsed.size();
    for (size_t i = 0; prefix && i < previous.size(); ++i) prefix = previous.ids[i] == result.parsed[i].id;
    if (!prefix) fail("{}: does not match {} (delete it to rescore)", cache_path.string(), log.string());
    if (previous.size() < result.parsed.size()) fs::rename(cache_path, cache_path.string() + ".partial");
  }
  route::FeatureCache cache;
  if (fs::exists(cache_path)) {
    cache = route::load_feature_cache(cache_path);
    fmt::print("{}: up to date ({} rows)\n", cache_path.string(), cache.size());
  } else {
    route::FeatureBuildOptions build;
    build.batch_size = a.guard_batch;
    cache = route::build_feature_cache(*small, *large, result.parsed, build, cache_path);
  }
  size_t hard = 0;
  for (int v : cache.routing_labels()) hard += v;
  fmt::print("{}: {} paraphrases, {}-d features from {}, t=1 for {} ({:.1f}%)\n", cache_path.string(), cache.size(),
             cache.dim, cache.feature_source, hard, 100.0 * hard / std::max<size_t>(1, cache.size()));
  fmt::print("train on original + paraphrases: guardkit route train --train ORIGINAL.safetensors --train {} --out "
             "ROUTER_DIR\n",
             cache_path.string());
}

// One or more caches, concatenated (e.g. the original data and its paraphrases); they must share the feature source.
route::FeatureCache load_training_caches(const std::vector<std::string>& paths) {
  route::FeatureCache all;
  for (const auto& path : paths) {
    auto cache = route::load_feature_cache(path);
    if (all.size() > 0 && cache.feature_source != all.feature_source)
      fail("{}: features from '{}', but {} has features from '{}' (train on caches from one small guard)", path,
           cache.feature_source, paths.front(), all.feature_source);
    if (all.size() == 0) all = std::move(cache);
    else all.append(cache);
  }
  std::set<std::string> ids;
  for (const auto& id : all.ids)
    if (!ids.insert(id).second) fail("training caches hold item '{}' twice (the same cache given twice?)", id);
  return all;
}

void run_train(TrainArgs a, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  const auto train = load_training_caches(a.train);
  if (a.train.size() > 1) fmt::print("training on {} items from {} caches\n", train.size(), a.train.size());
  std::optional<route::FeatureCache> val;
  if (!a.val.empty()) val = route::load_feature_cache(a.val);
  const auto spec = route::ThresholdSpec::parse(a.threshold);
  auto router = route::SafeRouteRouter::train(train, a.config, fs::path(a.out) / "checkpoint");
  const route::FeatureCache* reference = val ? &*val : &train;
  router.set_threshold(resolve_threshold(spec, router, reference, a.config.delta));
  router.save(a.out);
  fs::remove_all(fs::path(a.out) / "checkpoint");
  if (val) {
    const auto m = route::evaluate_routing(*val, router.scores(route::RouteBatch::of(*val)),
                                           router.default_threshold(), "saferoute", a.config.delta);
    fmt::print("validation: routing F1 {:.4f} (P {:.4f} R {:.4f}), safety F1 {:.4f}, large share {:.3f}\n",
               m.routing.f1, m.routing.precision, m.routing.recall, m.safety.f1, m.large_share);
  }
  fmt::print("router saved to {} (threshold {:.6g}, {} epochs)\n", a.out, router.default_threshold(),
             router.history().size());
}

std::string fmt_or_dash(double v, const char* format = "{:.4f}") {
  return std::isfinite(v) ? fmt::format(fmt::runtime(format), v) : "-";
}

void run_eval(const EvalArgs& a, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  if (a.tests.empty()) fail("route eval: give at least one --test cache");
  const auto train = route::load_feature_cache(a.train);
  std::optional<route::FeatureCache> reference;
  if (!a.reference.empty()) reference = route::load_feature_cache(a.reference);
  const auto spec = route::ThresholdSpec::parse(a.threshold);
  fs::create_directories(a.out);

  // Routers: SafeRoute (when given) and the baselines, all fitted on the training cache where they need fitting.
  std::vector<std::shared_ptr<route::Router>> routers;
  if (!a.router.empty()) routers.push_back(std::make_shared<route::SafeRouteRouter>(route::SafeRouteRouter::load(a.router)));
  for (const auto& name : a.baselines) {
    try {
      routers.push_back(route::make_baseline(name, train, a.random_p, a.seed));
    } catch (const Error& e) {
      spdlog::warn("skipping baseline {}: {}", name, e.what());
    }
  }
  std::vector<double> thresholds;
  for (auto& r : routers) {
    // A fixed ε / default applies to every router; share and f1 are calibrated per router on the reference set.
    thresholds.push_back(resolve_threshold(spec, *r, reference ? &*reference : nullptr, route::kDefaultDelta));
  }

  json results = {{"train", a.train}, {"threshold", spec.to_string()}, {"datasets", json::array()}};
  std::string md = "# SafeRoute evaluation\n\n";
  std::map<std::string, std::vector<double>> average_routing_f1;
  for (const auto& test_path : a.tests) {
    const auto test = route::load_feature_cache(test_path);
    const std::string dataset = fs::path(test_path).stem().string();
    json rows = json::array();
    md += fmt::format("## {} ({} items)\n\n| router | ε | safety F1 | AUPRC | routing F1 | large share | FLOPs vs small "
                      "| FLOPs vs large | latency vs small | latency vs large |\n|---|---|---|---|---|---|---|---|---|---|\n",
                      dataset, test.size());
    eval::LinePlot f1_plot{fmt::format("{}: safety F1 vs large-model share", dataset), "large-model share",
                           "safety F1", {}, 0.0, 1.0};
    eval::LinePlot auprc_plot{fmt::format("{}: AUPRC vs large-model share", dataset), "large-model share", "AUPRC", {},
                              0.0, 1.0};
    json curves = json::object();
    for (size_t k = 0; k < routers.size(); ++k) {
      auto& router = *routers[k];
      const auto scores = router.scores(route::RouteBatch::of(test));
      const auto m = route::evaluate_routing(test, scores, thresholds[k], router.name());
      rows.push_back(route::to_json(m));
      average_routing_f1[router.name()].push_back(m.routing.f1);
      md += fmt::format("| {} | {:.4g} | {:.4f} | {} | {:.4f} | {:.3f} | {} | {} | {} | {} |\n", router.name(),
                        thresholds[k], m.safety.f1, fmt_or_dash(m.auprc), m.routing.f1, m.large_share,
                        fmt_or_dash(m.flops_vs_small, "{:.3f}"), fmt_or_dash(m.flops_vs_large, "{:.3f}"),
                        fmt_or_dash(m.latency_vs_small, "{:.3f}"), fmt_or_dash(m.latency_vs_large, "{:.3f}"));
      if (router.name() == "small_only" || router.name() == "large_only") continue;  // single points, not curves
      const auto curve = route::sweep_tradeoff(test, scores, router.name(), a.points);
      json points = json::array();
      eval::PlotSeries f1_series{router.name(), {}, {}}, auprc_series{router.name(), {}, {}};
      f1_series.dashed = auprc_series.dashed = router.name() == "oracle";
      for (const auto& p : curve) {
        points.push_back(route::to_json(p));
        f1_series.x.push_back(p.large_share), f1_series.y.push_back(p.safety.f1);
        auprc_series.x.push_back(p.large_share), auprc_series.y.push_back(p.auprc);
      }
      curves[router.name()] = points;
      f1_plot.series.push_back(std::move(f1_series));
      auprc_plot.series.push_back(std::move(auprc_series));
    }
    md += "\n";
    eval::write_svg(fs::path(a.out) / (dataset + "_f1_vs_share.svg"), f1_plot);
    eval::write_svg(fs::path(a.out) / (dataset + "_auprc_vs_share.svg"), auprc_plot);
    write_text(fs::path(a.out) / (dataset + "_tradeoff.json"), json({{"dataset", dataset}, {"curves", curves}}).dump(1));
    results["datasets"].push_back({{"dataset", dataset}, {"path", test_path}, {"n", test.size()}, {"rows", rows}});
  }
  md += "## Average routing F1\n\n| router | routing F1 |\n|---|---|\n";
  for (auto& r : routers) {
    const auto& v = average_routing_f1[r->name()];
    double mean = 0;
    for (double x : v) mean += x;
    md += fmt::format("| {} | {:.4f} |\n", r->name(), v.empty() ? 0.0 : mean / v.size());
  }
  write_text(fs::path(a.out) / "results.json", results.dump(1));
  write_text(fs::path(a.out) / "results.md", md);
  fmt::print("{}", md);
  fmt::print("wrote {}/results.json, results.md and per-dataset *_tradeoff.json / *.svg / *.png\n", a.out);
}

void add_route_command(CLI::App& app, GlobalOptions& global) {
  auto* route = app.add_subcommand("route", "SafeRoute: features, router training, evaluation against baselines");
  route->require_subcommand(1);

  auto fa = std::make_shared<FeaturesArgs>();
  auto* features = route->add_subcommand("features", "Score a dataset with both guards and cache the router features");
  features->add_option("--small", fa->small, "small guard: model name (models file) or directory; gives the features")
      ->required();
  features->add_option("--large", fa->large, "large guard: model name (models file, may be remote) or directory")
      ->required();
  features->add_option("--models", fa->models, "models file (default: $GUARDKIT_MODELS or ./models.json)");
  features->add_option("--data", fa->data, "dataset name (guardkit data list) or JSONL file")->required();
  features->add_option("--out", fa->out, "output cache (.safetensors); resumes from <out>.partial")->required();
  features->add_option("--batch", fa->batch, "conversations per guard call")->capture_default_str();
  features->add_option("--limit", fa->limit, "score only the first N examples (0 = all)");
  features->callback([fa, &global]() { run_features(*fa, global); });

  auto ta = std::make_shared<TrainArgs>();
  auto* train = route->add_subcommand("train", "Train the SafeRoute Bayesian router on a feature cache");
  train->footer(
      "Time (docs/BENCHMARKS.md, 2 cores): 10,000 cached 2048-d features (a Llama-Guard-3-1B small guard), the paper's\n"
      "1000 epochs: ~4 min with --bf16, ~7.6 min in fp32. Killed runs resume (state in --out/checkpoint/).\n"
      "Example:\n  guardkit route train --train feats.safetensors --val val.safetensors --out router --bf16 "
      "--threshold share:0.2");
  train->add_option("--train", ta->train,
                    "training feature cache; repeat to concatenate (e.g. original + route paraphrase's cache)")
      ->required();
  train->add_option("--val", ta->val, "validation feature cache (metrics; reference for share/f1 thresholds)");
  train->add_option("--out", ta->out, "router directory")->required();
  train->add_option("--epochs", ta->config.epochs, "epochs (paper: 1000)")->capture_default_str();
  train->add_option("--batch", ta->config.batch_size, "mini-batch size")->capture_default_str();
  train->add_option("--lr", ta->config.lr, "peak learning rate")->capture_default_str();
  train->add_option("--warmup", ta->config.warmup_steps, "linear warmup steps")->capture_default_str();
  train->add_option("--weight-decay", ta->config.weight_decay, "AdamW weight decay (0 = the paper's Adam)")
      ->capture_default_str();
  train->add_option("--hidden", ta->config.hidden, "hidden width")->capture_default_str();
  train->add_option("--kl-weight", ta->config.kl_weight, "KL weight")->capture_default_str();
  train->add_option("--prior-sigma", ta->config.prior_sigma, "prior standard deviation")->capture_default_str();
  train->add_option("--mc-samples", ta->config.mc_samples,
                    "inference: 0 = posterior mean (authors' code), k = mean of k posterior samples (paper: 1)")
      ->capture_default_str();
  train->add_option("--seed", ta->config.seed, "seed")->capture_default_str();
  train->add_flag("!--no-balance", ta->config.class_balanced, "plain shuffling instead of class-balanced sampling");
  train->add_flag("--bf16", ta->config.bf16,
                  "bfloat16 GEMMs for the wide layers while training (oneDNN; ~2x faster on AVX512_BF16 CPUs, "
                  "weights stay fp32)");
  train->add_option("--threshold", ta->threshold, "default (0.5) | number | share:F | f1")->capture_default_str();
  train->callback([ta, &global]() { run_train(*ta, global); });

  auto pa = std::make_shared<ParaphraseArgs>();
  auto* para = route->add_subcommand(
      "paraphrase", "Augment router training data: LLM paraphrases of each item, relabelled by both guards");
  para->add_option("--llm", pa->llm, "generator: Llama checkpoint directory, or an OpenAI-compatible base URL")
      ->required();
  para->add_option("--llm-model", pa->llm_model, "model name sent to the URL (ignored for a directory)");
  para->add_option("--data", pa->data, "items to paraphrase: dataset name or JSONL (the router's training data)")
      ->required();
  para->add_option("--small", pa->small, "small guard (gives the features): model name or directory")->required();
  para->add_option("--large", pa->large, "large guard: model name (may be remote) or directory")->required();
  para->add_option("--models", pa->models, "models file (default: $GUARDKIT_MODELS or ./models.json)");
  para->add_option("--out", pa->out, "output directory: paraphrases.jsonl (log) and features.safetensors")
      ->required();
  para->add_option("--rounds", pa->options.rounds, "paraphrases per item (one per round)")->capture_default_str();
  para->add_option("--style", pa->style, "prompt: code (the authors' paraphrase.py) or paper (Fig. 10)")
      ->capture_default_str();
  para->add_option("--temperature", pa->options.temperature, "sampling temperature")->capture_default_str();
  para->add_option("--max-tokens", pa->options.max_tokens, "tokens per paraphrase at most")->capture_default_str();
  para->add_option("--batch", pa->options.batch_size, "requests per LLM call (rows are logged per call)")
      ->capture_default_str();
  para->add_option("--guard-batch", pa->guard_batch, "conversations per guard call")->capture_default_str();
  para->add_option("--seed", pa->options.seed, "request seeds derive from it (reproducible where the backend is)")
      ->capture_default_str();
  para->add_option("--limit", pa->limit, "paraphrase only the first N items (0 = all)");
  para->footer(R"(Each item is paraphrased once per round with the paper's prompt; outputs that do not parse as
"prompt: ... response: ..." are dropped (and counted), the harmfulness label is copied from the item, and every
paraphrase is scored by the small guard (features, same pass) and the large guard, so the routing label t is derived
again. A killed run resumes: requests already in paraphrases.jsonl are not asked again, failed requests are retried,
and scoring continues from features.safetensors.partial. Rerunning with more --rounds adds only the new rounds.

Example (the paper's recipe: 7 rounds with Llama-3.1-8B-Instruct behind vLLM):
  guardkit route features --small lg1b --large lg8b --data wgm_train.jsonl --out train.safetensors
  guardkit route paraphrase --llm http://localhost:8000 --llm-model meta-llama/Llama-3.1-8B-Instruct --data wgm_train.jsonl --small lg1b --large lg8b --out para/
  guardkit route train --train train.safetensors --train para/features.safetensors --val val.safetensors --out router/)");
  para->callback([pa, &global]() { run_paraphrase(*pa, global); });

  auto ea = std::make_shared<EvalArgs>();
  auto* ev = route->add_subcommand("eval", "Evaluate SafeRoute and the baselines on feature caches");
  ev->add_option("--router", ea->router, "SafeRoute router directory (omit to compare baselines only)");
  ev->add_option("--train", ea->train, "training cache (fits TS/BC, gives CC's content-free score)")->required();
  ev->add_option("--test", ea->tests, "test cache(s), one per dataset")->required();
  ev->add_option("--reference", ea->reference, "reference cache for share:F / f1 thresholds");
  ev->add_option("--threshold", ea->threshold, "default | number | share:F | f1")->capture_default_str();
  ev->add_option("--baselines", ea->baselines, "baselines to include")->capture_default_str();
  ev->add_option("--random-p", ea->random_p, "random baseline's routing probability")->capture_default_str();
  ev->add_option("--seed", ea->seed, "random baseline seed")->capture_default_str();
  ev->add_option("--points", ea->points, "points per trade-off curve")->capture_default_str();
  ev->add_option("--out", ea->out, "output directory (results.json, results.md, *_tradeoff.json, *.svg, *.png when rsvg-convert is installed)")->required();
  ev->callback([ea, &global]() { run_eval(*ea, global); });
}

}  // namespace

GUARDKIT_COMMAND(40, add_route_command);

}  // namespace guardkit::cli
