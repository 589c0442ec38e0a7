#include "train/bootstrap.h"

#include <torch/torch.h>

#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
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

// "NAME" or "NAME:MAX" of --train-sets / --mlm-extra-sets.
struct SetSpec {
  std::string name;
  size_t max_rows = 0;  // 0 = all
};
SetSpec parse_set_spec(const std::string& spec) {
  const size_t colon = spec.rfind(':');
  if (colon == std::string::npos || eval::is_dataset_path(spec)) return {spec, 0};
  const std::string count = spec.substr(colon + 1);
  size_t max_rows = 0;
  auto [end, error] = std::from_chars(count.data(), count.data() + count.size(), max_rows);
  if (error != std::errc() || end != count.data() + count.size() || max_rows == 0)
    fail("bootstrap: '{}': expected NAME or NAME:MAX with MAX a positive row count", spec);
  return {spec.substr(0, colon), max_rows};
}

// The rows of one training (or MLM) set: evaluation-only sets and the everyday held-out slice refused / left out
// (eval::load_training_rows), then a subsample of at most max_rows, the same on every run (seeded by the set name)
// so a resumed bootstrap trains on the same rows.
std::vector<eval::Example> load_set(const SetSpec& spec, const fs::path& data_dir, uint64_t seed) {
  auto rows = eval::load_training_rows(spec.name, data_dir);
  if (spec.max_rows && rows.size() > spec.max_rows) {
    std::mt19937_64 rng(seed ^ stable_hash(spec.name));
    std::shuffle(rows.begin(), rows.end(), rng);
    rows.resize(spec.max_rows);
  }
  return rows;
}

