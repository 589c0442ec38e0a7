#include "train/distill.h"

#include <torch/torch.h>

#include <algorithm>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/spdlog.h>

#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "train/losses.h"
#include "train/optim.h"
#include "util/error.h"
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
  return true;
}

}  // namespace

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
  student.set_trainable(true);
  AdamWOptions adam;
  adam.lr = options.lr;
  adam.weight_decay = options.weight_decay;
  AdamW optimizer(student.named_parameters(), adam);

  const int64_t steps_per_epoch = (static_cast<int64_t>(train.size()) + options.batch_size - 1) / options.batch_size;
  DistillState state;
  state.total_steps = options.max_steps > 0 ? options.max_steps : steps_per_epoch * options.epochs;
  const fs::path checkpoint_dir = run_dir / "checkpoint";
  if (load_checkpoint(checkpoint_dir, student, optimizer, state)) {
    spdlog::info("resuming distillation from {} at step {}/{}", checkpoint_dir.string(), state.step, state.total_steps);
  }
  ProgressBar bar("distill", static_cast<size_t>(state.total_steps), options.show_progress);
  bar.update(static_cast<size_t>(state.step));

  int64_t steps_this_run = 0;
  std::vector<size_t> order;
  int64_t order_epoch = -1;
  while (state.step < state.total_steps) {
    if (options.stop_after_steps && steps_this_run == options.stop_after_steps) return state;
    const int64_t epoch = state.step / steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(train, options, epoch);
      order_epoch = epoch;
    }
    const int64_t begin = (state.step % steps_per_epoch) * options.batch_size;
    const int64_t end = std::min<int64_t>(begin + options.batch_size, static_cast<int64_t>(order.size()));
    const double rows_in_step = static_cast<double>(end - begin);
    optimizer.set_lr(scheduled_lr(options, state.step, state.total_steps));
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
        auto out = student.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids);
        std::vector<int64_t> labels;
        std::vector<float> soft;
        for (const auto* e : *group) {
          labels.push_back(hard_label(*e));
          if (e->soft_label) soft.push_back(static_cast<float>(*e->soft_label));
        }
        auto label_tensor = torch::tensor(labels, torch::kLong).to(student.device());
        if (group == &soft_rows) {
          auto soft_tensor = torch::tensor(soft, torch::kFloat).to(student.device());
          add(distillation_loss(out.logits, label_tensor, soft_tensor).loss, group->size());
        } else {
          add(train::cross_entropy_loss(out.logits, label_tensor), group->size());
        }
      }
      loss.backward();
      step_loss += loss.item<double>();
    }
    clip_grad_norm(student.named_parameters(), options.max_grad_norm);
    optimizer.step();
    optimizer.zero_grad();
    ++state.step;
    ++steps_this_run;
    state.losses.push_back(step_loss);
    bar.update(static_cast<size_t>(state.step), fmt::format("loss {:.4f}", step_loss));
    state.finished = state.step == state.total_steps;
    if (state.step % std::max<int64_t>(1, options.checkpoint_every) == 0 || state.finished)
      save_checkpoint(checkpoint_dir, student, optimizer, state);
    if (evaluate && options.eval_every > 0 && state.step % options.eval_every == 0 && !state.finished) evaluate(state.step);
  }
  bar.finish();
  student.set_trainable(false);
  const fs::path final_dir = run_dir / "final";
  student.save_pretrained(final_dir);
  copy_tokenizer_files(tokenizer_dir, final_dir);
  if (evaluate) evaluate(state.step);
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
