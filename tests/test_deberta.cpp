// DeBERTa-v2/v3 classifier against the Hugging Face goldens (shared/fixtures/deberta): inference in fp32 and bf16,
// padded batches, one distillation training step through our losses and AdamW, save/load round trip, unseen
// configurations and load errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/weights.h"
#include "test_util.h"
#include "train/losses.h"
#include "train/optim.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::models::DebertaClassifier;
using guardkit::models::DebertaConfig;
using guardkit::models::DebertaForwardOptions;
using guardkit::models::DebertaLoadOptions;
using nlohmann::json;

namespace {

std::filesystem::path model_dir() { return test::fixture("deberta"); }
const json& cases() {
  static const json data = test::load_json(model_dir() / "cases.json");
  return data;
}

at::Tensor ids_tensor(const json& ids) {  // [T] list -> [1, T]; [[...]] -> [B, T]
  if (ids.at(0).is_array()) {
    std::vector<at::Tensor> rows;
    for (const json& row : ids) rows.push_back(at::tensor(row.get<std::vector<int64_t>>(), at::kLong));
    return at::stack(rows);
  }
  return at::tensor(ids.get<std::vector<int64_t>>(), at::kLong).unsqueeze(0);
}

at::Tensor floats(const json& values) {
  if (values.is_array() && !values.empty() && values.at(0).is_array()) {
    std::vector<at::Tensor> rows;
    for (const json& row : values) rows.push_back(floats(row));
    return at::stack(rows);
  }
  std::vector<double> v = values.get<std::vector<double>>();
  return at::tensor(v, at::kDouble).to(at::kFloat);
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return INFINITY;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

const DebertaClassifier& fp32_model() {
  static DebertaClassifier model = DebertaClassifier::load(model_dir());
  return model;
}

}  // namespace

TEST(DebertaConfig, FixtureConfigAndHfDefaults) {
  DebertaConfig c = DebertaConfig::load(model_dir());
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.relative_span(), 256);
  EXPECT_EQ(c.max_relative(), 512);
  EXPECT_TRUE(c.has_c2p() && c.has_p2c());
  EXPECT_TRUE(c.norm_relative_embeddings());
  EXPECT_EQ(c.num_labels, 2);
  EXPECT_EQ(c.attention_scale_factor(), 3);

  // Absent keys take DebertaV2Config's defaults; a "c2p|p2c" string is split; id2label fixes num_labels.
  DebertaConfig d = DebertaConfig::from_json(json::parse(R"({"pos_att_type": "P2C| c2p", "id2label": {"0": "a", "1": "b", "2": "c"}})"));
  EXPECT_EQ(d.hidden_size, 1536);
  EXPECT_EQ(d.num_attention_heads, 24);
  EXPECT_FALSE(d.relative_attention);
  EXPECT_TRUE(d.position_biased_input);
  EXPECT_EQ(d.type_vocab_size, 0);
  EXPECT_DOUBLE_EQ(d.layer_norm_eps, 1e-7);
  EXPECT_EQ(d.pooler_size(), 1536);
  EXPECT_EQ(d.pos_att_type, (std::vector<std::string>{"p2c", "c2p"}));
  EXPECT_EQ(d.num_labels, 3);
  EXPECT_EQ(d.id2label[2], "c");
  EXPECT_FALSE(d.norm_relative_embeddings());

  EXPECT_THROW(DebertaConfig::from_json(json::parse(R"({"hidden_size": "big"})")), Error);
  EXPECT_THROW(DebertaConfig::from_json(json::parse(R"({"hidden_act": "nonsense"})")), Error);
  EXPECT_THROW(DebertaConfig::from_json(json::parse(R"({"pos_att_type": ["p2p"]})")), Error);
  EXPECT_THROW(DebertaConfig::from_json(json::parse(R"({"conv_kernel_size": 3})")), Error);
}

