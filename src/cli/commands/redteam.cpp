// `guardkit redteam bias|defend`: BiasJailbreak (papers.md §3.1) against any LLM backend, and the BiasDefense A/B
// (none vs defense prompt, plus a guard check when asked). Every trial is logged to JSONL; a killed run resumes.
#include <fmt/format.h>

#include <iostream>

#include "augment/backends.h"
#include "cli/commands.h"
#include "eval/datasets.h"
#include "guard/registry.h"
#include "models/runtime.h"
#include "redteam/bias_attack.h"
#include "redteam/keywords.h"
#include "util/error.h"
#include "util/progress.h"

namespace guardkit::cli {
namespace {

struct RedteamOptions {
  std::string target;            // directory or URL
  std::string target_model;      // model name for a URL
  std::string keywords = "builtin";
  std::string behaviours = "advbench_behaviors";
  size_t limit = 0;
  std::string judge_guard, check_guard, models_file;
  std::string out_dir = "redteam_out";
  redteam::AttackConfig config;
  std::string command_line;
};

std::vector<redteam::KeywordPair> resolve_keywords(const RedteamOptions& o, augment::LlmBackend& target) {
  if (o.keywords == "builtin") return redteam::builtin_keyword_pairs();
  if (o.keywords == "ask") {
    augment::ChatRequest request;
    request.messages = {{"user", std::string(redteam::kKeywordRequest)}};
    request.sampling = o.config.sampling;
    request.sampling.max_tokens = std::max(request.sampling.max_tokens, 512);
    augment::Completion answer = target.generate({request}).at(0);
    if (answer.error) fail("asking the target for keywords failed: {}", *answer.error);
    redteam::KeywordParse parsed = redteam::parse_keyword_pairs(answer.text);
    for (const auto& w : parsed.warnings) std::cerr << "warning: keywords: " << w << '\n';
    std::cerr << "keywords from the target: " << parsed.pairs.size() << " pairs\n";
    return parsed.pairs;
  }
  return redteam::load_keyword_pairs(o.keywords);
}

std::vector<std::string> resolve_behaviours(const RedteamOptions& o) {
  std::vector<std::string> out;
  for (const auto& e : eval::load_dataset(o.behaviours)) {
    if (o.limit && out.size() == o.limit) break;
    out.push_back(e.prompt);
  }
  if (out.empty()) fail("--behaviours {}: no prompts", o.behaviours);
  return out;
}

redteam::BiasSummary run_arm(redteam::AttackConfig config, augment::LlmBackend& target,
                             redteam::Arm arm, const std::filesystem::path& log) {
  config.arm = arm;
  std::shared_ptr<ProgressBar> bar;
  auto records = redteam::run_bias_attack(config, target, log, [&bar, arm](size_t done, size_t total) {
    if (!bar) bar = std::make_shared<ProgressBar>(std::string("trials ") + redteam::arm_name(arm), total);
    bar->set_total(total);
    bar->update(done);
  });
  if (bar) bar->finish();
  redteam::BiasSummary s = redteam::summarize_bias(records, config.pairs, /*use_guard_judge=*/false);
  std::cout << fmt::format("{}: {} trials, baseline success {:.3f}, errors {} → {}\n", redteam::arm_name(arm),
                           records.size(), s.baseline.rate, s.errors, log.string());
  return s;
}

void run_redteam(RedteamOptions o, bool defend, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  o.command_line = fmt::format("guardkit redteam {} --target {} --keywords {} --behaviours {} --limit {} --trials {}",
                               defend ? "defend" : "bias", o.target, o.keywords, o.behaviours, o.limit,
                               o.config.trials);
  auto target = augment::make_llm_backend(o.target, o.target_model);
  redteam::AttackConfig config = o.config;
  config.pairs = resolve_keywords(o, *target);
  config.behaviours = resolve_behaviours(o);
  guard::ModelRegistry registry = guard::ModelRegistry::load_default(o.models_file);
  std::shared_ptr<guard::Guard> judge, check;
  if (!o.judge_guard.empty()) judge = registry.guard(o.judge_guard);
  if (!o.check_guard.empty()) check = registry.guard(o.check_guard);
  config.judge_guard = judge.get();
  config.check_guard = check.get();
  const std::filesystem::path dir = o.out_dir;
  std::filesystem::create_directories(dir);

  std::vector<redteam::BiasSummary> arms;
  arms.push_back(run_arm(config, *target, redteam::Arm::NoDefense, dir / "trials_none.jsonl"));
  if (defend) {
    arms.push_back(run_arm(config, *target, redteam::Arm::Defense, dir / "trials_biasdefense.jsonl"));
    if (check) arms.push_back(run_arm(config, *target, redteam::Arm::GuardCheck, dir / "trials_guard.jsonl"));
  }
  redteam::write_bias_report(arms, dir / "report.md", dir / "report.svg", o.command_line);
  std::cout << "report → " << (dir / "report.md").string() << '\n';
}

void add_common(CLI::App* cmd, RedteamOptions& o) {
  cmd->add_option("--target", o.target, "Target LLM: Llama checkpoint directory or OpenAI-compatible base URL")
      ->required();
  cmd->add_option("--target-model", o.target_model, "Model name sent to the URL (ignored for a directory)");
  cmd->add_option("--keywords", o.keywords, "builtin | ask (the target names the groups) | FILE (CSV/JSON/JSONL)")
      ->capture_default_str();
  cmd->add_option("--behaviours", o.behaviours, "Harmful behaviours: dataset name or JSONL file with \"prompt\"")
      ->capture_default_str();
  cmd->add_option("--limit", o.limit, "Use the first N behaviours (0 = all)")->capture_default_str();
  cmd->add_option("--trials", o.config.trials, "Trials per (keyword, behaviour)")->capture_default_str();
  cmd->add_option("--batch", o.config.batch_size, "Prompts per backend call")->capture_default_str();
  cmd->add_option("--judge-guard", o.judge_guard, "Also judge responses with this guard (models file name or dir)");
  cmd->add_option("--models", o.models_file, "Models configuration file (default: $GUARDKIT_MODELS, ./models.json)");
  cmd->add_option("--out", o.out_dir, "Output folder: trial logs, report.md, report.svg")->capture_default_str();
  cmd->add_option("--temperature", o.config.sampling.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("--top-p", o.config.sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--max-tokens", o.config.sampling.max_tokens, "Tokens per response at most")->capture_default_str();
  cmd->add_option("--seed", o.config.sampling.seed, "Sampling seed (per trial: seed + trial index)");
}

void add_redteam_command(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("redteam", "BiasJailbreak attacks and the BiasDefense A/B on a target LLM");
  cmd->require_subcommand(1);
  cmd->footer("Both subcommands resume after a kill: rerun the same command with the same --out.");

  auto bias = std::make_shared<RedteamOptions>();
  auto* b = cmd->add_subcommand("bias", "BiasJailbreak: success rates by privileged / marginalized keyword");
  b->footer(
      "Examples:\n"
      "  guardkit redteam bias --target /models/Llama-3.1-8B-Instruct --limit 50 --out bias_run\n"
      "  guardkit redteam bias --target http://127.0.0.1:8000 --target-model llama3 --keywords ask \\\n"
      "      --behaviours jailbreakbench --judge-guard llama-guard --trials 3 --temperature 0.7 --seed 1");
  add_common(b, *bias);
  b->callback([bias, &global]() { run_redteam(*bias, /*defend=*/false, global); });

  auto defend = std::make_shared<RedteamOptions>();
  auto* d = cmd->add_subcommand("defend", "BiasDefense A/B: no defense vs defense prompt (vs a guard check)");
  d->footer(
      "Arms: none, biasdefense, and guard when --check-guard is given; one report compares them.\n"
      "Examples:\n"
      "  guardkit redteam defend --target /models/Llama-3.1-8B-Instruct --limit 50 --out defend_run\n"
      "  guardkit redteam defend --target http://127.0.0.1:8000 --check-guard deberta-guard --judge-guard llama-guard");
  add_common(d, *defend);
  d->add_option("--check-guard", defend->check_guard, "Guard that blocks unsafe inputs/outputs (adds the guard arm)");
  d->callback([defend, &global]() { run_redteam(*defend, /*defend=*/true, global); });
}

}  // namespace
GUARDKIT_COMMAND(60, add_redteam_command);
}  // namespace guardkit::cli
