#include "train/bootstrap.h"

#include <torch/torch.h>

#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <spdlog/spdlog.h>

#include "eval/datasets.h"
#include "eval/metrics.h"
#include "guard/classifier_guard.h"
#include "models/deberta.h"
#include "models/deberta_mlm.h"
#include "route/features.h"
#include "route/routed_guard.h"
#include "route/router.h"
#include "route/threshold.h"
#include "text/spm_model.h"
#include "text/tokenizer.h"
#include "train/distill.h"
#include "train/mlm.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

uint64_t stable_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

TrainExample to_train(const eval::Example& e) { return {e.prompt, e.response, e.label, std::nullopt}; }

std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// Debian's spm_train in its own process: libsentencepiece cannot share a process with libtorch (machine.md).
void train_sentencepiece(const std::vector<eval::Example>& rows, const BootstrapOptions& opt, const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path corpus = dir / "corpus.txt";
  {
    std::ofstream out(corpus, std::ios::binary);
    for (const auto& r : rows) {
      out << one_line(r.prompt) << '\n';
      if (r.response && !r.response->empty()) out << one_line(*r.response) << '\n';
    }
  }
  const std::string cmd = fmt::format(
      "spm_train --input='{}' --model_prefix='{}' --vocab_size={} --model_type=unigram --character_coverage=0.9995 "
      "--pad_id=0 --bos_id=1 --eos_id=2 --unk_id=3 --pad_piece=[PAD] --bos_piece=[CLS] --eos_piece=[SEP] "
      "--unk_piece=[UNK] --hard_vocab_limit=false --input_sentence_size=200000 --shuffle_input_sentence=true "
      "--num_threads=2 --minloglevel=2 > '{}' 2>&1",
      corpus.string(), (dir / "spm").string(), opt.vocab_size, (dir / "spm_train.log").string());
  if (std::system(cmd.c_str()) != 0)
    fail("spm_train failed (is Debian's sentencepiece package installed?): see {}", (dir / "spm_train.log").string());
  fs::rename(dir / "spm.model", dir / "spm.model.trained");
  fs::remove(dir / "spm.vocab");
  fs::remove(corpus);
  fs::rename(dir / "spm.model.trained", dir / "spm.model");
}

// The DeBERTa-v3 tokenizer files around an spm.model: [MASK] appended after the pieces, as DebertaV2Tokenizer does.
void write_tokenizer_files(const fs::path& dir, int64_t mask_id) {
  json special = {{"bos_token", "[CLS]"}, {"cls_token", "[CLS]"}, {"eos_token", "[SEP]"}, {"mask_token", "[MASK]"},
                  {"pad_token", "[PAD]"}, {"sep_token", "[SEP]"}, {"unk_token", "[UNK]"}};
  json config = special;
  config["do_lower_case"] = false;
  config["split_by_punct"] = false;
  config["clean_up_tokenization_spaces"] = true;
  config["model_max_length"] = 512;
  config["tokenizer_class"] = "DebertaV2Tokenizer";
  config["sp_model_kwargs"] = json::object();
  write_file_atomic(dir / "special_tokens_map.json", special.dump(2));
  write_file_atomic(dir / "tokenizer_config.json", config.dump(2));
  write_file_atomic(dir / "added_tokens.json", json{{"[MASK]", mask_id}}.dump(2));
}

json deberta_config_json(int64_t vocab, int64_t hidden, int64_t layers, int64_t heads, int64_t max_positions) {
  return {{"architectures", {"DebertaV2ForSequenceClassification"}},
          {"model_type", "deberta-v2"},
          {"vocab_size", vocab},
          {"hidden_size", hidden},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"intermediate_size", hidden * 4},
          {"hidden_act", "gelu"},
          {"hidden_dropout_prob", 0.0},
          {"attention_probs_dropout_prob", 0.0},
          {"max_position_embeddings", max_positions},
          {"relative_attention", true},
          {"position_buckets", 64},
          {"max_relative_positions", -1},
          {"pos_att_type", {"p2c", "c2p"}},
          {"share_att_key", true},
          {"norm_rel_ebd", "layer_norm"},
          {"position_biased_input", false},
          {"type_vocab_size", 0},
          {"layer_norm_eps", 1e-7},
          {"pad_token_id", 0},
          {"pooler_hidden_size", hidden},
          {"pooler_hidden_act", "gelu"},
          {"pooler_dropout", 0},
          {"initializer_range", 0.02},
          {"id2label", {{"0", "safe"}, {"1", "unsafe"}}},
          {"label2id", {{"safe", 0}, {"unsafe", 1}}}};
}

