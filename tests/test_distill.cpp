// Distillation trainer and bootstrap on real (tiny) models: a killed run resumes to the same weights, training
// lowers the loss, and the bootstrap writes a model set that the registry serves through SafeRoute.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <cstdlib>
#include <random>

#include <ATen/autocast_mode.h>

#include "eval/datasets.h"
#include "eval/metrics.h"
#include "guard/registry.h"
#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/deberta_config.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/bootstrap.h"
#include "train/distill.h"
#include "util/error.h"

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

namespace {
// Held-out rows for the periodic evaluation: later XSTest prompts than the training ones, both classes.
train::EvalSet held_out_rows() {
  auto rows = eval::load_dataset("xstest_prompts");
  train::EvalSet set{"xstest_tail", {}};
  for (size_t i = rows.size() - 40; i < rows.size(); ++i) set.examples.push_back({rows[i].prompt, std::nullopt, rows[i].label, std::nullopt});
  return set;
}

std::vector<nlohmann::json> read_log(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return test::parse_jsonl(text.str());
}
}  // namespace

TEST(Distill, PeriodicEvaluationIsLoggedCheckpointedAndResumed) {
  const auto fixture = test::fixture("deberta");
  auto tokenizer = text::load_tokenizer(fixture);
  const auto train = small_train_set();
  const auto held_out = held_out_rows();
  int positives = 0;
  for (const auto& e : held_out.examples) positives += e.label;
  ASSERT_GT(positives, 0);
  ASSERT_LT(positives, 40);
  auto dir = test::temp_dir("distill_eval");
  auto opts = options();
  opts.eval_every = 5;
  opts.checkpoint_every = 2;
  opts.eval_sets = {held_out};

  auto whole = models::DebertaClassifier::load(fixture);
  auto full = train::distill(whole, *tokenizer, fixture, train, opts, dir / "whole");
  ASSERT_TRUE(full.finished);
  ASSERT_EQ(full.evals.size(), 3u);  // steps 5, 10 and the end (12)
  EXPECT_EQ(full.evals[0].step, 5);
  EXPECT_EQ(full.evals[1].step, 10);
  EXPECT_EQ(full.evals[2].step, 12);
  for (const auto& r : full.evals) {
    EXPECT_EQ(r.set, "xstest_tail");
    EXPECT_EQ(r.rows, 40u);
    EXPECT_GE(r.auprc, 0.0);
    EXPECT_LE(r.auprc, 1.0);
  }
  // The last evaluation is the final model's F1 and AUPRC, computed independently here.
  auto scores = train::predict_unsafe(whole, *tokenizer, held_out.examples, opts.max_length);
  std::vector<int> labels, decisions;
  for (size_t i = 0; i < scores.size(); ++i) {
    labels.push_back(held_out.examples[i].label);
    decisions.push_back(scores[i] > 0.5);
  }
  EXPECT_NEAR(full.evals.back().auprc, eval::average_precision(labels, scores), 1e-9);
  EXPECT_NEAR(full.evals.back().f1, eval::f1_score(eval::confusion(labels, decisions)), 1e-9);
  // The evaluations move as the weights do.
  EXPECT_NE(full.evals.front().auprc, full.evals.back().auprc);

  // The run log: one line per step, one per evaluation, in order.
  auto log = read_log(dir / "whole" / "log.jsonl");
  ASSERT_EQ(log.size(), 12u + 3u);
  size_t evals_seen = 0;
  int64_t last_step = 0;
  for (const auto& line : log) {
    ASSERT_GE(line["step"].get<int64_t>(), last_step);
    last_step = line["step"].get<int64_t>();
    if (line.contains("eval")) {
      const auto& r = full.evals[evals_seen++];
      EXPECT_EQ(line["step"].get<int64_t>(), r.step);
      EXPECT_DOUBLE_EQ(line["auprc"].get<double>(), r.auprc);
      EXPECT_DOUBLE_EQ(line["f1"].get<double>(), r.f1);
    } else {
      EXPECT_DOUBLE_EQ(line["loss"].get<double>(), full.losses[static_cast<size_t>(last_step - 1)]);
      EXPECT_EQ(line["examples"].get<int64_t>(), 8);
    }
  }
  EXPECT_EQ(evals_seen, 3u);

  // Killed after step 7 (checkpoint at 6, evaluation at 5 in it), resumed: the same evaluations and the same log.
  auto killed = opts;
  killed.stop_after_steps = 7;
  auto first = models::DebertaClassifier::load(fixture);
  auto partial = train::distill(first, *tokenizer, fixture, train, killed, dir / "killed");
  EXPECT_EQ(partial.step, 7);
  EXPECT_EQ(read_log(dir / "killed" / "log.jsonl").size(), 7u + 1u);
  auto second = models::DebertaClassifier::load(fixture);
  auto resumed = train::distill(second, *tokenizer, fixture, train, opts, dir / "killed");
  ASSERT_EQ(resumed.evals.size(), full.evals.size());
  for (size_t i = 0; i < full.evals.size(); ++i) {
    EXPECT_EQ(resumed.evals[i].step, full.evals[i].step);
    EXPECT_DOUBLE_EQ(resumed.evals[i].auprc, full.evals[i].auprc);
    EXPECT_DOUBLE_EQ(resumed.evals[i].f1, full.evals[i].f1);
  }
  auto resumed_log = read_log(dir / "killed" / "log.jsonl");
  ASSERT_EQ(resumed_log.size(), log.size());
  for (size_t i = 0; i < log.size(); ++i) {
    auto a = log[i], b = resumed_log[i];
    a.erase("seconds");
    b.erase("seconds");
    EXPECT_EQ(a, b) << i;
  }

  // An empty evaluation set is a clear error, not a crash.
  auto bad = opts;
  bad.eval_sets = {{"empty", {}}};
  auto model = models::DebertaClassifier::load(fixture);
  EXPECT_THROW(train::distill(model, *tokenizer, fixture, train, bad, dir / "bad"), Error);
}

