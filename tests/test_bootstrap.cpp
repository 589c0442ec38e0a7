// `guardkit bootstrap` with its MLM step on tiny settings: killed inside the pretraining, it resumes from the
// checkpoint (the steps already taken are not repeated differently), writes an HF masked-LM checkpoint, fine-tunes
// the large guard from it and finishes a model set the registry serves.
#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <set>

#include "eval/datasets.h"
#include "guard/registry.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/bootstrap.h"
#include "util/error.h"
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

// Step 1 of the quick profile: no training row shares its prompt or response with an evaluation set, the everyday
// held-out slice is never trained on, subsample caps hold, and harmful and benign prompts are both well represented.
TEST(Bootstrap, TrainingRowsAreDisjointFromEvaluationSetsAndMixBenignWithHarmful) {
  train::BootstrapOptions o;
  const auto data_dir = eval::default_data_dir();
  const auto rows = train::bootstrap_training_rows(o, data_dir);
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  std::set<std::string> eval_texts, heldout_ids;
  for (const auto& name : o.eval_sets)
    for (const auto& e : eval::load_dataset(name, data_dir)) {
      eval_texts.insert(lower(e.prompt));
      if (e.response) eval_texts.insert(lower(*e.response));
      if (name == "everyday_heldout") heldout_ids.insert(e.id);
    }
  ASSERT_GT(heldout_ids.size(), 500u);
  std::map<std::string, size_t> per_source;
  size_t prompt_only = 0, prompt_only_unsafe = 0, benign_pairs = 0;
  for (const auto& e : rows) {
    EXPECT_FALSE(eval_texts.count(lower(e.prompt))) << e.id;
    if (e.response) {
      EXPECT_FALSE(eval_texts.count(lower(*e.response))) << e.id;
    }
    EXPECT_FALSE(heldout_ids.count(e.id)) << e.id;
    ++per_source[e.source];
    if (!e.response) ++prompt_only, prompt_only_unsafe += e.label;
    if (e.response && e.label == 0 && e.source == "dolly_open_qa") ++benign_pairs;
  }
  EXPECT_LE(per_source["nq_open"], 800u);
  EXPECT_GT(per_source["nq_open"], 780u);
  EXPECT_LE(per_source["hatecheck"], 1500u);
  // 12 OASST prompts also occur in ToxicChat: they are left out, beyond the held-out slice.
  EXPECT_LT(per_source["oasst_prompts"], eval::load_training_rows("oasst_prompts", data_dir).size());
  // Dolly gives both lone questions and question + answer pairs.
  EXPECT_GT(benign_pairs, 200u);
  EXPECT_GT(per_source["dolly_open_qa"] - benign_pairs, 200u);
  // Lone prompts: harmful between a quarter and a half (the old mix was 82% harmful).
  const double unsafe_share = static_cast<double>(prompt_only_unsafe) / static_cast<double>(prompt_only);
  EXPECT_GT(unsafe_share, 0.25);
  EXPECT_LT(unsafe_share, 0.5);

  auto error_of = [&](std::vector<std::string> sets) {
    train::BootstrapOptions bad;
    bad.train_sets = std::move(sets);
    try {
      train::bootstrap_training_rows(bad, data_dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of({"do_not_answer_prompts"}).find("evaluation only"), std::string::npos);
  EXPECT_NE(error_of({"self_instruct_user"}).find("authors"), std::string::npos);
  EXPECT_NE(error_of({"hh_rlhf_harmless_base"}).find("preferences"), std::string::npos);
  EXPECT_NE(error_of({"coconot_contrast"}).find("both a training and an evaluation set"), std::string::npos);
  EXPECT_NE(error_of({"nq_open:0"}).find("NAME:MAX"), std::string::npos);
  EXPECT_NE(error_of({"nq_open:many"}).find("NAME:MAX"), std::string::npos);
}

TEST(Bootstrap, ProfilesSetTheModelAndTheData) {
  train::BootstrapOptions o;
  o.out_dir = "somewhere";
  o.seed = 7;
  train::apply_bootstrap_profile(o, "full");
  EXPECT_EQ(o.profile, "full");
  EXPECT_GT(o.large_hidden * o.large_layers, train::BootstrapOptions().large_hidden * train::BootstrapOptions().large_layers);
  EXPECT_GT(o.max_length, train::BootstrapOptions().max_length);
  EXPECT_EQ(o.small_hidden, train::BootstrapOptions().small_hidden);  // the pair grows apart
  EXPECT_EQ(o.out_dir, "somewhere");
  EXPECT_EQ(o.seed, 7u);
  train::apply_bootstrap_profile(o, "quick");
  EXPECT_EQ(o.large_hidden, train::BootstrapOptions().large_hidden);
  EXPECT_EQ(o.train_sets, train::BootstrapOptions().train_sets);
  try {
    train::apply_bootstrap_profile(o, "huge");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quick or full"), std::string::npos);
  }
}