// Trains one DeBERTa guard from scratch into `final_dir` (resuming its run in `run_dir`).
void train_guard(const std::string& what, const json& config_json, const text::Tokenizer& tokenizer,
                 const fs::path& tokenizer_dir, const std::vector<TrainExample>& train, const DistillOptions& options,
                 const fs::path& run_dir, const fs::path& final_dir, uint64_t seed,
                 const fs::path& pretrained_dir = {}) {
  if (fs::exists(final_dir / "model.safetensors")) {
    spdlog::info("{}: already trained ({})", what, final_dir.string());
    return;
  }
  spdlog::info("{}: training on {} examples ({} layers, hidden {})", what, train.size(),
               config_json["num_hidden_layers"].get<int>(), config_json["hidden_size"].get<int>());
  const auto config = models::DebertaConfig::from_json(config_json);
  models::DebertaLoadOptions load;
  load.trainable = true;
  auto model = models::DebertaClassifier::random(config, seed, load);
  if (!pretrained_dir.empty()) {
    const int64_t copied = models::load_encoder_weights(model, pretrained_dir);
    spdlog::info("{}: encoder ({} tensors) from the MLM-pretrained {}", what, copied, pretrained_dir.string());
  }
  distill(model, tokenizer, tokenizer_dir, train, options, run_dir);
  fs::create_directories(final_dir);
  for (const auto& entry : fs::directory_iterator(run_dir / "final"))
    fs::copy_file(entry.path(), final_dir / entry.path().filename(), fs::copy_options::overwrite_existing);
}

// Every text the MLM step reads: the training rows (prompts and responses) and the extra unlabelled sets, without
// duplicates and without any text that an evaluation set contains.
std::vector<std::string> mlm_texts(const std::vector<eval::Example>& rows, const BootstrapOptions& opt,
                                   const fs::path& data_dir) {
  std::set<std::string> held_out;
  for (const auto& name : opt.eval_sets)
    for (const auto& e : eval::load_dataset(name, data_dir)) {
      held_out.insert(e.prompt);
      if (e.response) held_out.insert(*e.response);
    }
  std::vector<eval::Example> all = rows;
  for (const auto& name : opt.mlm_extra_sets) {
    const auto* info = eval::find_dataset(name);
    if (info && info->evaluation_only) fail("bootstrap: {} is licensed for evaluation only; it cannot be trained on", name);
    for (const auto& name_eval : opt.eval_sets)
      if (name_eval == name) fail("bootstrap: {} is an evaluation set; it cannot be pretrained on", name);
    auto part = eval::load_dataset(name, data_dir);
    all.insert(all.end(), part.begin(), part.end());
  }
  std::set<std::string> seen;
  std::vector<std::string> texts;
  size_t dropped = 0;
  auto add = [&](const std::string& t) {
    if (t.empty() || !seen.insert(t).second) return;
    if (held_out.count(t)) {
      ++dropped;
      return;
    }
    texts.push_back(t);
  };
  for (const auto& e : all) {
    add(e.prompt);
    if (e.response) add(*e.response);
  }
  if (dropped) spdlog::info("MLM text: left out {} texts that also occur in an evaluation set", dropped);
  return texts;
}

