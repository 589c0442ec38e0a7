// Masked-language-model pretraining on a tiny DeBERTa (the fixture's configuration and tokenizer): the masking
// follows 15% / 80-10-10, the loss falls over a few dozen steps, a killed run resumes to the same weights, and the
// saved checkpoint reloads and initialises a classifier's encoder.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "eval/datasets.h"
#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/deberta_mlm.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/mlm.h"
#include "util/error.h"

using namespace guardkit;

namespace {

std::vector<std::string> texts() {
  std::vector<std::string> out;
  for (const auto& e : eval::load_dataset("xstest_prompts")) out.push_back(e.prompt);
  return out;
}

models::DebertaConfig tiny_config() {
  auto config = models::DebertaConfig::load(test::fixture("deberta"));
  config.raw["architectures"] = {"DebertaV2ForMaskedLM"};
  return config;
}

train::MlmOptions options(int64_t steps) {
  train::MlmOptions o;
  o.lr = 3e-3;
  o.steps = steps;
  o.batch_size = 8;
  o.warmup_steps = 4;
  o.checkpoint_every = 5;
  o.show_progress = false;
  return o;
}

models::DebertaLoadOptions trainable() {
  models::DebertaLoadOptions o;
  o.trainable = true;
  return o;
}

double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST(MlmData, PacksFullSequencesAndMasks15PercentAs80_10_10) {
  auto tokenizer = text::load_tokenizer(test::fixture("deberta"));
  const auto frame = tokenizer->encode_for_model("").ids;  // [CLS] [SEP]
  ASSERT_EQ(frame.size(), 2u);
  const int32_t cls = frame[0], sep = frame[1], mask = *tokenizer->token_to_id("[MASK]");
  const int32_t pad = tokenizer->pad_id().value_or(0), unk = *tokenizer->token_to_id("[UNK]");
  auto sequences = train::pack_for_mlm(*tokenizer, texts(), 32);
  ASSERT_GT(sequences.size(), 100u);
  size_t seps = 0;
  for (const auto& s : sequences) {
    ASSERT_EQ(s.size(), 32u);
    EXPECT_EQ(s[0], cls);
    for (size_t i = 1; i < s.size(); ++i) {
      EXPECT_NE(s[i], cls);
      seps += s[i] == sep;
    }
  }
  EXPECT_GT(seps, sequences.size());  // several texts per sequence, each closed by [SEP]

  std::vector<const std::vector<int32_t>*> rows;
  for (const auto& s : sequences) rows.push_back(&s);
  auto batch = train::mask_tokens(rows, *tokenizer, {}, 123);
  size_t ordinary = 0, predicted = 0, masked = 0, kept = 0, replaced = 0;
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < rows[r]->size(); ++c) {
      const int32_t original = (*rows[r])[c], now = batch.input_ids[r][c];
      const int64_t label = batch.labels[r][c];
      const bool special = original == cls || original == sep || original == pad || original == unk;
      ordinary += !special;
      if (label == -100) {
        EXPECT_EQ(now, original);
        continue;
      }
      EXPECT_FALSE(special) << "a special token was chosen for prediction";
      EXPECT_EQ(label, original);
      ++predicted;
      if (now == mask) ++masked;
      else if (now == original) ++kept;
      else {
        ++replaced;
        EXPECT_TRUE(now != cls && now != sep && now != pad && now != unk && now >= 0 && now < mask);
      }
    }
  EXPECT_EQ(static_cast<int64_t>(predicted), batch.predicted);
  const double p = static_cast<double>(predicted) / static_cast<double>(ordinary);
  EXPECT_NEAR(p, 0.15, 0.02);
  EXPECT_NEAR(static_cast<double>(masked) / predicted, 0.8, 0.04);
  EXPECT_NEAR(static_cast<double>(replaced) / predicted, 0.1, 0.03);  // a random piece may equal the original
  EXPECT_NEAR(static_cast<double>(kept) / predicted, 0.1, 0.03);
  // Deterministic in the seed, different across seeds.
  EXPECT_EQ(train::mask_tokens(rows, *tokenizer, {}, 123).input_ids, batch.input_ids);
  EXPECT_NE(train::mask_tokens(rows, *tokenizer, {}, 124).input_ids, batch.input_ids);
}

TEST(MaskedLM, LossFallsAndAKilledRunResumesToTheSameWeights) {
  const auto fixture = test::fixture("deberta");
  auto tokenizer = text::load_tokenizer(fixture);
  auto sequences = train::pack_for_mlm(*tokenizer, texts(), 32);
  auto dir = test::temp_dir("mlm_resume");

  auto whole = models::DebertaMaskedLM::random(tiny_config(), 5, trainable());
  auto full = train::pretrain_mlm(whole, *tokenizer, fixture, sequences, options(40), dir / "whole");
  ASSERT_TRUE(full.finished);
  ASSERT_EQ(full.losses.size(), 40u);
  // Starts near ln(801) = 6.7 and learns the token statistics within a few dozen steps.
  EXPECT_GT(mean(full.losses, 0, 5), 6.0);
  EXPECT_LT(mean(full.losses, 35, 40), mean(full.losses, 0, 5) - 1.0);

  auto opts = options(40);
  opts.stop_after_steps = 17;  // killed between checkpoints: the rerun repeats steps 16 and 17
  auto first = models::DebertaMaskedLM::random(tiny_config(), 5, trainable());
  auto partial = train::pretrain_mlm(first, *tokenizer, fixture, sequences, opts, dir / "killed");
  EXPECT_FALSE(partial.finished);
  auto second = models::DebertaMaskedLM::random(tiny_config(), 5, trainable());
  auto resumed = train::pretrain_mlm(second, *tokenizer, fixture, sequences, options(40), dir / "killed");
  ASSERT_TRUE(resumed.finished);
  ASSERT_EQ(resumed.losses.size(), full.losses.size());
  for (size_t i = 0; i < full.losses.size(); ++i) EXPECT_DOUBLE_EQ(resumed.losses[i], full.losses[i]) << i;
  const auto& a = whole.named_parameters();
  const auto& b = second.named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;

  // A different planned length is refused rather than silently mixed.
  auto third = models::DebertaMaskedLM::random(tiny_config(), 5, trainable());
  EXPECT_THROW(train::pretrain_mlm(third, *tokenizer, fixture, sequences, options(41), dir / "killed"), Error);
}

