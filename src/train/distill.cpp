#include "train/distill.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/spdlog.h>

#include "eval/metrics.h"
#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "train/losses.h"
#include "train/optim.h"
#include "util/error.h"
#include "util/jsonl.h"
#include "util/paths.h"
#include "util/progress.h"

namespace guardkit::train {
namespace fs = std::filesystem;

std::vector<int32_t> student_input_ids(const text::Tokenizer& tokenizer, const TrainExample& example,
                                       int64_t max_length, std::vector<int32_t>* type_ids) {
  const std::string empty;
  const std::string& pair = example.response ? *example.response : empty;
  auto enc = tokenizer.encode_for_model(example.prompt, std::string_view(pair), static_cast<size_t>(max_length),
                                        text::Truncation::LongestFirst, /*parse_special=*/true);
  if (type_ids) *type_ids = std::move(enc.type_ids);
  return std::move(enc.ids);
}

namespace {

struct Batch {
  at::Tensor input_ids, attention_mask, token_type_ids;
};

Batch make_batch(const text::Tokenizer& tokenizer, const std::vector<const TrainExample*>& rows, int64_t max_length,
                 c10::Device device) {
  std::vector<std::vector<int32_t>> ids(rows.size()), types(rows.size());
  size_t longest = 1;
  for (size_t i = 0; i < rows.size(); ++i) {
    ids[i] = student_input_ids(tokenizer, *rows[i], max_length, &types[i]);
    longest = std::max(longest, ids[i].size());
  }
  const int64_t pad = tokenizer.pad_id().value_or(0);
  auto input = torch::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(longest)}, pad, torch::kLong);
  auto mask = torch::zeros_like(input);
  auto type = torch::zeros_like(input);
  auto in_a = input.accessor<int64_t, 2>(), m_a = mask.accessor<int64_t, 2>(), t_a = type.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < ids[i].size(); ++j) {
      in_a[i][j] = ids[i][j];
      m_a[i][j] = 1;
      t_a[i][j] = j < types[i].size() ? types[i][j] : 0;
    }
  return {input.to(device), mask.to(device), type.to(device)};
}

int hard_label(const TrainExample& e) { return e.soft_label ? (*e.soft_label > 0.5 ? 1 : 0) : e.label; }

// The example order of one epoch: a class-balanced draw with replacement, or a shuffle; a function of (seed,
// epoch) only, so a resumed run sees exactly the batches the uninterrupted one would.
std::vector<size_t> epoch_order(const std::vector<TrainExample>& train, const DistillOptions& options, int64_t epoch) {
  std::mt19937_64 rng(options.seed * 1000003ULL + static_cast<uint64_t>(epoch));
  std::vector<size_t> order(train.size());
  if (options.balanced_sampler) {
    size_t positives = 0;
    for (const auto& e : train) positives += hard_label(e);
    const size_t negatives = train.size() - positives;
    std::vector<double> weights(train.size());
    for (size_t i = 0; i < train.size(); ++i)
      weights[i] = hard_label(train[i]) ? 1.0 / std::max<size_t>(positives, 1) : 1.0 / std::max<size_t>(negatives, 1);
    std::discrete_distribution<size_t> draw(weights.begin(), weights.end());
    for (auto& o : order) o = draw(rng);
  } else {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

double scheduled_lr(const DistillOptions& options, int64_t step, int64_t total_steps) {
  // HF get_linear_schedule_with_warmup, evaluated at the step about to be taken.
  if (step < options.warmup_steps) return options.lr * static_cast<double>(step) / std::max<int64_t>(1, options.warmup_steps);
  return options.lr * std::max(0.0, static_cast<double>(total_steps - step) /
                                        std::max<double>(1.0, static_cast<double>(total_steps - options.warmup_steps)));
}

nlohmann::json eval_json(const EvalRecord& r) {
  return {{"step", r.step}, {"eval", r.set}, {"rows", r.rows}, {"f1", r.f1}, {"auprc", r.auprc}};
}

nlohmann::json evals_json(const std::vector<EvalRecord>& evals) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : evals) out.push_back(eval_json(r));
  return out;
}

