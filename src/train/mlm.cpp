#include "train/mlm.h"

#include <torch/torch.h>

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <spdlog/spdlog.h>

#include "io/safetensors.h"
#include "models/deberta_mlm.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "train/distill.h"
#include "train/optim.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/progress.h"

namespace guardkit::train {
namespace fs = std::filesystem;

namespace {

struct SpecialIds {
  int32_t cls = 0, sep = 0, mask = 0;
  std::set<int32_t> all;  // never predicted, never drawn as a random replacement
};

SpecialIds special_ids(const text::Tokenizer& tokenizer) {
  SpecialIds ids;
  auto empty = tokenizer.encode_for_model("", std::nullopt, 0, text::Truncation::None, false).ids;
  if (empty.size() != 2) fail("mlm: the tokenizer does not frame a text as [CLS] … [SEP] (got {} ids for '')", empty.size());
  ids.cls = empty[0];
  ids.sep = empty[1];
  auto mask = tokenizer.token_to_id("[MASK]");
  if (!mask) fail("mlm: the tokenizer has no [MASK] token");
  ids.mask = *mask;
  ids.all = {ids.cls, ids.sep, ids.mask};
  if (auto pad = tokenizer.pad_id()) ids.all.insert(*pad);
  if (auto unk = tokenizer.token_to_id("[UNK]")) ids.all.insert(*unk);
  return ids;
}

}  // namespace

std::vector<std::vector<int32_t>> pack_for_mlm(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                               int64_t max_length) {
  if (max_length < 3) fail("mlm: max_length {} is too short to pack (at least 3)", max_length);
  const SpecialIds special = special_ids(tokenizer);
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int32_t> current{special.cls};
  for (const auto& text : texts) {
    if (text.empty()) continue;
    // Data, not markup: "[SEP]" typed inside a text stays text.
    std::vector<int32_t> ids = tokenizer.encode(text, /*parse_special=*/false);
    ids.push_back(special.sep);
    for (int32_t id : ids) {
      current.push_back(id);
      if (static_cast<int64_t>(current.size()) == max_length) {
        sequences.push_back(std::move(current));
        current = {special.cls};
      }
    }
  }
  if (sequences.empty() && current.size() > 1) sequences.push_back(std::move(current));
  return sequences;
}

MaskedBatch mask_tokens(const std::vector<const std::vector<int32_t>*>& sequences, const text::Tokenizer& tokenizer,
                        const MlmMasking& masking, uint64_t seed) {
  const SpecialIds special = special_ids(tokenizer);
  const int32_t vocab = static_cast<int32_t>(tokenizer.vocab_size());
  if (vocab <= static_cast<int32_t>(special.all.size())) fail("mlm: the vocabulary has no ordinary piece");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int32_t> any_piece(0, vocab - 1);
  auto random_piece = [&] {
    for (;;) {
      int32_t id = any_piece(rng);
      if (!special.all.count(id)) return id;
    }
  };
  MaskedBatch batch;
  std::vector<std::pair<size_t, size_t>> candidates;  // (row, column) of ordinary tokens
  for (size_t r = 0; r < sequences.size(); ++r) {
    const auto& seq = *sequences[r];
    batch.input_ids.push_back(seq);
    batch.labels.emplace_back(seq.size(), -100);
    for (size_t c = 0; c < seq.size(); ++c)
      if (!special.all.count(seq[c])) candidates.emplace_back(r, c);
  }
  auto predict = [&](size_t r, size_t c) {
    const int32_t original = sequences[r]->at(c);
    batch.labels[r][c] = original;
    ++batch.predicted;
    const double u = uniform(rng);
    if (u < masking.replace_with_mask) batch.input_ids[r][c] = special.mask;
    else if (u < masking.replace_with_mask + masking.replace_with_random) batch.input_ids[r][c] = random_piece();
  };
  for (const auto& [r, c] : candidates)
    if (uniform(rng) < masking.mask_probability) predict(r, c);
  if (batch.predicted == 0 && !candidates.empty()) {  // a tiny batch may draw none: predict one so the loss exists
    const auto& [r, c] = candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
    predict(r, c);
  }
  if (batch.predicted == 0) fail("mlm: a batch has no ordinary token to predict");
  return batch;
}

namespace {

struct Tensors {
  at::Tensor input_ids, attention_mask, labels;
};

Tensors to_tensors(const MaskedBatch& batch, int32_t pad) {
  size_t longest = 1;
  for (const auto& s : batch.input_ids) longest = std::max(longest, s.size());
  const int64_t B = static_cast<int64_t>(batch.input_ids.size()), T = static_cast<int64_t>(longest);
  auto ids = torch::full({B, T}, pad, torch::kLong);
  auto mask = torch::zeros({B, T}, torch::kLong);
  auto labels = torch::full({B, T}, -100, torch::kLong);
  auto ia = ids.accessor<int64_t, 2>(), ma = mask.accessor<int64_t, 2>(), la = labels.accessor<int64_t, 2>();
  bool padded = false;
  for (int64_t r = 0; r < B; ++r) {
    const auto& s = batch.input_ids[static_cast<size_t>(r)];
    padded |= static_cast<int64_t>(s.size()) < T;
    for (size_t c = 0; c < s.size(); ++c) {
      ia[r][static_cast<int64_t>(c)] = s[c];
      ma[r][static_cast<int64_t>(c)] = 1;
      la[r][static_cast<int64_t>(c)] = batch.labels[static_cast<size_t>(r)][c];
    }
  }
  // Packed sequences are full: no mask lets the encoder skip the masked softmax.
  return {ids, padded ? mask : at::Tensor(), labels};
}

std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

double scheduled_lr(const MlmOptions& o, int64_t step, int64_t total) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(std::max<int64_t>(1, o.warmup_steps));
  return o.lr * std::max(0.0, static_cast<double>(total - step) / std::max<double>(1.0, static_cast<double>(total - o.warmup_steps)));
}

std::map<std::string, at::Tensor> read_tensors(const fs::path& path) {
  auto file = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& view : file->tensors())
    out[view.name] = models::tensor_from_view(view, models::to_scalar_type(view.dtype), c10::Device(c10::kCPU), false);
  return out;
}