TEST(Deberta, EveryInferenceCaseFp32) {
  const DebertaClassifier& model = fp32_model();
  EXPECT_EQ(model.parameter_count(), cases()["n_params"].get<int64_t>());
  at::NoGradGuard no_grad;
  for (bool force_gather : {false, true}) {
    for (const json& c : cases()["cases"]) {
      SCOPED_TRACE(c["id"].get<std::string>() + (force_gather ? " gather" : " strided"));
      DebertaForwardOptions options;
      options.cls_per_layer = true;
      options.force_gather = force_gather;
      auto out = model.forward(ids_tensor(c["input_ids"]), ids_tensor(c["attention_mask"]),
                               ids_tensor(c["token_type_ids"]), options);
      EXPECT_LT(max_abs_diff(out.logits[0], floats(c["logits"])), 1e-4);
      EXPECT_LT(max_abs_diff(out.probs[0], floats(c["probs"])), 1e-4);
      EXPECT_LT(max_abs_diff(out.cls_hidden[0], floats(c["cls_hidden"])), 1e-4);
      EXPECT_LT(max_abs_diff(out.pooled[0], floats(c["pooled"])), 1e-4);
      ASSERT_EQ(out.cls_per_layer.size(), c["cls_hidden_per_layer"].size());
      for (size_t k = 0; k < out.cls_per_layer.size(); ++k)
        EXPECT_LT(max_abs_diff(out.cls_per_layer[k][0], floats(c["cls_hidden_per_layer"][k])), 1e-4) << "layer " << k;
      EXPECT_NEAR(out.last_hidden.to(at::kDouble).sum().item<double>(), c["last_hidden_sum"].get<double>(),
                  1e-4 * out.last_hidden.numel() * 0.01 + 1e-3);
    }
  }
}

TEST(Deberta, PaddedBatchEqualsGoldenAndSingleRuns) {
  const DebertaClassifier& model = fp32_model();
  at::NoGradGuard no_grad;
  const json& batch = cases()["batch"];
  std::vector<json> ids, mask, types;
  for (const json& row : batch["rows"]) {
    ids.push_back(row["input_ids"]);
    mask.push_back(row["attention_mask"]);
    types.push_back(row["token_type_ids"]);
  }
  auto out = model.forward(ids_tensor(json(ids)), ids_tensor(json(mask)), ids_tensor(json(types)));
  ASSERT_EQ(out.logits.size(0), static_cast<int64_t>(ids.size()));
  for (size_t r = 0; r < ids.size(); ++r) {
    const json& row = batch["rows"][r];
    SCOPED_TRACE("row " + std::to_string(r));
    EXPECT_LT(max_abs_diff(out.logits[r], floats(row["logits"])), 1e-4);
    EXPECT_LT(max_abs_diff(out.probs[r], floats(row["probs"])), 1e-4);
    EXPECT_LT(max_abs_diff(out.cls_hidden[r], floats(row["cls_hidden"])), 1e-4);
    EXPECT_LT(max_abs_diff(out.pooled[r], floats(row["pooled"])), 1e-4);
    // The same row alone, without padding.
    const int64_t length = ids_tensor(row["attention_mask"]).sum().item<int64_t>();
    at::Tensor alone_ids = ids_tensor(row["input_ids"]).narrow(1, 0, length);
    at::Tensor alone_types = ids_tensor(row["token_type_ids"]).narrow(1, 0, length);
    auto alone = model.forward(alone_ids, {}, alone_types);
    EXPECT_LT(max_abs_diff(alone.logits[0], out.logits[r]), 1e-5);
    EXPECT_LT(max_abs_diff(alone.logits[0], floats(row["unpadded_logits"])), 1e-4);
  }
}