void save_checkpoint(const fs::path& dir, const models::DebertaClassifier& student, const AdamW& optimizer,
                     const DistillState& state) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& [name, p] : student.named_parameters()) params.emplace_back(name, p.detach());
  // Write next to the live files, then rename: a kill mid-save keeps the previous checkpoint intact.
  models::save_tensors((dir / "model.safetensors.tmp").string(), params);
  models::save_tensors((dir / "optimizer.safetensors.tmp").string(), optimizer.state_tensors());
  fs::rename(dir / "model.safetensors.tmp", dir / "model.safetensors");
  fs::rename(dir / "optimizer.safetensors.tmp", dir / "optimizer.safetensors");
  nlohmann::json s = {{"step", state.step},
                      {"total_steps", state.total_steps},
                      {"optimizer_steps", optimizer.steps()},
                      {"losses", state.losses},
                      {"evals", evals_json(state.evals)},
                      {"finished", state.finished}};
  write_file_atomic(dir / "state.json", s.dump());
}

std::map<std::string, at::Tensor> read_tensors(const fs::path& path, c10::Device device) {
  auto file = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& view : file->tensors())
    out[view.name] = models::tensor_from_view(view, models::to_scalar_type(view.dtype), device, /*zero_copy_ok=*/false);
  return out;
}

bool load_checkpoint(const fs::path& dir, models::DebertaClassifier& student, AdamW& optimizer, DistillState& state) {
  if (!fs::exists(dir / "state.json")) return false;
  auto s = nlohmann::json::parse(read_file(dir / "state.json"), nullptr, false);
  if (s.is_discarded()) fail("{}: damaged checkpoint state (move the folder away to start over)", (dir / "state.json").string());
  auto params = read_tensors(dir / "model.safetensors", student.device());
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : student.named_parameters()) {
    auto it = params.find(name);
    if (it == params.end()) fail("{}: checkpoint has no tensor {}", (dir / "model.safetensors").string(), name);
    if (it->second.sizes() != p.sizes()) fail("{}: tensor {} has another shape than the student's", dir.string(), name);
    p.copy_(it->second);
  }
  auto opt = read_tensors(dir / "optimizer.safetensors", student.device());
  optimizer.load_state_tensors({opt.begin(), opt.end()}, s.at("optimizer_steps").get<int64_t>());
  state.step = s.at("step").get<int64_t>();
  state.total_steps = s.at("total_steps").get<int64_t>();
  state.losses = s.at("losses").get<std::vector<double>>();
  state.finished = s.at("finished").get<bool>();
  state.evals.clear();
  for (const auto& r : s.value("evals", nlohmann::json::array()))
    state.evals.push_back({r.at("step").get<int64_t>(), r.at("eval").get<std::string>(), r.at("rows").get<size_t>(),
                           r.at("f1").get<double>(), r.at("auprc").get<double>()});
  return true;
}

// The run's JSONL log. Lines past the checkpoint are dropped when a run starts: the resumed run redoes those steps
// and writes them again, so the log reads as one uninterrupted run.
class RunLog {
 public:
  RunLog(const fs::path& path, int64_t keep_through_step) {
    std::string kept;
    for (const auto& line : read_jsonl_log_for_resume(path))
      if (line.value("step", int64_t{0}) <= keep_through_step) kept += to_jsonl_line(line) + "\n";
    write_file_atomic(path, kept);
    out_.open(path, std::ios::app | std::ios::binary);
    if (!out_) fail("{}: cannot open the run log for writing", path.string());
  }
  void write(const nlohmann::json& line) {
    out_ << to_jsonl_line(line) << '\n';
    out_.flush();
  }

 private:
  std::ofstream out_;
};

// bf16 autocast for the forward pass on the model's device (restores the previous state on exit). Backward runs
// outside, as torch.autocast is meant to be used: autograd replays the casts.
class AutocastBf16 {
 public:
  AutocastBf16(bool enabled, c10::Device device) : enabled_(enabled), cpu_(device.is_cpu()) {
    if (!enabled_) return;
    if (cpu_) {
      was_enabled_ = at::autocast::is_cpu_enabled();
      old_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    } else {
      was_enabled_ = at::autocast::is_enabled();
      old_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    }
    at::autocast::increment_nesting();
  }
  ~AutocastBf16() {
    if (!enabled_) return;
    // The cast-weight cache lives per outermost region: weights change every step.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    if (cpu_) {
      at::autocast::set_cpu_enabled(was_enabled_);
      at::autocast::set_autocast_cpu_dtype(old_dtype_);
    } else {
      at::autocast::set_enabled(was_enabled_);
      at::autocast::set_autocast_gpu_dtype(old_dtype_);
    }
  }
  AutocastBf16(const AutocastBf16&) = delete;
  AutocastBf16& operator=(const AutocastBf16&) = delete;

 private:
  bool enabled_, cpu_, was_enabled_ = false;
  at::ScalarType old_dtype_ = at::kBFloat16;
};

}  // namespace

