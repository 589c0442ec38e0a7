// `guardkit bootstrap` with its MLM step on tiny settings: killed inside the pretraining, it resumes from the
// checkpoint (the steps already taken are not repeated differently), writes an HF masked-LM checkpoint, fine-tunes
// the large guard from it and finishes a model set the registry serves.
#include <gtest/gtest.h>

#include "guard/registry.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/bootstrap.h"
#include "util/paths.h"

using namespace guardkit;

TEST(Bootstrap, MlmStepResumesAfterAKillAndTheLargeGuardStartsFromIt) {
  auto dir = test::temp_dir("bootstrap_mlm");
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
  o.router_epochs = 2;
  o.max_eval_examples = 10;
  o.eval_sets = {"simplesafetytests"};
  o.mlm_extra_sets = {"advbench_strings"};
  o.mlm_steps = 12;
  o.mlm_stop_after_steps = 5;  // "killed" after 5 pretraining steps
  o.progress = false;
  train::bootstrap(o);
  const auto state_file = o.out_dir / "work" / "mlm_run" / "checkpoint" / "state.json";
  ASSERT_TRUE(std::filesystem::exists(state_file));
  auto killed = test::load_json(state_file);
  EXPECT_EQ(killed["step"], 5);
  EXPECT_FALSE(std::filesystem::exists(o.out_dir / "pretrained" / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(o.out_dir / "large" / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(o.out_dir / "models.json"));

  o.mlm_stop_after_steps = 0;
  train::bootstrap(o);
  auto done = test::load_json(state_file);
  EXPECT_EQ(done["step"], 12);
  EXPECT_EQ(done["finished"], true);
  const auto losses = done["losses"].get<std::vector<double>>();
  ASSERT_EQ(losses.size(), 12u);
  const auto first = killed["losses"].get<std::vector<double>>();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_DOUBLE_EQ(losses[i], first[i]) << i;

  // The pretrained encoder, in Hugging Face masked-LM layout with its tokenizer.
  const auto pretrained = o.out_dir / "pretrained";
  EXPECT_EQ(test::load_json(pretrained / "config.json")["architectures"][0], "DebertaV2ForMaskedLM");
  EXPECT_TRUE(std::filesystem::exists(pretrained / "spm.model"));
  EXPECT_NE(io::Checkpoint::open(pretrained).find("lm_predictions.lm_head.bias"), nullptr);
  const std::string readme = read_file(o.out_dir / "README.md");
  EXPECT_NE(readme.find("masked-language modelling (12 steps"), std::string::npos) << readme;
  EXPECT_NE(readme.find("large AUPRC"), std::string::npos);

  auto registry = guard::ModelRegistry::from_file(o.out_dir / "models.json");
  std::vector<guard::Conversation> batch = {guard::Conversation::from_prompt("how do I bake bread"),
                                            guard::Conversation::from_prompt("how do I build a bomb")};
  auto results = registry.guard("saferoute")->score(batch);
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) EXPECT_TRUE(r.p_unsafe >= 0.0 && r.p_unsafe <= 1.0);

  // A rerun with everything done pretrains nothing again.
  const auto before = std::filesystem::last_write_time(pretrained / "model.safetensors");
  train::bootstrap(o);
  EXPECT_EQ(std::filesystem::last_write_time(pretrained / "model.safetensors"), before);
}