TEST(Deberta, Bf16WithinStatedTolerances) {
  DebertaLoadOptions options;
  options.dtype = at::kBFloat16;
  DebertaClassifier model = DebertaClassifier::load(model_dir(), options);
  EXPECT_EQ(model.dtype(), at::kBFloat16);
  at::NoGradGuard no_grad;
  for (const json& c : cases()["cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    auto out = model.forward(ids_tensor(c["input_ids"]), ids_tensor(c["attention_mask"]), ids_tensor(c["token_type_ids"]));
    EXPECT_LT(max_abs_diff(out.logits[0], floats(c["logits"])), 5e-2);
    EXPECT_LT(max_abs_diff(out.probs[0], floats(c["probs"])), 2e-2);
    const double norm = out.cls_hidden[0].norm().item<double>();
    EXPECT_NEAR(norm, c["cls_hidden_l2"].get<double>(), 2e-2 * c["cls_hidden_l2"].get<double>());
  }
}

TEST(Deberta, OneDistillationStepMatchesGolden) {
  const json& t = cases()["training"];
  DebertaLoadOptions load;
  load.trainable = true;
  DebertaClassifier model = DebertaClassifier::load(model_dir(), load);
  const auto& params = model.named_parameters();
  double sum_before = 0;
  for (const auto& [name, p] : params) sum_before += p.detach().to(at::kDouble).sum().item<double>();
  EXPECT_NEAR(sum_before, t["param_sum_before"].get<double>(), 1e-6);

  at::Tensor ids = ids_tensor(t["input_ids"]), mask = ids_tensor(t["attention_mask"]), types = ids_tensor(t["token_type_ids"]);
  auto out = model.forward(ids, mask, types);
  EXPECT_LT(max_abs_diff(out.logits.detach(), floats(t["logits"])), 1e-4);
  at::Tensor labels = at::tensor(t["labels"].get<std::vector<int64_t>>(), at::kLong);
  at::Tensor soft = floats(t["soft_labels"]);
  EXPECT_LT(max_abs_diff(train::binary_soft_target(soft), floats(t["kl_target"])), 1e-7);
  auto loss = train::distillation_loss(out.logits, labels, soft);
  EXPECT_NEAR(loss.ce.item<double>(), t["ce_loss"].get<double>(), 1e-5);
  EXPECT_NEAR(loss.kl.item<double>(), t["kl_loss"].get<double>(), 1e-5);
  EXPECT_NEAR(loss.loss.item<double>(), t["loss"].get<double>(), 1e-5);
  loss.loss.backward();

  for (const auto& [name, p] : params) EXPECT_TRUE(p.grad().defined()) << name << " got no gradient";
  const double norm = train::global_grad_norm(params);
  EXPECT_NEAR(norm, t["grad_global_l2_norm"].get<double>(), 1e-4 * t["grad_global_l2_norm"].get<double>());
  for (const auto& [name, p] : params) {
    const double expected = t["grad_l2_norm_per_param"].at(name).get<double>();
    EXPECT_NEAR(p.grad().to(at::kDouble).norm().item<double>(), expected, 1e-4 * expected + 1e-9) << name;
  }
  // clip_grad_norm_ with a large bound measures without scaling.
  EXPECT_NEAR(train::clip_grad_norm(params, 1e9), t["grad_global_l2_norm_torch_clip_grad_norm"].get<double>(), 1e-4 * norm);

  const auto& classifier_weight = std::find_if(params.begin(), params.end(), [](const auto& p) { return p.first == "classifier.weight"; })->second;
  const auto& classifier_bias = std::find_if(params.begin(), params.end(), [](const auto& p) { return p.first == "classifier.bias"; })->second;
  EXPECT_LT(max_abs_diff(classifier_weight.grad(), floats(t["classifier_weight_grad"])), 1e-5);
  EXPECT_LT(max_abs_diff(classifier_bias.grad(), floats(t["classifier_bias_grad"])), 1e-5);

  const json& o = t["optimizer"];
  train::AdamWOptions adam;
  adam.lr = o["lr"].get<double>();
  adam.beta1 = o["betas"][0].get<double>();
  adam.beta2 = o["betas"][1].get<double>();
  adam.eps = o["eps"].get<double>();
  adam.weight_decay = o["weight_decay"].get<double>();
  adam.exclude_bias_and_norm_from_decay = false;  // the golden: one group, decay on every tensor
  train::AdamW optimizer(params, adam);
  optimizer.step();

  EXPECT_LT(max_abs_diff(classifier_weight.detach(), floats(t["classifier_weight_after"])), 1e-5);
  EXPECT_LT(max_abs_diff(classifier_bias.detach(), floats(t["classifier_bias_after"])), 1e-5);
  double sum_after = 0;
  for (const auto& [name, p] : params) {
    const double s = p.detach().to(at::kDouble).sum().item<double>();
    sum_after += s;
    EXPECT_NEAR(s, t["param_sum_per_tensor_after"].at(name).get<double>(), 1e-3) << name;
  }
  EXPECT_NEAR(sum_after, t["param_sum_after"].get<double>(), 1e-3);

  optimizer.zero_grad();
  at::NoGradGuard no_grad;  // also exercises the cached relative projections being refreshed after the step
  auto after = model.forward(ids, mask, types);
  EXPECT_LT(max_abs_diff(after.logits, floats(t["logits_after_step"])), 2e-4);
}

TEST(Deberta, AdamWGroupsExcludeBiasAndLayerNorm) {
  DebertaLoadOptions load;
  load.trainable = true;
  DebertaClassifier model = DebertaClassifier::load(model_dir(), load);
  train::AdamW optimizer(model.named_parameters(), train::AdamWOptions{});
  EXPECT_TRUE(optimizer.decays("deberta.encoder.layer.0.attention.self.query_proj.weight"));
  EXPECT_TRUE(optimizer.decays("classifier.weight"));
  EXPECT_FALSE(optimizer.decays("classifier.bias"));
  EXPECT_FALSE(optimizer.decays("deberta.embeddings.LayerNorm.weight"));
  EXPECT_FALSE(optimizer.decays("deberta.encoder.LayerNorm.weight"));

  // Clipping scales the gradients to the bound.
  auto out = model.forward(ids_tensor(cases()["cases"][0]["input_ids"]));
  out.logits.sum().backward();
  const double before = train::clip_grad_norm(model.named_parameters(), 0.01);
  EXPECT_GT(before, 0.01);
  EXPECT_NEAR(train::global_grad_norm(model.named_parameters()), 0.01, 1e-5);
}

TEST(Deberta, SavePretrainedRoundTrip) {
  const auto dir = test::temp_dir("deberta_save");
  const DebertaClassifier& model = fp32_model();
  model.save_pretrained(dir);
  DebertaClassifier reloaded = DebertaClassifier::load(dir);
  EXPECT_EQ(reloaded.parameter_count(), model.parameter_count());
  // Same tensors, bit for bit, under the same HF names.
  auto original = io::Checkpoint::open(model_dir());
  auto saved = io::Checkpoint::open(dir);
  EXPECT_EQ(original.names(), saved.names());
  for (const auto& name : original.names()) {
    const auto& a = original.get(name);
    const auto& b = saved.get(name);
    EXPECT_EQ(a.shape, b.shape) << name;
    EXPECT_EQ(0, std::memcmp(a.data, b.data, a.nbytes)) << name;
  }
  at::NoGradGuard no_grad;
  const json& c = cases()["cases"][2];
  auto x = model.forward(ids_tensor(c["input_ids"]), {}, ids_tensor(c["token_type_ids"]));
  auto y = reloaded.forward(ids_tensor(c["input_ids"]), {}, ids_tensor(c["token_type_ids"]));
  EXPECT_EQ(max_abs_diff(x.logits, y.logits), 0.0);
  json config = test::load_json(dir / "config.json");
  EXPECT_EQ(config["model_type"], "deberta-v2");
  EXPECT_EQ(config["pos_att_type"], json({"p2c", "c2p"}));
  EXPECT_EQ(config["id2label"].size(), 2u);
  std::filesystem::remove_all(dir);
}

namespace {

DebertaConfig tiny_config() {
  DebertaConfig c = DebertaConfig::from_json(json::parse(R"({
    "vocab_size": 50, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 40,
    "relative_attention": true, "position_buckets": 16, "max_relative_positions": -1, "max_position_embeddings": 64,
    "pos_att_type": ["c2p", "p2c"], "share_att_key": true, "norm_rel_ebd": "layer_norm",
    "position_biased_input": false, "type_vocab_size": 0})"));
  return c;
}

// Runs a random model of `config` on a padded batch: shapes, finite values, padding invariance, and both
// relative-position paths agreeing.
void check_variant(const DebertaConfig& config, const std::string& what) {
  SCOPED_TRACE(what);
  DebertaClassifier model = DebertaClassifier::random(config, 7, {}, 0.2);
  at::NoGradGuard no_grad;
  for (int64_t T : {5, 30}) {  // 30 > position_buckets / 2: the log buckets and clamping
    at::Tensor ids = at::randint(4, config.vocab_size, {2, T}, at::kLong);
    at::Tensor mask = at::ones({2, T}, at::kLong);
    mask[1].narrow(0, T - 2, 2).fill_(0);
    at::Tensor types = config.type_vocab_size > 0 ? at::randint(0, config.type_vocab_size, {2, T}, at::kLong) : at::Tensor();
    auto out = model.forward(ids, mask, types);
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, config.num_labels}));
    EXPECT_EQ(out.pooled.sizes(), (std::vector<int64_t>{2, config.pooler_size()}));
    EXPECT_EQ(out.last_hidden.sizes(), (std::vector<int64_t>{2, T, config.hidden_size}));
    EXPECT_TRUE(out.logits.isfinite().all().item<bool>());
    EXPECT_NEAR(out.probs.sum(1).sub(1).abs().max().item<double>(), 0.0, 1e-6);
    DebertaForwardOptions gather;
    gather.force_gather = true;
    auto reference = model.forward(ids, mask, types, gather);
    EXPECT_LT(max_abs_diff(out.logits, reference.logits), 1e-5);
    auto alone = model.forward(ids[1].narrow(0, 0, T - 2).unsqueeze(0), {},
                               types.defined() ? types[1].narrow(0, 0, T - 2).unsqueeze(0) : at::Tensor());
    EXPECT_LT(max_abs_diff(alone.logits[0], out.logits[1]), 1e-5);
  }
  // Trainable: every parameter receives a gradient.
  DebertaLoadOptions trainable;
  trainable.trainable = true;
  DebertaClassifier train_model = DebertaClassifier::random(config, 7, trainable, 0.2);
  at::AutoGradMode grad(true);
  auto out = train_model.forward(at::randint(4, config.vocab_size, {2, 9}, at::kLong));
  out.logits.pow(2).sum().backward();
  for (const auto& [name, p] : train_model.named_parameters()) {
    // HF builds the relative-embedding LayerNorm from norm_rel_ebd alone; without relative attention it is unused.
    if (!config.relative_attention && name.rfind("deberta.encoder.LayerNorm", 0) == 0) continue;
    ASSERT_TRUE(p.grad().defined()) << name;
  }
}

}  // namespace