EvalRecord evaluate_student(const models::DebertaClassifier& model, const text::Tokenizer& tokenizer,
                            const EvalSet& set, int64_t max_length, int64_t batch_size) {
  if (set.examples.empty()) fail("evaluation set {} is empty", set.name);
  auto scores = predict_unsafe(model, tokenizer, set.examples, max_length, batch_size);
  std::vector<int> labels, decisions;
  for (size_t i = 0; i < scores.size(); ++i) {
    labels.push_back(hard_label(set.examples[i]));
    decisions.push_back(scores[i] > 0.5 ? 1 : 0);
  }
  EvalRecord r;
  r.set = set.name;
  r.rows = scores.size();
  r.f1 = eval::f1_score(eval::confusion(labels, decisions));
  r.auprc = eval::average_precision(labels, scores);
  return r;
}

void copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const char* name : {"spm.model", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "added_tokens.json"}) {
    if (fs::exists(from / name)) fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing);
  }
}

DistillState distill(models::DebertaClassifier& student, const text::Tokenizer& tokenizer,
                     const fs::path& tokenizer_dir, const std::vector<TrainExample>& train,
                     const DistillOptions& options, const fs::path& run_dir,
                     const std::function<void(int64_t)>& evaluate) {
  if (train.empty()) fail("distill: no training examples");
  if (options.batch_size < 1 || options.micro_batch_size < 1) fail("distill: batch sizes must be at least 1");
  if (options.eval_every < 0) fail("distill: eval_every must be >= 0");
  for (const auto& set : options.eval_sets)
    if (set.examples.empty()) fail("distill: evaluation set {} is empty", set.name);
  if (student.dtype() != at::kFloat)
    fail("distill: the student must hold fp32 weights (use the bf16 option for bf16 compute with fp32 master weights)");
  student.set_trainable(true);
  AdamWOptions adam;
  adam.lr = options.lr;
  adam.weight_decay = options.weight_decay;
  AdamW optimizer(student.named_parameters(), adam);

  const int64_t steps_per_epoch = (static_cast<int64_t>(train.size()) + options.batch_size - 1) / options.batch_size;
  DistillState state;
  state.total_steps = options.max_steps > 0 ? options.max_steps : steps_per_epoch * options.epochs;
  const fs::path checkpoint_dir = run_dir / "checkpoint";
  fs::create_directories(run_dir);
  if (load_checkpoint(checkpoint_dir, student, optimizer, state)) {
    spdlog::info("resuming distillation from {} at step {}/{}", checkpoint_dir.string(), state.step, state.total_steps);
  }
  RunLog log(run_dir / "log.jsonl", state.step);

  // The held-out sets, then the caller's hook. Records go to the state (saved with the next checkpoint) and the log.
  auto run_evaluations = [&](int64_t step) {
    for (const auto& set : options.eval_sets) {
      EvalRecord r = evaluate_student(student, tokenizer, set, options.max_length, options.eval_batch_size);
      r.step = step;
      spdlog::info("step {}: {} ({} rows) F1 {:.4f} AUPRC {:.4f}", step, r.set, r.rows, r.f1, r.auprc);
      log.write(eval_json(r));
      state.evals.push_back(std::move(r));
    }
    if (evaluate) evaluate(step);
  };

  ProgressBar bar("distill", static_cast<size_t>(state.total_steps), options.show_progress);
  bar.resume_from(static_cast<size_t>(state.step));  // rate and ETA count this run's steps only

  int64_t steps_this_run = 0;
  std::vector<size_t> order;
  int64_t order_epoch = -1;
  while (state.step < state.total_steps) {
    if (options.stop_after_steps && steps_this_run == options.stop_after_steps) return state;
    const auto step_start = std::chrono::steady_clock::now();
    const int64_t epoch = state.step / steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(train, options, epoch);
      order_epoch = epoch;
    }
    const int64_t begin = (state.step % steps_per_epoch) * options.batch_size;
    const int64_t end = std::min<int64_t>(begin + options.batch_size, static_cast<int64_t>(order.size()));
    const double rows_in_step = static_cast<double>(end - begin);
    const double lr = scheduled_lr(options, state.step, state.total_steps);
    optimizer.set_lr(lr);
    double step_loss = 0.0;
    for (int64_t mb = begin; mb < end; mb += options.micro_batch_size) {
      const int64_t mb_end = std::min(end, mb + options.micro_batch_size);
      std::vector<const TrainExample*> soft_rows, hard_rows;
      for (int64_t i = mb; i < mb_end; ++i) {
        const auto& e = train[order[static_cast<size_t>(i)]];
        (e.soft_label ? soft_rows : hard_rows).push_back(&e);
      }
      // Rows with a teacher label: 0.5·(CE + KL); rows without: CE. Each part weighted by its share of the step.
      at::Tensor loss;
      auto add = [&](const at::Tensor& part, size_t rows) {
        auto weighted = part * (static_cast<double>(rows) / rows_in_step);
        loss = loss.defined() ? loss + weighted : weighted;
      };
      for (const auto* group : {&soft_rows, &hard_rows}) {
        if (group->empty()) continue;
        auto batch = make_batch(tokenizer, *group, options.max_length, student.device());
        at::Tensor logits;
        {
          AutocastBf16 autocast(options.bf16, student.device());
          logits = student.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits;
        }
        logits = logits.to(at::kFloat);  // the loss in fp32 either way
        std::vector<int64_t> labels;
        std::vector<float> soft;
        for (const auto* e : *group) {
          labels.push_back(hard_label(*e));
          if (e->soft_label) soft.push_back(static_cast<float>(*e->soft_label));
        }
        auto label_tensor = torch::tensor(labels, torch::kLong).to(student.device());
        if (group == &soft_rows) {
          auto soft_tensor = torch::tensor(soft, torch::kFloat).to(student.device());
          add(distillation_loss(logits, label_tensor, soft_tensor).loss, group->size());
        } else {
          add(train::cross_entropy_loss(logits, label_tensor), group->size());
        }
      }
      loss.backward();
      step_loss += loss.item<double>();
    }
    const double grad_norm = clip_grad_norm(student.named_parameters(), options.max_grad_norm);
    optimizer.step();
    optimizer.zero_grad();
    ++state.step;
    ++steps_this_run;
    state.losses.push_back(step_loss);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    log.write({{"step", state.step},
               {"loss", step_loss},
               {"lr", lr},
               {"grad_norm", std::isfinite(grad_norm) ? nlohmann::json(grad_norm) : nlohmann::json(nullptr)},
               {"examples", end - begin},
               {"seconds", seconds}});
    bar.update(static_cast<size_t>(state.step), fmt::format("loss {:.4f}", step_loss));
    state.finished = state.step == state.total_steps;
    // Evaluations before the checkpoint, so the checkpoint's state holds every evaluation up to its step.
    if (options.eval_every > 0 && state.step % options.eval_every == 0 && !state.finished) run_evaluations(state.step);
    if (state.step % std::max<int64_t>(1, options.checkpoint_every) == 0 || state.finished) {
      if (state.finished) run_evaluations(state.step);
      save_checkpoint(checkpoint_dir, student, optimizer, state);
    }
  }
  bar.finish();
  student.set_trainable(false);
  const fs::path final_dir = run_dir / "final";
  student.save_pretrained(final_dir);
  copy_tokenizer_files(tokenizer_dir, final_dir);
  return state;
}

std::vector<double> predict_unsafe(const models::DebertaClassifier& model, const text::Tokenizer& tokenizer,
                                   const std::vector<TrainExample>& examples, int64_t max_length,
                                   int64_t batch_size) {
  torch::NoGradGuard no_grad;
  // Sorted by length so batches waste little padding; results go back in input order.
  std::vector<size_t> idx(examples.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<size_t> lengths(examples.size());
  for (size_t i = 0; i < examples.size(); ++i)
    lengths[i] = examples[i].prompt.size() + (examples[i].response ? examples[i].response->size() : 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return lengths[a] < lengths[b]; });
  std::vector<double> out(examples.size());
  for (size_t start = 0; start < idx.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(idx.size(), start + static_cast<size_t>(batch_size));
    std::vector<const TrainExample*> rows;
    for (size_t i = start; i < end; ++i) rows.push_back(&examples[idx[i]]);
    auto batch = make_batch(tokenizer, rows, max_length, model.device());
    auto probs = model.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids).probs.to(torch::kCPU);
    for (size_t i = start; i < end; ++i) out[idx[i]] = probs[static_cast<int64_t>(i - start)][1].item<double>();
  }
  return out;
}

}  // namespace guardkit::train