TEST(MaskedLM, SavedCheckpointReloadsAndInitialisesTheClassifierEncoder) {
  const auto fixture = test::fixture("deberta");
  auto tokenizer = text::load_tokenizer(fixture);
  auto sequences = train::pack_for_mlm(*tokenizer, texts(), 32);
  auto dir = test::temp_dir("mlm_reload");
  auto model = models::DebertaMaskedLM::random(tiny_config(), 9, trainable());
  train::pretrain_mlm(model, *tokenizer, fixture, sequences, options(10), dir);
  const auto final_dir = dir / "final";

  // Hugging Face layout: DebertaV2ForMaskedLM (legacy = false), the head under lm_predictions.lm_head, the decoder
  // tied to the word embeddings (not stored twice), no pooler or classifier; the tokenizer beside it.
  auto config = test::load_json(final_dir / "config.json");
  EXPECT_EQ(config["architectures"][0], "DebertaV2ForMaskedLM");
  EXPECT_EQ(config["legacy"], false);
  EXPECT_TRUE(std::filesystem::exists(final_dir / "spm.model"));
  auto names = io::Checkpoint::open(final_dir).names();
  const std::set<std::string> stored(names.begin(), names.end());
  for (const char* name : {"lm_predictions.lm_head.dense.weight", "lm_predictions.lm_head.dense.bias",
                           "lm_predictions.lm_head.LayerNorm.weight", "lm_predictions.lm_head.LayerNorm.bias",
                           "lm_predictions.lm_head.bias", "deberta.embeddings.word_embeddings.weight",
                           "deberta.encoder.layer.1.output.LayerNorm.weight"})
    EXPECT_TRUE(stored.count(name)) << name;
  for (const auto& name : stored) {
    EXPECT_EQ(name.rfind("pooler", 0), std::string::npos) << name;
    EXPECT_EQ(name.rfind("classifier", 0), std::string::npos) << name;
    EXPECT_EQ(name.find("decoder"), std::string::npos) << name;
  }

  // Reloads to the same predictions.
  auto reloaded = models::DebertaMaskedLM::load(final_dir);
  auto ids = torch::tensor(std::vector<int64_t>(sequences[0].begin(), sequences[0].end())).unsqueeze(0);
  torch::NoGradGuard no_grad;
  auto live = model.logits(ids);
  auto again = reloaded.logits(ids);
  ASSERT_EQ(again.sizes(), (std::vector<int64_t>{32, 801}));
  EXPECT_TRUE(torch::allclose(live, again, 1e-5, 1e-5));
  auto some = torch::tensor(std::vector<int64_t>{3, 7, 30});
  EXPECT_TRUE(torch::allclose(reloaded.logits(ids, {}, some), again.index_select(0, some), 1e-5, 1e-5));

  // A classifier initialised from it: every encoder tensor equals the pretrained one, pooler and classifier keep
  // their own initialisation.
  auto classifier = models::DebertaClassifier::random(models::DebertaConfig::load(fixture), 77);
  std::map<std::string, at::Tensor> before;
  for (const auto& [name, t] : classifier.named_parameters()) before[name] = t.clone();
  const int64_t copied = models::load_encoder_weights(classifier, final_dir);
  std::map<std::string, at::Tensor> pretrained;
  for (const auto& [name, t] : model.named_parameters()) pretrained[name] = t;
  int64_t encoder_tensors = 0;
  for (const auto& [name, t] : classifier.named_parameters()) {
    if (name.rfind("deberta.", 0) == 0) {
      ++encoder_tensors;
      ASSERT_TRUE(pretrained.count(name)) << name;
      EXPECT_TRUE(torch::equal(t, pretrained[name])) << name;
      EXPECT_FALSE(torch::equal(t, before[name])) << name;
    } else {
      EXPECT_TRUE(torch::equal(t, before[name])) << name;
    }
  }
  EXPECT_EQ(copied, encoder_tensors);
  EXPECT_GT(encoder_tensors, 20);
  // The classifier's forward now runs on the pretrained encoder: its last hidden state is the MLM encoder's.
  auto hidden = classifier.forward(ids).last_hidden;
  EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{1, 32, 32}));

  // A checkpoint for another shape is a one-line error naming the tensor.
  auto other = models::DebertaConfig::load(fixture);
  other.hidden_size = 16;
  other.pooler_hidden_size = 16;
  other.intermediate_size = 32;
  auto wrong = models::DebertaClassifier::random(other, 1);
  EXPECT_THROW(models::load_encoder_weights(wrong, final_dir), Error);
}
