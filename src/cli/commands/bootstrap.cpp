// `guardkit bootstrap`: trains the default models (vocabulary, large guard, distilled small guard, SafeRoute router)
// from the public data, so the main job runs out of the box.
#include "cli/commands.h"
#include "train/bootstrap.h"

namespace guardkit::cli {
namespace {

void add_bootstrap_command(CLI::App& app, GlobalOptions&) {
  struct Args {
    train::BootstrapOptions options;
    std::string data_dir, out_dir = "models/default";
  };
  auto args = std::make_shared<Args>();  // CLI11 keeps pointers into it until the callback runs
  auto* opt = &args->options;
  auto* cmd = app.add_subcommand("bootstrap", "Train the default guards and router from the public labelled data");
  cmd->footer(
      "Steps (each resumes if the run is killed): a SentencePiece vocabulary (spm_train); the large DeBERTa guard's\n"
      "encoder pretrained with masked-language modelling on the text of the training sets and --mlm-extra-sets\n"
      "(--mlm-steps, 0 = skip; the checkpoint is kept in --out/pretrained, Hugging Face DebertaV2ForMaskedLM);\n"
      "the large guard fine-tuned on the labels; a small guard distilled from it (HarmAug loss); the SafeRoute\n"
      "router between them; then models.json and README.md with held-out scores (F1, AUPRC and the over-flagging\n"
      "rate on benign prompts, with bootstrap intervals) in --out.\n"
      "Profiles: quick (the defaults shown; README command (1); aimed at 15 minutes on 2 cores, see README.md for\n"
      "measured times) and full (a 6-layer, hidden-384 large guard, max_length 128, 3000 MLM steps, more data: for\n"
      "the tabletop; an hour or more). Options given after --profile override it.\n"
      "Training and evaluation sets are disjoint by text; evaluation-only sets (non-commercial licences, or the\n"
      "authors' request) are refused for training. A training set may be NAME:MAX (a seeded subsample).\n"
      "Examples:\n  guardkit bootstrap --out models/default && guardkit check --models models/default/models.json "
      "--model saferoute --examples\n"
      "  guardkit bootstrap --profile full --out models/full");
  // First, so the options given with it override the profile's settings (CLI11 applies options in this order).
  cmd->add_option("--profile", opt->profile, "quick or full")
      ->capture_default_str()
      ->check(CLI::IsMember({"quick", "full"}))
      ->each([opt](const std::string& profile) { train::apply_bootstrap_profile(*opt, profile); });
  cmd->add_option("--out", args->out_dir, "Output folder")->capture_default_str();
  cmd->add_option("--data", args->data_dir, "Folder with the datasets (default: shared/data)");
  cmd->add_option("--train-sets", opt->train_sets, "Datasets to train on")->capture_default_str();
  cmd->add_option("--eval-sets", opt->eval_sets, "Held-out datasets for the summary")->capture_default_str();
  cmd->add_option("--vocab-size", opt->vocab_size, "SentencePiece pieces")->capture_default_str();
  cmd->add_option("--max-length", opt->max_length, "Tokens per example")->capture_default_str();
  cmd->add_option("--mlm-steps", opt->mlm_steps,
                  "Masked-language-model pretraining steps of the large guard's encoder (0 = train it from scratch)")
      ->capture_default_str();
  cmd->add_option("--mlm-lr", opt->mlm_lr, "Peak learning rate of the MLM pretraining")->capture_default_str();
  cmd->add_option("--mlm-extra-sets", opt->mlm_extra_sets,
                  "Extra datasets whose text (not labels) the MLM step reads besides the training sets")
      ->capture_default_str();
  cmd->add_option("--large-epochs", opt->large_epochs, "Epochs of the large guard")->capture_default_str();
  cmd->add_option("--large-lr", opt->large_lr, "Peak learning rate of the large guard on the labels (0 = 1e-4 after MLM, 3e-4 from scratch)")
      ->capture_default_str();
  cmd->add_option("--small-epochs", opt->small_epochs, "Epochs of the small guard")->capture_default_str();
  cmd->add_option("--router-epochs", opt->router_epochs, "Epochs of the router")->capture_default_str();
  cmd->add_option("--router-share", opt->router_share, "Share of inputs SafeRoute sends to the large guard")
      ->capture_default_str();
  cmd->add_option("--max-train", opt->max_train_examples, "Cap on training rows (0 = all)")->capture_default_str();
  cmd->add_option("--max-eval", opt->max_eval_examples, "Rows per evaluation set in the summary")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Random seed")->capture_default_str();
  cmd->callback([args]() {
    args->options.data_dir = args->data_dir;
    args->options.out_dir = args->out_dir;
    train::bootstrap(args->options);
  });
}

}  // namespace

GUARDKIT_COMMAND(90, add_bootstrap_command);

}  // namespace guardkit::cli
