// `guardkit bootstrap`: trains the default model set from the public labelled data, so a new user sees guardkit do
// its main job right after setup with no download: a SentencePiece vocabulary (Debian's spm_train, run as a separate
// process), a large DeBERTa guard trained on the labels, a small guard distilled from it the HarmAug way (soft labels,
// 0.5·(CE + KL)), and the SafeRoute router between them; then a models.json the CLI and the server load.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "eval/example.h"

namespace guardkit::train {

struct BootstrapOptions {
  std::filesystem::path data_dir;   // empty = shared/data
  std::filesystem::path out_dir = "models/default";
  // The defaults below are the quick profile (bootstrap_profile("quick")); see apply_bootstrap_profile.
  std::string profile = "quick";
  // Trained on (commercial-use licences only), "NAME" or "NAME:MAX" for a seeded subsample of at most MAX rows:
  // harmful and benign prompts (roughly a third harmful), plus prompt + response pairs. Rows whose prompt or response
  // also occurs in an evaluation set (compared lower-cased, whitespace collapsed) are left out, and so is the
  // held-out slice of the everyday benign sets (everyday_heldout). Benign sets with answers give half their rows
  // as prompt + answer pairs, half as the prompt alone (by id).
  std::vector<std::string> train_sets = {
      // harmful and mixed prompts
      "advbench_behaviors", "strongreject", "gptfuzz_questions", "coconot", "hatecheck:1500",
      "awesome_chatgpt_prompts",
      // everyday benign prompts (and answers)
      "nq_open:800", "dolly_open_qa:600", "gsm8k:200", "ifeval", "arena_hard:400", "self_instruct_seed",
      "coconot_pref", "oasst_prompts",
      // prompt + response pairs
      "gptfuzz_responses", "jailbreakbench", "dices_990", "dices_350_expert", "diasafety:1500"};
  // Held out: never trained on (ToxicChat and BeaverTails are non-commercial: evaluation only). The last three are
  // the over-flagging sets: benign look-alikes (the safe half of XSTest, CoCoNot contrast) and everyday prompts.
  std::vector<std::string> eval_sets = {"openai_moderation", "toxicchat",      "harmbench_classifier_val",
                                        "beavertails_evaluation", "simplesafetytests", "xstest_prompts",
                                        "coconot_contrast",  "everyday_heldout"};
  // Extra text for masked-language-model pretraining only (no labels used): commercial-use sets, never evaluation
  // sets; any text that also occurs in an evaluation set is dropped.
  std::vector<std::string> mlm_extra_sets = {"advbench_strings", "hh_rlhf_harmless_base", "diasafety", "nq_open",
                                             "dolly_open_qa", "gsm8k:2000"};
  int64_t vocab_size = 8000;
  int64_t large_hidden = 256, large_layers = 4, large_heads = 4;
  int64_t small_hidden = 128, small_layers = 2, small_heads = 2;
  int64_t max_length = 64;   // most prompts fit; the quick profile aims at 15 minutes on 2 cores
  int large_epochs = 2, small_epochs = 2;
  // Peak learning rate of the large guard on the labels; 0 = 1e-4 after MLM pretraining (measured better than 3e-4
  // there), 3e-4 from scratch.
  double large_lr = 0;
  // MLM pretraining of the large guard's encoder on all training text before its fine-tuning; 0 = none (from scratch).
  // 500 steps of 32 x 64 tokens (~1M tokens); ~0.55 CPU-s a step (bench_mlm, 1 thread). 500 steps beat 1500 on
  // held-out F1 in README's comparison of the earlier data mix.
  int64_t mlm_steps = 500;
  double mlm_lr = 5e-4;
  int64_t mlm_stop_after_steps = 0;  // tests: end the run (as if killed) after this many MLM steps; 0 = never
  int64_t batch_size = 32;
  double router_split = 0.3;   // share of the training rows kept apart to train the router
  double router_share = 0.2;   // ε calibrated so SafeRoute sends this share of the router split to the large guard
  int64_t router_epochs = 300;
  size_t max_train_examples = 0;  // 0 = all (tests use a cap)
  size_t max_eval_examples = 400; // per evaluation set, for the summary table
  int bootstrap_resamples = 1000; // for the intervals of the summary table (0 = none)
  uint64_t seed = 42;
  bool progress = true;
};

// Sets the model, data and schedule fields of a profile: "quick" (the defaults above: README command (1), aimed at
// 15 minutes on 2 cores) or "full" (a larger and longer-trained large guard and more data, for the tabletop: an hour
// or more). Output folder, data folder, seed and progress are kept. Throws on another name.
void apply_bootstrap_profile(BootstrapOptions& options, const std::string& profile);

// Step 1 of bootstrap: the rows of options.train_sets as described there (before the shuffle and the router split).
std::vector<eval::Example> bootstrap_training_rows(const BootstrapOptions& options,
                                                   const std::filesystem::path& data_dir);

// Runs every step not already done in out_dir (each step's output is checked first, so a killed run resumes).
void bootstrap(const BootstrapOptions& options);

}  // namespace guardkit::train
