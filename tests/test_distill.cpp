// Distillation trainer and bootstrap on real (tiny) models: a killed run resumes to the same weights, training
// lowers the loss, and the bootstrap writes a model set that the registry serves through SafeRoute.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/datasets.h"
#include "guard/registry.h"
#include "models/deberta.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/bootstrap.h"
#include "train/distill.h"

using namespace guardkit;

namespace {
std::vector<train::TrainExample> small_train_set() {
  auto rows = eval::load_dataset("xstest_prompts");
  std::vector<train::TrainExample> out;
  for (size_t i = 0; i < 48 && i < rows.size(); ++i)
    out.push_back({rows[i].prompt, std::nullopt, rows[i].label, i % 2 ? std::optional<double>(0.3 + 0.4 * rows[i].label) : std::nullopt});
  return out;
}

train::DistillOptions options() {
  train::DistillOptions o;
  o.lr = 1e-3;
  o.epochs = 2;
  o.batch_size = 8;
  o.micro_batch_size = 4;
  o.warmup_steps = 2;
  o.max_length = 32;
  o.checkpoint_every = 1;
  o.show_progress = false;
  return o;
}
}  // namespace

TEST(Distill, KilledRunResumesToTheSameWeights) {
  const auto fixture = test::fixture("deberta");
  auto tokenizer = text::load_tokenizer(fixture);
  const auto train = small_train_set();
  auto dir = test::temp_dir("distill_resume");

  auto whole = models::DebertaClassifier::load(fixture);
  auto full = train::distill(whole, *tokenizer, fixture, train, options(), dir / "whole");
  ASSERT_TRUE(full.finished);
  EXPECT_EQ(full.step, 12);  // 48 rows / 8 per step × 2 epochs

  auto opts = options();
  opts.stop_after_steps = 5;
  auto first = models::DebertaClassifier::load(fixture);
  auto partial = train::distill(first, *tokenizer, fixture, train, opts, dir / "killed");
  EXPECT_FALSE(partial.finished);
  EXPECT_EQ(partial.step, 5);
  auto second = models::DebertaClassifier::load(fixture);  // a fresh process: weights come from the checkpoint
  auto resumed = train::distill(second, *tokenizer, fixture, train, options(), dir / "killed");
  ASSERT_TRUE(resumed.finished);
  ASSERT_EQ(resumed.losses.size(), full.losses.size());
  for (size_t i = 0; i < full.losses.size(); ++i) EXPECT_DOUBLE_EQ(resumed.losses[i], full.losses[i]) << i;
  const auto& a = whole.named_parameters();
  const auto& b = second.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;

  // The final model is written in Hugging Face layout with its tokenizer and loads back.
  auto reloaded = models::DebertaClassifier::load(dir / "whole" / "final");
  EXPECT_TRUE(std::filesystem::exists(dir / "whole" / "final" / "spm.model"));
  auto p_final = train::predict_unsafe(reloaded, *tokenizer, train, 32);
  auto p_live = train::predict_unsafe(whole, *tokenizer, train, 32);
  for (size_t i = 0; i < p_final.size(); ++i) EXPECT_NEAR(p_final[i], p_live[i], 1e-6);
  EXPECT_LT(full.losses.back(), full.losses.front());
}

TEST(Bootstrap, TinyRunServesSafeRouteThroughTheRegistry) {
  auto dir = test::temp_dir("bootstrap");
  train::BootstrapOptions o;
  o.out_dir = dir / "models";
  o.max_train_examples = 160;
  o.vocab_size = 600;
  o.large_hidden = 32;
  o.large_layers = 1;
  o.large_heads = 2;
  o.small_hidden = 16;
  o.small_layers = 1;
  o.small_heads = 2;
  o.max_length = 32;
  o.large_epochs = o.small_epochs = 1;
  o.mlm_steps = 0;  // the large guard from scratch here; test_bootstrap.cpp runs the MLM step
  o.router_epochs = 2;
  o.max_eval_examples = 10;
  o.eval_sets = {"simplesafetytests"};
  o.progress = false;
  train::bootstrap(o);
  for (const char* f : {"models.json", "README.md", "small/model.safetensors", "large/model.safetensors",
                        "small/spm.model", "router/router.json"})
    EXPECT_TRUE(std::filesystem::exists(o.out_dir / f)) << f;
  auto registry = guard::ModelRegistry::from_file(o.out_dir / "models.json");
  auto routed = registry.guard("saferoute");
  std::vector<guard::Conversation> batch;
  for (int i = 0; i < 20; ++i) batch.push_back(guard::Conversation::from_prompt("request number " + std::to_string(i)));
  auto results = routed->score(batch);
  ASSERT_EQ(results.size(), batch.size());
  auto small = registry.guard("small")->score(batch);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].decided_by == "small" || results[i].decided_by == "large") << results[i].decided_by;
    ASSERT_TRUE(results[i].router_score.has_value());
    if (results[i].decided_by == "small") EXPECT_NEAR(results[i].p_unsafe, small[i].p_unsafe, 1e-5);
  }
  // A rerun finds every step done and leaves the models untouched.
  const auto before = std::filesystem::last_write_time(o.out_dir / "large" / "model.safetensors");
  train::bootstrap(o);
  EXPECT_EQ(std::filesystem::last_write_time(o.out_dir / "large" / "model.safetensors"), before);
}