TEST(Deberta, UnseenConfigurations) {
  check_variant(tiny_config(), "base tiny");
  {
    DebertaConfig c = tiny_config();
    c.pos_att_type = {"p2c", "c2p"};
    check_variant(c, "p2c first");
  }
  {
    DebertaConfig c = tiny_config();
    c.pos_att_type = {"c2p"};
    check_variant(c, "c2p only");
  }
  {
    DebertaConfig c = tiny_config();
    c.share_att_key = false;
    check_variant(c, "separate position projections");
  }
  {
    DebertaConfig c = tiny_config();
    c.relative_attention = false;
    c.position_biased_input = true;
    check_variant(c, "no relative attention, absolute positions");
  }
  {
    DebertaConfig c = tiny_config();
    c.position_buckets = -1;
    c.max_relative_positions = 20;  // no buckets: clamped at +-20
    c.norm_rel_ebd = {"none"};
    check_variant(c, "no buckets, clamped span");
  }
  {
    DebertaConfig c = tiny_config();
    c.num_labels = 3;
    c.id2label = {"a", "b", "c"};
    c.type_vocab_size = 2;
    c.hidden_act = "gelu_new";
    c.embedding_size = 16;
    check_variant(c, "3 labels, token types, embed_proj");
  }
}

TEST(Deberta, ThreeLabelSaveLoadRoundTrip) {
  DebertaConfig c = tiny_config();
  c.num_labels = 3;
  c.id2label = {"safe", "unsafe", "unsure"};
  c.share_att_key = false;
  DebertaClassifier model = DebertaClassifier::random(c, 3);
  const auto dir = test::temp_dir("deberta_three");
  model.save_pretrained(dir);
  DebertaClassifier reloaded = DebertaClassifier::load(dir);
  EXPECT_EQ(reloaded.config().num_labels, 3);
  EXPECT_EQ(reloaded.config().id2label[2], "unsure");
  EXPECT_FALSE(reloaded.config().share_att_key);
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(4, c.vocab_size, {2, 12}, at::kLong);
  EXPECT_EQ(max_abs_diff(model.forward(ids).logits, reloaded.forward(ids).logits), 0.0);
  std::filesystem::remove_all(dir);
}

