// `guardkit augment generate|respond|label`: HarmAug data generation (papers.md §2.1-2.2) through any LLM backend
// (a local Llama directory or an OpenAI-compatible URL) and a teacher guard from the models file. Every step appends
// to its output and resumes after a kill.
#include <iostream>

#include "augment/backends.h"
#include "augment/harmaug.h"
#include "cli/commands.h"
#include "eval/datasets.h"
#include "guard/registry.h"
#include "models/runtime.h"
#include "util/error.h"
#include "util/progress.h"

namespace guardkit::cli {
namespace {

struct BackendOptions {
  std::string llm;         // directory or URL
  std::string llm_model;   // model name for a URL
};

void add_backend_options(CLI::App* cmd, BackendOptions& o) {
  cmd->add_option("--llm", o.llm, "Llama checkpoint directory, or an OpenAI-compatible base URL (http://host:port)")
      ->required();
  cmd->add_option("--llm-model", o.llm_model, "Model name sent to the URL (ignored for a directory)");
}

void add_sampling_options(CLI::App* cmd, augment::SamplingParams& s) {
  cmd->add_option("--temperature", s.temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--repetition-penalty", s.repetition_penalty, "Repetition penalty (1 = off)")->capture_default_str();
  cmd->add_option("--max-tokens", s.max_tokens, "Tokens to generate per request at most")->capture_default_str();
}

// The bar is made at the pipeline's first report, which it sends when its loop starts (after model loading and
// resume scanning), counting rows of earlier runs as already done: rate and ETA measure this run's work only.
augment::Progress bar_progress(std::shared_ptr<ProgressBar>& bar, const std::string& label) {
  return [&bar, label](size_t done, size_t total) {
    if (!bar) {
      bar = std::make_shared<ProgressBar>(label, total);
      bar->resume_from(done);
    }
    bar->set_total(total);
    bar->update(done);
  };
}

struct GenerateInstructionsOptions {
  BackendOptions backend;
  augment::InstructionConfig config;
  std::string seed_set = "advbench_behaviors";
  std::string out;
  bool no_prefix = false;
};

void run_generate_instructions(GenerateInstructionsOptions o, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  if (o.no_prefix) o.config.use_prefix = false;
  std::vector<std::pair<std::string, std::string>> seeds;
  for (const auto& e : eval::load_dataset(o.seed_set)) seeds.emplace_back(e.id, e.prompt);
  auto backend = augment::make_llm_backend(o.backend.llm, o.backend.llm_model);
  std::shared_ptr<ProgressBar> bar;
  augment::InstructionStats stats =
      augment::generate_instructions(o.config, seeds, *backend, o.out, bar_progress(bar, "instructions"));
  if (bar) bar->finish();
  std::cout << "requests " << stats.requests << ", kept " << stats.kept << " → " << o.out << '\n';
  for (const auto& [reason, count] : stats.rejected) std::cout << "  rejected (" << reason << "): " << count << '\n';
}

struct RespondOptions {
  BackendOptions backend;
  augment::ResponseConfig config;
  std::string instructions, out;
};

void run_respond(const RespondOptions& o, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  auto backend = augment::make_llm_backend(o.backend.llm, o.backend.llm_model);
  std::shared_ptr<ProgressBar> bar;
  size_t rows = augment::generate_responses(o.config, o.instructions, *backend, o.out, bar_progress(bar, "responses"));
  if (bar) bar->finish();
  std::cout << rows << " responses → " << o.out << '\n';
}

struct LabelOptions {
  std::string teacher, models_file, instructions, responses, out;
  size_t batch = 16;
};

void run_label(const LabelOptions& o, const GlobalOptions& global) {
  models::init_runtime(global.threads);
  if (o.batch == 0) fail("--batch must be positive");
  guard::ModelRegistry registry = guard::ModelRegistry::load_default(o.models_file);
  std::shared_ptr<guard::Guard> teacher = registry.guard(o.teacher);
  std::optional<std::filesystem::path> responses;
  if (!o.responses.empty()) responses = o.responses;
  std::shared_ptr<ProgressBar> bar;
  size_t rows = augment::label_with_teacher(*teacher, o.instructions, responses, o.out, o.batch,
                                            bar_progress(bar, "labels"));
  if (bar) bar->finish();
  std::cout << rows << " labelled rows → " << o.out << '\n';
}

void add_augment_command(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("augment", "HarmAug data generation: instructions, responses, teacher labels");
  cmd->require_subcommand(1);
  cmd->footer(
      "The pipeline (each step resumes after a kill; rerun the same command):\n"
      "  guardkit augment generate --llm DIR_OR_URL --out instructions.jsonl --count 1000\n"
      "  guardkit augment respond  --llm DIR_OR_URL --instructions instructions.jsonl --out responses.jsonl\n"
      "  guardkit augment label    --teacher llama-guard --instructions instructions.jsonl \\\n"
      "                            --responses responses.jsonl --out labelled.jsonl");

  auto gen = std::make_shared<GenerateInstructionsOptions>();
  auto* g = cmd->add_subcommand("generate", "Harmful instructions from an LLM jailbroken with an affirmative prefix");
  g->footer(
      "Exemplars are drawn from --seed-set (a dataset name or a JSONL file with \"prompt\").\n"
      "Examples:\n"
      "  guardkit augment generate --llm /models/Llama-3.1-8B-Instruct --out inst.jsonl --count 200\n"
      "  guardkit augment generate --llm http://127.0.0.1:8000 --llm-model meta-llama/Llama-3.1-8B-Instruct \\\n"
      "      --out inst.jsonl --count 5000 --batch 32 --temperature 1.0 --top-p 0.95");
  add_backend_options(g, gen->backend);
  g->add_option("--out", gen->out, "Output JSONL (appended to; resumed)")->required();
  g->add_option("--seed-set", gen->seed_set, "Exemplar prompts: dataset name or JSONL file")->capture_default_str();
  g->add_option("--count", gen->config.target_count, "Instructions to keep")->capture_default_str();
  g->add_option("--max-requests", gen->config.max_requests, "Give up after this many requests (0 = 20 × count)")
      ->capture_default_str();
  g->add_option("--batch", gen->config.batch_size, "Requests per backend call")->capture_default_str();
  g->add_option("--exemplars", gen->config.exemplars, "Exemplars per request")->capture_default_str();
  g->add_option("--seed", gen->config.seed, "Seed for exemplar draws and sampling")->capture_default_str();
  g->add_option("--min-chars", gen->config.min_chars, "Drop shorter instructions")->capture_default_str();
  g->add_option("--max-chars", gen->config.max_chars, "Drop longer instructions")->capture_default_str();
  g->add_flag("--no-prefix", gen->no_prefix, "Ablation: no affirmative prefix");
  add_sampling_options(g, gen->config.sampling);
  g->callback([gen, &global]() { run_generate_instructions(*gen, global); });

  auto resp = std::make_shared<RespondOptions>();
  auto* r = cmd->add_subcommand("respond", "A compliant and a refusing response for every instruction");
  r->footer(
      "Examples:\n"
      "  guardkit augment respond --llm /models/Llama-3.1-8B-Instruct --instructions inst.jsonl --out resp.jsonl\n"
      "  guardkit augment respond --llm http://127.0.0.1:8000 --instructions inst.jsonl --out resp.jsonl --batch 32");
  add_backend_options(r, resp->backend);
  r->add_option("--instructions", resp->instructions, "Instructions JSONL (from augment generate)")->required();
  r->add_option("--out", resp->out, "Output JSONL (appended to; resumed)")->required();
  r->add_option("--batch", resp->config.batch_size, "Requests per backend call")->capture_default_str();
  r->add_option("--seed", resp->config.seed, "Sampling seed")->capture_default_str();
  add_sampling_options(r, resp->config.sampling);
  r->callback([resp, &global]() { run_respond(*resp, global); });

  auto lab = std::make_shared<LabelOptions>();
  auto* l = cmd->add_subcommand("label", "Teacher guard scores for instructions and prompt+response rows");
  l->footer(
      "Examples:\n"
      "  guardkit augment label --teacher llama-guard --instructions inst.jsonl --out labelled.jsonl\n"
      "  guardkit augment label --teacher /models/deberta-guard --instructions inst.jsonl --responses resp.jsonl \\\n"
      "      --out labelled.jsonl --batch 32");
  l->add_option("--teacher", lab->teacher, "Teacher guard: name from the models file, or a model directory")
      ->required();
  l->add_option("--models", lab->models_file, "Models configuration file (default: $GUARDKIT_MODELS, ./models.json)");
  l->add_option("--instructions", lab->instructions, "Instructions JSONL")->required();
  l->add_option("--responses", lab->responses, "Responses JSONL (optional)");
  l->add_option("--out", lab->out, "Output JSONL (appended to; resumed)")->required();
  l->add_option("--batch", lab->batch, "Conversations scored together")->capture_default_str();
  l->callback([lab, &global]() { run_label(*lab, global); });
}

}  // namespace
GUARDKIT_COMMAND(50, add_augment_command);
}  // namespace guardkit::cli