// Text as compared for train / evaluation disjointness: lower-cased, runs of whitespace as one space, trimmed.
std::string comparable(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (std::isspace(c)) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(static_cast<char>(std::tolower(c)));
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Every prompt and response of the evaluation sets, comparable().
std::set<std::string> held_out_texts(const BootstrapOptions& opt, const fs::path& data_dir) {
  std::set<std::string> texts;
  for (const auto& name : opt.eval_sets)
    for (const auto& e : eval::load_dataset(name, data_dir)) {
      texts.insert(comparable(e.prompt));
      if (e.response) texts.insert(comparable(*e.response));
    }
  return texts;
}

bool overlaps(const eval::Example& e, const std::set<std::string>& held_out) {
  return held_out.count(comparable(e.prompt)) || (e.response && held_out.count(comparable(*e.response)));
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
                                   const fs::path& data_dir, const std::set<std::string>& held_out) {
  std::vector<eval::Example> all = rows;
  for (const auto& spec_text : opt.mlm_extra_sets) {
    const SetSpec spec = parse_set_spec(spec_text);
    for (const auto& name_eval : opt.eval_sets)
      if (name_eval == spec.name) fail("bootstrap: {} is an evaluation set; it cannot be pretrained on", spec.name);
    auto part = load_set(spec, data_dir, opt.seed);
    all.insert(all.end(), part.begin(), part.end());
  }
  std::set<std::string> seen;
  std::vector<std::string> texts;
  size_t dropped = 0;
  auto add = [&](const std::string& t) {
    if (t.empty() || !seen.insert(t).second) return;
    if (held_out.count(comparable(t))) {
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
                                               const fs::path& data_dir, const std::set<std::string>& held_out,
                                               const text::Tokenizer& tokenizer, const fs::path& tok_dir,
                                               const json& config_json, const fs::path& work, const fs::path& out) {
  const fs::path pretrained = out / "pretrained";
  if (fs::exists(pretrained / "model.safetensors")) {
    spdlog::info("MLM pretraining: already done ({})", pretrained.string());
    return pretrained;
  }
  const auto texts = mlm_texts(rows, opt, data_dir, held_out);
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

std::vector<eval::Example> bootstrap_training_rows(const BootstrapOptions& opt, const fs::path& data_dir) {
  const std::set<std::string> held_out = held_out_texts(opt, data_dir);
  std::vector<eval::Example> rows;
  for (const auto& spec_text : opt.train_sets) {
    const SetSpec spec = parse_set_spec(spec_text);
    const auto* info = eval::find_dataset(spec.name);
    if (info && info->kind == eval::LabelKind::kRefusal) fail("bootstrap: {} labels refusals, not harm", spec.name);
    if (info && info->kind == eval::LabelKind::kPreference)
      fail("bootstrap: {} holds pairwise preferences, not harm labels (use it in --mlm-extra-sets)", spec.name);
    for (const auto& name_eval : opt.eval_sets)
      if (name_eval == spec.name) fail("bootstrap: {} is both a training and an evaluation set", spec.name);
    auto part = load_set(spec, data_dir, opt.seed);
    const size_t loaded = part.size();
    part.erase(std::remove_if(part.begin(), part.end(), [&](const eval::Example& e) { return overlaps(e, held_out); }),
               part.end());
    // Benign prompts come alone as often as with their answer: a guard must pass both.
    if (info && info->everyday)
      for (auto& e : part)
        if (e.response && stable_hash(e.id) % 2 == 0) e.response.reset();
    size_t unsafe = 0;
    for (const auto& e : part) unsafe += e.label == 1;
    spdlog::info("train set {}: {} rows ({} unsafe){}", spec.name, part.size(), unsafe,
                 loaded > part.size() ? fmt::format("; left out {} that occur in an evaluation set", loaded - part.size())
                                      : std::string());
    rows.insert(rows.end(), part.begin(), part.end());
  }
  return rows;
}

void bootstrap(const BootstrapOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path data_dir = opt.data_dir.empty() ? eval::default_data_dir() : opt.data_dir;
  const fs::path out = opt.out_dir, work = out / "work";
  fs::create_directories(work);

  spdlog::info("bootstrap profile {}: large guard {} layers x {}, small {} x {}, max_length {}, {} MLM steps, "
               "{} + {} epochs",
               opt.profile, opt.large_layers, opt.large_hidden, opt.small_layers, opt.small_hidden, opt.max_length,
               opt.mlm_steps, opt.large_epochs, opt.small_epochs);

  // 1. Data: the training rows, shuffled once; a fixed share (by id hash) kept apart for the router.
  const std::set<std::string> held_out = held_out_texts(opt, data_dir);
  std::vector<eval::Example> rows = bootstrap_training_rows(opt, data_dir);
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
    auto done = pretrain_large_encoder(rows, opt, data_dir, held_out, *tokenizer, tok_dir, large_config, work, out);
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

  // 7. A first look at held-out data: small, large and SafeRoute on each evaluation set (F1 / AUPRC with bootstrap
  //    intervals), and the over-flagging rate (FPR) on the safe rows of each set, pooled over the benign sets.
  route::RoutedGuard routed(small, large, router, threshold, "saferoute");
  guard::Guard* const guards[] = {small.get(), large.get(), &routed};
  eval::MetricOptions metric_options;
  metric_options.bootstrap_resamples = opt.bootstrap_resamples;
  metric_options.seed = opt.seed;
  auto with_interval = [](const eval::MetricReport& m, int metric) {
    const double v = m.value[metric];
    if (std::isnan(v)) return std::string("n/a");
    if (std::isnan(m.interval[metric].low)) return fmt::format("{:.3f}", v);
    return fmt::format("{:.3f} [{:.2f}, {:.2f}]", v, m.interval[metric].low, m.interval[metric].high);
  };
  std::string table =
      "| set | rows | unsafe | small F1 | large F1 | large AUPRC | SafeRoute F1 | SafeRoute AUPRC | SafeRoute FPR | "
      "large share |\n|---|---:|---:|---|---|---|---|---|---|---:|\n";
  // Per guard, the safe rows of the over-flagging sets (no unsafe row, or the look-alike sets) pooled.
  std::vector<int> pooled_decisions[3];
  std::vector<double> pooled_scores[3];
  std::string overflag =
      "| benign set | safe rows | small FPR | large FPR | SafeRoute FPR |\n|---|---:|---|---|---|\n";
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
    const auto* info = eval::find_dataset(name);
    const bool prompt_set = !info || info->kind == eval::LabelKind::kPromptHarm || info->kind == eval::LabelKind::kBenign;
    const bool overflagging = prompt_set && (name == "xstest_prompts" || std::count(labels.begin(), labels.end(), 1) == 0);
    eval::MetricReport report[3];
    double large_share = 0;
    for (int g = 0; g < 3; ++g) {
      std::vector<double> scores;
      std::vector<int> decisions;
      size_t large_calls = 0;
      for (size_t start = 0; start < conversations.size(); start += 32) {
        std::vector<guard::Conversation> batch(
            conversations.begin() + static_cast<long>(start),
            conversations.begin() + static_cast<long>(std::min(conversations.size(), start + 32)));
        for (const auto& r : guards[g]->score(batch)) {
          scores.push_back(r.p_unsafe);
          decisions.push_back(r.unsafe);
          large_calls += r.decided_by == "large";
        }
      }
      report[g] = eval::compute_metrics(labels, scores, decisions, metric_options);
      if (g == 2) large_share = static_cast<double>(large_calls) / std::max<size_t>(1, conversations.size());
      if (overflagging)
        for (size_t i = 0; i < labels.size(); ++i)
          if (labels[i] == 0) pooled_decisions[g].push_back(decisions[i]), pooled_scores[g].push_back(scores[i]);
    }
    const bool has_unsafe = report[0].positives > 0;
    auto f1 = [&](const eval::MetricReport& m) { return has_unsafe ? with_interval(m, eval::kF1) : std::string("n/a"); };
    table += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1f}% |\n", name, examples.size(),
                         report[0].positives, f1(report[0]), f1(report[1]),
                         has_unsafe ? fmt::format("{:.3f}", report[1].value[eval::kAuprc]) : "n/a", f1(report[2]),
                         has_unsafe ? fmt::format("{:.3f}", report[2].value[eval::kAuprc]) : "n/a",
                         with_interval(report[2], eval::kFpr), 100.0 * large_share);
    if (overflagging)
      overflag += fmt::format("| {} | {} | {} | {} | {} |\n", name, report[0].examples - report[0].positives,
                              with_interval(report[0], eval::kFpr), with_interval(report[1], eval::kFpr),
                              with_interval(report[2], eval::kFpr));
  }
  if (!pooled_decisions[0].empty()) {
    std::string cells[3];
    for (int g = 0; g < 3; ++g) {
      const std::vector<int> safe(pooled_decisions[g].size(), 0);
      cells[g] = with_interval(eval::compute_metrics(safe, pooled_scores[g], pooled_decisions[g], metric_options),
                               eval::kFpr);
    }
    overflag += fmt::format("| **all of them** | {} | {} | {} | {} |\n", pooled_decisions[0].size(), cells[0],
                            cells[1], cells[2]);
  }
  write_file_atomic(out / "models.json", models.dump(2));
  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60.0;
  std::string report = fmt::format(
      "# Default models\n\nTrained by `guardkit bootstrap --profile {}` in {:.1f} min on this machine from the public "
      "data in {}.\n\nTraining sets (never evaluated on; NAME:MAX = a seeded subsample): {}.\nEvaluation sets (never "
      "trained on; training rows whose prompt or response occurs in one are left out): {}.\n\n"
      "Held-out scores, at most {} rows a set, decision threshold 0.5; brackets: 95% bootstrap intervals ({} "
      "resamples). FPR = share of the safe rows flagged unsafe.\n\n{}\n"
      "Over-flagging: the false-positive rate on held-out benign prompts (the safe half of XSTest and CoCoNot's "
      "contrast set look unsafe on purpose; everyday_heldout is a slice of the everyday sets kept out of training).\n\n"
      "{}\n"
      "Large guard: DeBERTa-v3-style, {} layers, hidden {}, max_length {}: {}; {} epochs on the labels. "
      "Small guard: {} layers, hidden {}, distilled from the large guard (soft labels, 0.5·(CE + KL)). Router: SafeRoute "
      "Bayesian MLP on the small guard's pooled feature, ε = {:.4f} (calibrated to route {:.0f}% of the router split).\n",
      opt.profile, minutes, data_dir.string(), fmt::join(opt.train_sets, ", "), fmt::join(opt.eval_sets, ", "),
      opt.max_eval_examples, opt.bootstrap_resamples, table, overflag, opt.large_layers, opt.large_hidden,
      opt.max_length,
      opt.mlm_steps > 0
          ? fmt::format("its encoder pretrained with masked-language modelling ({} steps of {} packed sequences, 15% "
                        "masked 80/10/10) on the text of the training sets and of {} (labels unused; texts that occur "
                        "in an evaluation set left out)",
                        opt.mlm_steps, opt.batch_size, fmt::join(opt.mlm_extra_sets, ", "))
          : std::string("no pretraining (random initialisation)"),
      opt.large_epochs, opt.small_layers, opt.small_hidden, threshold, 100.0 * opt.router_share);
  write_file_atomic(out / "README.md", report);
  fmt::print("{}\n{}", table, overflag);
}

void apply_bootstrap_profile(BootstrapOptions& options, const std::string& profile) {
  const BootstrapOptions quick;
  BootstrapOptions& o = options;
  if (profile == "quick") {
    o.train_sets = quick.train_sets;
    o.mlm_extra_sets = quick.mlm_extra_sets;
    o.vocab_size = quick.vocab_size;
    o.large_hidden = quick.large_hidden, o.large_layers = quick.large_layers, o.large_heads = quick.large_heads;
    o.small_hidden = quick.small_hidden, o.small_layers = quick.small_layers, o.small_heads = quick.small_heads;
    o.max_length = quick.max_length;
    o.large_epochs = quick.large_epochs, o.small_epochs = quick.small_epochs;
    o.mlm_steps = quick.mlm_steps;
    o.router_epochs = quick.router_epochs;
  } else if (profile == "full") {
    // Every training row but the bulk of the maths and search questions, a wider and deeper large guard with a
    // longer window and more pretraining, and the small guard left as it is, so the pair is far apart.
    o.train_sets = {"advbench_behaviors", "strongreject",  "gptfuzz_questions", "coconot",      "hatecheck",
                    "awesome_chatgpt_prompts", "nq_open:3000", "dolly_open_qa", "gsm8k:600", "ifeval",
                    "arena_hard", "self_instruct_seed", "coconot_pref", "oasst_prompts", "gptfuzz_responses",
                    "jailbreakbench", "dices_990", "dices_350_expert", "diasafety"};
    o.mlm_extra_sets = {"advbench_strings", "hh_rlhf_harmless_base", "nq_open", "gsm8k"};
    o.vocab_size = 16000;
    o.large_hidden = 384, o.large_layers = 6, o.large_heads = 6;
    o.small_hidden = quick.small_hidden, o.small_layers = quick.small_layers, o.small_heads = quick.small_heads;
    o.max_length = 128;
    o.large_epochs = 3, o.small_epochs = 2;
    o.mlm_steps = 3000;
    o.router_epochs = quick.router_epochs;
  } else {
    fail("bootstrap: unknown profile '{}' (quick or full)", profile);
  }
  o.profile = profile;
}

}  // namespace guardkit::train