TEST(Deberta, LoadErrorsNameTheTensor) {
  const auto dir = test::temp_dir("deberta_bad");
  std::filesystem::copy_file(model_dir() / "config.json", dir / "config.json");
  auto checkpoint = io::Checkpoint::open(model_dir());
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : checkpoint.names())
    if (name != "deberta.encoder.layer.1.output.dense.weight")
      tensors.emplace_back(name, models::tensor_from_view(checkpoint.get(name), at::kFloat, at::kCPU));
  models::save_tensors((dir / "model.safetensors").string(), tensors);
  try {
    DebertaClassifier::load(dir);
    FAIL() << "a missing tensor must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deberta.encoder.layer.1.output.dense.weight"), std::string::npos) << e.what();
  }
  tensors.emplace_back("deberta.encoder.layer.1.output.dense.weight", at::zeros({32, 63}));
  models::save_tensors((dir / "model.safetensors").string(), tensors);
  try {
    DebertaClassifier::load(dir);
    FAIL() << "a mis-shaped tensor must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deberta.encoder.layer.1.output.dense.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("32, 64"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
  EXPECT_THROW(DebertaClassifier::load(test::temp_dir("deberta_empty")), Error);
  DebertaLoadOptions half;
  half.dtype = at::kHalf;
  EXPECT_THROW(DebertaClassifier::load(model_dir(), half), Error);  // no CPU half kernels: a clear error, not a crash
}

TEST(Deberta, BadInputsAreErrors) {
  const DebertaClassifier& model = fp32_model();
  at::NoGradGuard no_grad;
  EXPECT_THROW(model.forward(at::tensor({1, 900, 2}, at::kLong).unsqueeze(0)), Error);
  EXPECT_THROW(model.forward(at::tensor({1, -1, 2}, at::kLong).unsqueeze(0)), Error);
  EXPECT_THROW(model.forward(at::zeros({3}, at::kLong)), Error);
  EXPECT_THROW(model.forward(at::ones({1, 3}, at::kLong), at::ones({1, 4}, at::kLong)), Error);
  EXPECT_THROW(model.forward(at::ones({1, 3}, at::kFloat)), Error);
}