TEST(Distill, Bf16RunLowersTheLossAndSavesAnFp32Model) {
  const auto fixture = test::fixture("deberta");
  auto tokenizer = text::load_tokenizer(fixture);
  const auto train = small_train_set();
  auto dir = test::temp_dir("distill_bf16");
  auto opts = options();
  opts.epochs = 4;
  opts.balanced_sampler = false;

  auto fp32_model = models::DebertaClassifier::load(fixture);
  auto fp32 = train::distill(fp32_model, *tokenizer, fixture, train, opts, dir / "fp32");
  opts.bf16 = true;
  auto bf16_model = models::DebertaClassifier::load(fixture);
  auto bf16 = train::distill(bf16_model, *tokenizer, fixture, train, opts, dir / "bf16");
  EXPECT_FALSE(at::autocast::is_cpu_enabled());  // the autocast state is restored after every forward
  ASSERT_TRUE(bf16.finished);
  ASSERT_EQ(bf16.losses.size(), 24u);
  auto mean = [](const std::vector<double>& v, size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += v[i];
    return sum / static_cast<double>(to - from);
  };
  // Loss goes down over the run (one epoch = 6 steps: compare the first and the last epoch).
  EXPECT_LT(mean(bf16.losses, 18, 24), mean(bf16.losses, 0, 6) - 0.02);
  // bf16 compute really happened (losses differ from fp32) and stays close to fp32 (same data, same init).
  EXPECT_NE(bf16.losses[0], fp32.losses[0]);
  EXPECT_NEAR(bf16.losses[0], fp32.losses[0], 0.02 * std::abs(fp32.losses[0]));

  // The saved model is fp32 Hugging Face format and loads back with the trained weights.
  const auto final_dir = dir / "bf16" / "final";
  EXPECT_EQ(test::load_json(final_dir / "config.json")["torch_dtype"], "float32");
  auto file = io::SafetensorsFile::open(final_dir / "model.safetensors");
  for (const auto& view : file->tensors()) EXPECT_EQ(view.dtype, io::DType::F32) << view.name;
  auto reloaded = models::DebertaClassifier::load(final_dir);
  EXPECT_EQ(reloaded.dtype(), at::kFloat);
  auto p_final = train::predict_unsafe(reloaded, *tokenizer, train, 32);
  auto p_live = train::predict_unsafe(bf16_model, *tokenizer, train, 32);
  for (size_t i = 0; i < p_final.size(); ++i) EXPECT_NEAR(p_final[i], p_live[i], 1e-6);
  // A bf16-weight student is refused with a clear message (the option keeps fp32 master weights).
  models::DebertaLoadOptions bf16_weights;
  bf16_weights.dtype = at::kBFloat16;
  auto wrong = models::DebertaClassifier::load(fixture, bf16_weights);
  EXPECT_THROW(train::distill(wrong, *tokenizer, fixture, train, opts, dir / "wrong"), Error);
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

namespace {
// A DeBERTa-v3-style config, trained from scratch in the test.
models::DebertaConfig tiny_config(int64_t vocab, int64_t hidden, int64_t layers, int64_t heads) {
  auto json = test::load_json(test::fixture("deberta") / "config.json");
  json["vocab_size"] = vocab;
  json["hidden_size"] = json["pooler_hidden_size"] = hidden;
  json["intermediate_size"] = 2 * hidden;
  json["num_hidden_layers"] = layers;
  json["num_attention_heads"] = heads;
  json["initializer_range"] = 0.02;
  json["position_buckets"] = 64;
  return models::DebertaConfig::from_json(json);
}

namespace fs = std::filesystem;
// A SentencePiece vocabulary of the training rows (Debian's spm_train in its own process, as bootstrap does) next to
// the fixture's DeBERTa-v3 tokenizer files, [MASK] after the pieces.
fs::path train_vocabulary(const std::vector<train::TrainExample>& rows, const fs::path& dir, int vocab_size) {
  fs::create_directories(dir);
  {
    std::ofstream corpus(dir / "corpus.txt");
    for (const auto& r : rows) {
      std::string line = r.prompt;
      for (auto& c : line)
        if (c == '\n' || c == '\r') c = ' ';
      corpus << line << '\n';
    }
  }
  const std::string cmd = "spm_train --input='" + (dir / "corpus.txt").string() + "' --model_prefix='" +
                          (dir / "spm").string() + "' --vocab_size=" + std::to_string(vocab_size) +
                          " --model_type=unigram --character_coverage=0.9995 --pad_id=0 --bos_id=1 --eos_id=2"
                          " --unk_id=3 --pad_piece=[PAD] --bos_piece=[CLS] --eos_piece=[SEP] --unk_piece=[UNK]"
                          " --hard_vocab_limit=false --num_threads=1 --minloglevel=2 > '" +
                          (dir / "spm_train.log").string() + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("spm_train failed: see " + (dir / "spm_train.log").string());
  fs::copy_file(test::fixture("deberta") / "special_tokens_map.json", dir / "special_tokens_map.json");
  auto config = test::load_json(test::fixture("deberta") / "tokenizer_config.json");
  config.erase("added_tokens_decoder");  // the fixture's ids; added_tokens.json below places [MASK]
  std::ofstream(dir / "tokenizer_config.json") << config.dump(2);
  auto pieces = 0;
  {
    std::ifstream vocab(dir / "spm.vocab");
    std::string line;
    while (std::getline(vocab, line)) ++pieces;
  }
  std::ofstream(dir / "added_tokens.json") << "{\"[MASK]\": " << pieces << "}";
  return dir;
}

std::vector<train::TrainExample> as_train(const std::vector<eval::Example>& rows) {
  std::vector<train::TrainExample> out;
  for (const auto& r : rows) out.push_back({r.prompt, r.response, r.label, std::nullopt});
  return out;
}
}  // namespace

// Issue 6 "done when": on the shared data, a tiny student distilled from a teacher (soft labels = the teacher's
// P(unsafe), loss 0.5·(CE + KL), the trainer's own code path) scores a held-out dataset it never saw — a different
// dataset from every training one — with a clearly higher AUPRC than the same student untrained, and than a control
// student distilled from the teacher's scores shuffled across rows.
// Training sets are MIT-licensed (commercial use allowed): OpenAI moderation samples (both classes) plus harmful
// requests from AdvBench and StrongREJECT. Held out: XSTest prompts (CC-BY-4.0; 200 unsafe, 250 safe look-alikes).
TEST(Distill, DistilledStudentBeatsTheUntrainedStudentOnAHeldOutSet) {
  // One thread: these models are tiny (OpenMP only adds overhead, and on a loaded machine a lot), and the run is the
  // same on every machine.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  struct Restore {
    int threads;
    ~Restore() { at::set_num_threads(threads); }
  } restore{threads};
  const auto t0 = std::chrono::steady_clock::now();
  auto dir = test::temp_dir("distill_heldout");
  const int64_t max_length = 32;

  std::vector<train::TrainExample> train_rows;
  for (const char* name : {"openai_moderation", "advbench_behaviors", "strongreject"}) {
    const auto* info = eval::find_dataset(name);
    ASSERT_NE(info, nullptr);
    ASSERT_FALSE(info->evaluation_only) << name;
    auto part = as_train(eval::load_dataset(name));
    train_rows.insert(train_rows.end(), part.begin(), part.end());
  }
  std::shuffle(train_rows.begin(), train_rows.end(), std::mt19937_64(7));
  train::EvalSet held_out{"xstest_prompts", as_train(eval::load_dataset("xstest_prompts"))};
  ASSERT_EQ(held_out.examples.size(), 450u);

  // A 2000-piece vocabulary of the training rows (teacher and student share it).
  const fs::path tok_dir = train_vocabulary(train_rows, dir / "tokenizer", 2000);
  auto tokenizer = text::load_tokenizer(tok_dir);
  const int64_t vocab = static_cast<int64_t>(tokenizer->vocab_size());
  train::DistillOptions o;
  o.lr = 2e-3;
  o.weight_decay = 0.01;
  o.epochs = 4;
  o.batch_size = o.micro_batch_size = 32;
  o.warmup_steps = 10;
  o.max_length = max_length;
  o.checkpoint_every = 1000;
  o.show_progress = false;

  // The teacher: a bigger DeBERTa trained on the gold labels (CE only: no soft labels yet).
  models::DebertaLoadOptions trainable;
  trainable.trainable = true;
  auto teacher = models::DebertaClassifier::random(tiny_config(vocab, 64, 2, 4), 1, trainable);
  train::distill(teacher, *tokenizer, tok_dir, train_rows, o, dir / "teacher");
  const auto teacher_eval = train::evaluate_student(teacher, *tokenizer, held_out, max_length);

  // Soft labels: the teacher's P(unsafe) on the training rows.
  auto soft = train::predict_unsafe(teacher, *tokenizer, train_rows, max_length);
  auto student_rows = train_rows;
  for (size_t i = 0; i < student_rows.size(); ++i) student_rows[i].soft_label = soft[i];

  // The student, untrained and then distilled (same initial weights: same seed).
  const auto student_config = tiny_config(vocab, 32, 1, 2);
  const auto untrained = models::DebertaClassifier::random(student_config, 2);
  const auto before = train::evaluate_student(untrained, *tokenizer, held_out, max_length);
  auto student = models::DebertaClassifier::random(student_config, 2, trainable);
  o.lr = 2e-3;
  o.epochs = 3;
  o.seed = 43;
  o.eval_sets = {held_out};
  auto state = train::distill(student, *tokenizer, tok_dir, student_rows, o, dir / "student");
  ASSERT_TRUE(state.finished);
  ASSERT_FALSE(state.evals.empty());
  const auto& after = state.evals.back();  // the trainer's own evaluation at the end
  EXPECT_EQ(after.step, state.step);
  EXPECT_EQ(after.rows, 450u);

  // Control: the same student trained the same way on the teacher's scores shuffled across rows learns no signal.
  auto shuffled_rows = student_rows;
  std::shuffle(soft.begin(), soft.end(), std::mt19937_64(11));
  for (size_t i = 0; i < shuffled_rows.size(); ++i) shuffled_rows[i].soft_label = soft[i];
  auto control = models::DebertaClassifier::random(student_config, 2, trainable);
  auto control_state = train::distill(control, *tokenizer, tok_dir, shuffled_rows, o, dir / "control");
  const auto& noise = control_state.evals.back();

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("held-out %s: AUPRC untrained %.4f, distilled %.4f (teacher %.4f, shuffled-teacher control %.4f); "
              "F1 %.4f -> %.4f; %zu training rows, %.1f s\n",
              held_out.name.c_str(), before.auprc, after.auprc, teacher_eval.auprc, noise.auprc, before.f1, after.f1,
              train_rows.size(), seconds);
  // Measured here (seeds fixed, one thread): untrained 0.569, distilled 0.670, control 0.522, teacher 0.608.
  // Base rate 200/450 = 0.444: an uninformed scorer sits near it.
  EXPECT_GT(after.auprc, before.auprc + 0.07);
  EXPECT_GT(after.auprc, noise.auprc + 0.10);
  EXPECT_GT(after.auprc, 0.444 + 0.15);
  EXPECT_LT(state.losses.back(), state.losses.front());
}