void save_checkpoint(const fs::path& dir, const models::DebertaMaskedLM& model, const AdamW& optimizer,
                     const MlmState& state) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& [name, p] : model.named_parameters()) params.emplace_back(name, p.detach());
  // Written beside the live files, then renamed: a kill mid-save keeps the previous checkpoint whole.
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

bool load_checkpoint(const fs::path& dir, models::DebertaMaskedLM& model, AdamW& optimizer, MlmState& state) {
  if (!fs::exists(dir / "state.json")) return false;
  auto s = nlohmann::json::parse(read_file(dir / "state.json"), nullptr, false);
  if (s.is_discarded() || !s.is_object())
    fail("{}: damaged checkpoint state (move the folder away to start over)", (dir / "state.json").string());
  auto params = read_tensors(dir / "model.safetensors");
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : model.named_parameters()) {
    auto it = params.find(name);
    if (it == params.end()) fail("{}: checkpoint has no tensor {}", (dir / "model.safetensors").string(), name);
    if (it->second.sizes() != p.sizes()) fail("{}: tensor {} has another shape than the model's", dir.string(), name);
    p.copy_(it->second);
  }
  auto opt = read_tensors(dir / "optimizer.safetensors");
  optimizer.load_state_tensors({opt.begin(), opt.end()}, s.at("optimizer_steps").get<int64_t>());
  state.step = s.at("step").get<int64_t>();
  state.total_steps = s.at("total_steps").get<int64_t>();
  state.losses = s.at("losses").get<std::vector<double>>();
  state.finished = s.at("finished").get<bool>();
  return true;
}

}  // namespace

MlmState pretrain_mlm(models::DebertaMaskedLM& model, const text::Tokenizer& tokenizer, const fs::path& tokenizer_dir,
                      const std::vector<std::vector<int32_t>>& sequences, const MlmOptions& options,
                      const fs::path& run_dir) {
  if (sequences.empty()) fail("mlm: no text to pretrain on");
  if (options.batch_size < 1 || options.steps < 1) fail("mlm: batch size and steps must be at least 1");
  if (static_cast<int64_t>(tokenizer.vocab_size()) > model.config().vocab_size)
    fail("mlm: the tokenizer has {} ids, the model's vocabulary {}", tokenizer.vocab_size(), model.config().vocab_size);
  model.set_trainable(true);
  AdamWOptions adam;
  adam.lr = options.lr;
  adam.weight_decay = options.weight_decay;
  AdamW optimizer(model.named_parameters(), adam);

  MlmState state;
  state.total_steps = options.steps;
  const fs::path checkpoint_dir = run_dir / "checkpoint";
  if (load_checkpoint(checkpoint_dir, model, optimizer, state)) {
    if (state.total_steps != options.steps)
      fail("{}: this pretraining run was planned for {} steps, now {} (move the folder away to start over)",
           checkpoint_dir.string(), state.total_steps, options.steps);
    spdlog::info("resuming MLM pretraining from {} at step {}/{}", checkpoint_dir.string(), state.step, state.total_steps);
  }
  const int64_t n = static_cast<int64_t>(sequences.size());
  const int64_t steps_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  const int32_t pad = tokenizer.pad_id().value_or(0);
  ProgressBar bar("mlm", static_cast<size_t>(state.total_steps), options.show_progress);
  bar.update(static_cast<size_t>(state.step));

  int64_t steps_this_run = 0, order_epoch = -1;
  std::vector<size_t> order;
  while (state.step < state.total_steps) {
    if (options.stop_after_steps && steps_this_run == options.stop_after_steps) return state;
    const int64_t epoch = state.step / steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(sequences.size(), options.seed, epoch);
      order_epoch = epoch;
    }
    const int64_t begin = (state.step % steps_per_epoch) * options.batch_size;
    const int64_t end = std::min(begin + options.batch_size, n);
    std::vector<const std::vector<int32_t>*> rows;
    for (int64_t i = begin; i < end; ++i) rows.push_back(&sequences[order[static_cast<size_t>(i)]]);
    // Masks are a function of (seed, step): a resumed run sees the batches the uninterrupted one would.
    auto masked = mask_tokens(rows, tokenizer, options.masking, options.seed * 7919ULL + static_cast<uint64_t>(state.step));
    auto batch = to_tensors(masked, pad);

    optimizer.set_lr(scheduled_lr(options, state.step, state.total_steps));
    at::Tensor loss = model.loss(batch.input_ids, batch.attention_mask, batch.labels);
    loss.backward();
    clip_grad_norm(model.named_parameters(), options.max_grad_norm);
    optimizer.step();
    optimizer.zero_grad();
    const double value = loss.item<double>();
    ++state.step;
    ++steps_this_run;
    state.losses.push_back(value);
    bar.update(static_cast<size_t>(state.step), fmt::format("loss {:.3f}", value));
    state.finished = state.step == state.total_steps;
    if (state.step % std::max<int64_t>(1, options.checkpoint_every) == 0 || state.finished)
      save_checkpoint(checkpoint_dir, model, optimizer, state);
  }
  bar.finish();
  model.set_trainable(false);
  const fs::path final_dir = run_dir / "final";
  model.save_pretrained(final_dir);
  copy_tokenizer_files(tokenizer_dir, final_dir);
  return state;
}

}  // namespace guardkit::train