// Masked-language-model pretraining of the large guard's encoder; returns the folder of the pretrained checkpoint, or
// nothing when the run was stopped early (mlm_stop_after_steps).
std::optional<fs::path> pretrain_large_encoder(const std::vector<eval::Example>& rows, const BootstrapOptions& opt,
                                const fs::path& data_dir, const text::Tokenizer& tokenizer, const fs::path& tok_dir,
                                const json& config_json, const fs::path& work, const fs::path& out) {
  const fs::path pretrained = out / "pretrained";
  if (fs::exists(pretrained / "model.safetensors")) {
    spdlog::info("MLM pretraining: already done ({})", pretrained.string());
    return pretrained;
  }
  const auto texts = mlm_texts(rows, opt, data_dir);
  const auto sequences = pack_for_mlm(tokenizer, texts, opt.max_length);
  size_t tokens = 0;
  for (const auto& s : sequences) tokens += s.size();
  const double epochs = static_cast<double>(opt.mlm_steps * opt.batch_size) / std::max<size_t>(1, sequences.size());
  spdlog::info("MLM pretraining: {} texts, {} tokens in {} sequences of {}; {} steps of {} ({:.1f} epochs)",
               texts.size(), tokens, sequences.size(), opt.max_length, opt.mlm_steps, opt.batch_size, epochs);
  json mlm_config = config_json;
  mlm_config["architectures"] = {"DebertaV2ForMaskedLM"};
  models::DebertaLoadOptions load;
  load.trainable = true;
  auto model = models::DebertaMaskedLM::random(models::DebertaConfig::from_json(mlm_config), opt.seed + 7, load);
  MlmOptions mo;
  mo.lr = opt.mlm_lr;
  mo.steps = opt.mlm_steps;
  mo.batch_size = opt.batch_size;
  mo.warmup_steps = std::max<int64_t>(1, opt.mlm_steps / 10);
  mo.seed = opt.seed;
  mo.show_progress = opt.progress;
  mo.stop_after_steps = opt.mlm_stop_after_steps;
  mo.checkpoint_every = std::clamp<int64_t>(opt.mlm_steps / 20, 1, 50);
  auto state = pretrain_mlm(model, tokenizer, tok_dir, sequences, mo, work / "mlm_run");
  if (!state.finished) return std::nullopt;
  spdlog::info("MLM pretraining: loss {:.3f} -> {:.3f}", state.losses.front(), state.losses.back());
  fs::create_directories(pretrained);
  for (const auto& entry : fs::directory_iterator(work / "mlm_run" / "final"))
    fs::copy_file(entry.path(), pretrained / entry.path().filename(), fs::copy_options::overwrite_existing);
  return pretrained;
}

std::vector<route::LabeledExample> labeled(const std::vector<eval::Example>& rows) {
  std::vector<route::LabeledExample> out;
  for (const auto& r : rows) out.push_back({r.id, guard::Conversation::from_pair(r.prompt, r.response), r.label});
  return out;
}

}  // namespace

void bootstrap(const BootstrapOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path data_dir = opt.data_dir.empty() ? eval::default_data_dir() : opt.data_dir;
  const fs::path out = opt.out_dir, work = out / "work";
  fs::create_directories(work);

  // 1. Data: the training sets, shuffled once; a fixed share (by id hash) kept apart for the router.
  std::vector<eval::Example> rows;
  for (const auto& name : opt.train_sets) {
    const auto* info = eval::find_dataset(name);
    if (info && info->evaluation_only) fail("bootstrap: {} is licensed for evaluation only; it cannot be trained on", name);
    if (info && info->kind == eval::LabelKind::kRefusal) fail("bootstrap: {} labels refusals, not harm", name);
    for (const auto& name_eval : opt.eval_sets)
      if (name_eval == name) fail("bootstrap: {} is both a training and an evaluation set", name);
    auto part = eval::load_dataset(name, data_dir);
    spdlog::info("train set {}: {} rows", name, part.size());
    rows.insert(rows.end(), part.begin(), part.end());
  }
  std::mt19937_64 rng(opt.seed);
  std::shuffle(rows.begin(), rows.end(), rng);
  if (opt.max_train_examples && rows.size() > opt.max_train_examples) rows.resize(opt.max_train_examples);
  std::vector<eval::Example> guard_rows, router_rows;
  for (const auto& r : rows)
    ((stable_hash(r.source + "/" + r.id) % 1000) < opt.router_split * 1000 ? router_rows : guard_rows).push_back(r);
  spdlog::info("{} rows: {} to train the guards, {} to train the router", rows.size(), guard_rows.size(),
               router_rows.size());

  // 2. Vocabulary.
  const fs::path tok_dir = work / "tokenizer";
  if (!fs::exists(tok_dir / "spm.model")) {
    spdlog::info("training a {}-piece SentencePiece vocabulary with spm_train", opt.vocab_size);
    train_sentencepiece(guard_rows, opt, tok_dir);
  }
  // [MASK] goes right after the pieces, as DebertaV2Tokenizer appends it.
  write_tokenizer_files(tok_dir, static_cast<int64_t>(text::SpmModel::load(tok_dir / "spm.model").pieces.size()));
  auto tokenizer = text::load_tokenizer(tok_dir);
  const int64_t vocab = static_cast<int64_t>(tokenizer->vocab_size());

  // 3. The large guard: trained on the gold labels.
  std::vector<TrainExample> guard_train;
  for (const auto& r : guard_rows) guard_train.push_back(to_train(r));
  DistillOptions large_opt;
  large_opt.lr = opt.large_lr > 0 ? opt.large_lr : opt.mlm_steps > 0 ? 1e-4 : 3e-4;
  large_opt.weight_decay = 0.01;
  large_opt.epochs = opt.large_epochs;
  large_opt.batch_size = opt.batch_size;
  large_opt.micro_batch_size = opt.batch_size;
  large_opt.max_length = opt.max_length;
  large_opt.warmup_steps = 30;
  large_opt.seed = opt.seed;
  large_opt.show_progress = opt.progress;
  const json large_config = deberta_config_json(vocab, opt.large_hidden, opt.large_layers, opt.large_heads, 512);
  fs::path pretrained;
  if (opt.mlm_steps > 0 && !fs::exists(out / "large" / "model.safetensors")) {
    auto done = pretrain_large_encoder(rows, opt, data_dir, *tokenizer, tok_dir, large_config, work, out);
    if (!done) {
      spdlog::info("MLM pretraining stopped early; run bootstrap again to resume");
      return;
    }
    pretrained = *done;
  }
  train_guard("large guard", large_config, *tokenizer, tok_dir, guard_train, large_opt, work / "large_run",
              out / "large", opt.seed, pretrained);

  // 4. Teacher soft labels, then the small guard distilled from them (HarmAug: 0.5·(CE + KL)).
  if (!fs::exists(out / "small" / "model.safetensors")) {
    auto teacher = models::DebertaClassifier::load(out / "large");
    auto soft = predict_unsafe(teacher, *tokenizer, guard_train, opt.max_length);
    std::vector<TrainExample> student_train = guard_train;
    for (size_t i = 0; i < student_train.size(); ++i) student_train[i].soft_label = soft[i];
    DistillOptions small_opt = large_opt;
    small_opt.lr = 5e-4;
    small_opt.epochs = opt.small_epochs;
    train_guard("small guard (distilled)",
                deberta_config_json(vocab, opt.small_hidden, opt.small_layers, opt.small_heads, 512), *tokenizer,
                tok_dir, student_train, small_opt, work / "small_run", out / "small", opt.seed + 1);
  }

  // 5. SafeRoute: features of the small guard on the router split, labels t from both guards, the Bayesian MLP,
  //    and ε calibrated to the target share of large-guard calls.
  guard::ClassifierGuardOptions small_options, large_options;
  small_options.name = "small";
  small_options.max_length = static_cast<size_t>(opt.max_length);
  large_options.name = "large";
  large_options.max_length = static_cast<size_t>(opt.max_length);
  std::shared_ptr<guard::Guard> small = guard::ClassifierGuard::load(out / "small", small_options);
  std::shared_ptr<guard::Guard> large = guard::ClassifierGuard::load(out / "large", large_options);
  double threshold = 0.5;
  if (!fs::exists(out / "router" / "router.json")) {
    route::FeatureBuildOptions fopt;
    fopt.progress = opt.progress;
    auto cache = route::build_feature_cache(*small, *large, labeled(router_rows), fopt, work / "router_features.safetensors");
    route::RouterConfig rc;
    rc.epochs = opt.router_epochs;
    rc.seed = opt.seed;
    rc.progress = opt.progress;
    auto router = route::SafeRouteRouter::train(cache, rc, work / "router_run");
    auto scores = router.scores(route::RouteBatch::of(cache));
    threshold = route::threshold_for_share(scores, opt.router_share);
    router.set_threshold(threshold);
    router.save(out / "router");
    spdlog::info("router: ε = {:.4f} routes {:.1f}% of the router split to the large guard", threshold,
                 100.0 * route::routed_share(scores, threshold));
  }
  auto router = std::make_shared<route::SafeRouteRouter>(route::SafeRouteRouter::load(out / "router"));
  threshold = router->default_threshold();

  // 6. models.json: what `guardkit check`, `eval` and `serve` load.
  json models = {{"models",
                  {{{"name", "small"}, {"kind", "classifier"}, {"path", "small"}, {"max_length", opt.max_length}},
                   {{"name", "large"}, {"kind", "classifier"}, {"path", "large"}, {"max_length", opt.max_length}},
                   {{"name", "saferoute"},
                    {"kind", "routed"},
                    {"path", "router"},
                    {"options", {{"small", "small"}, {"large", "large"}, {"epsilon", threshold}}}}}}};

  // 7. A first look at held-out data: small, large and SafeRoute on each evaluation set.
  route::RoutedGuard routed(small, large, router, threshold, "saferoute");
  std::string table =
      "| set | rows | small F1 | small AUPRC | large F1 | large AUPRC | SafeRoute F1 | SafeRoute AUPRC | large share |\n"
      "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& name : opt.eval_sets) {
    auto examples = eval::load_dataset(name, data_dir);
    std::shuffle(examples.begin(), examples.end(), rng);
    if (opt.max_eval_examples && examples.size() > opt.max_eval_examples) examples.resize(opt.max_eval_examples);
    std::vector<guard::Conversation> conversations;
    std::vector<int> labels;
    for (const auto& e : examples) {
      conversations.push_back(guard::Conversation::from_pair(e.prompt, e.response));
      labels.push_back(e.label);
    }
    auto f1_of = [&](guard::Guard& g, double* auprc, double* share) {
      std::vector<double> scores;
      std::vector<int> decisions;
      size_t large_calls = 0;
      for (size_t start = 0; start < conversations.size(); start += 32) {
        std::vector<guard::Conversation> batch(conversations.begin() + static_cast<long>(start),
                                               conversations.begin() + static_cast<long>(std::min(conversations.size(), start + 32)));
        for (const auto& r : g.score(batch)) {
          scores.push_back(r.p_unsafe);
          decisions.push_back(r.unsafe);
          large_calls += r.decided_by == "large";
        }
      }
      eval::MetricOptions mo;
      mo.bootstrap_resamples = 0;
      auto report = eval::compute_metrics(labels, scores, decisions, mo);
      if (auprc) *auprc = report.value[eval::kAuprc];
      if (share) *share = static_cast<double>(large_calls) / std::max<size_t>(1, conversations.size());
      return report.value[eval::kF1];
    };
    double auprc = 0, share = 0, auprc_small = 0, auprc_large = 0;
    const double f_small = f1_of(*small, &auprc_small, nullptr), f_large = f1_of(*large, &auprc_large, nullptr);
    const double f_routed = f1_of(routed, &auprc, &share);
    table += fmt::format("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.1f}% |\n", name,
                         examples.size(), f_small, auprc_small, f_large, auprc_large, f_routed, auprc, 100.0 * share);
  }
  write_file_atomic(out / "models.json", models.dump(2));
  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60.0;
  std::string report = fmt::format(
      "# Default models\n\nTrained by `guardkit bootstrap` in {:.1f} min on this machine from the public data in "
      "{}.\n\nTraining sets (never evaluated on): {}.\nEvaluation sets (never trained on): {}.\n\n{}\n"
      "Large guard: DeBERTa-v3-style, {} layers, hidden {}, max_length {}: {}; {} epochs on the labels. "
      "Small guard: {} layers, hidden {}, distilled from the large guard (soft labels, 0.5·(CE + KL)). Router: SafeRoute "
      "Bayesian MLP on the small guard's pooled feature, ε = {:.4f} (calibrated to route {:.0f}% of the router split).\n",
      minutes, data_dir.string(), fmt::join(opt.train_sets, ", "), fmt::join(opt.eval_sets, ", "), table,
      opt.large_layers, opt.large_hidden, opt.max_length,
      opt.mlm_steps > 0
          ? fmt::format("its encoder pretrained with masked-language modelling ({} steps of {} packed sequences, 15% "
                        "masked 80/10/10) on the text of the training sets and of {} (labels unused; texts that occur "
                        "in an evaluation set left out)",
                        opt.mlm_steps, opt.batch_size, fmt::join(opt.mlm_extra_sets, ", "))
          : std::string("no pretraining (random initialisation)"),
      opt.large_epochs, opt.small_layers, opt.small_hidden, threshold, 100.0 * opt.router_share);
  write_file_atomic(out / "README.md", report);
  fmt::print("{}", table);
}

}  // namespace guardkit::train
