// Qwen3 decoder (the Llama decoder with qk_norm): parity with transformers 4.57 Qwen3ForCausalLM on the two fixture
// models (tied `qwen3/`, untied `qwen3/untied/`), per compute dtype with the fixture's tolerances, and properties
// on Qwen3 configurations the fixtures do not cover (attention bias, other head_dim, rope scaling).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "models/generation.h"
#include "models/llama.h"
#include "models/llama_config.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::models;
using nlohmann::json;

namespace {

struct Variant {
  std::string dir;    // fixture folder
  at::ScalarType dtype;
};

std::string variant_name(const testing::TestParamInfo<Variant>& info) {
  std::string name = info.param.dir == "qwen3" ? "tied" : "untied";
  return name + (info.param.dtype == at::kFloat ? "_fp32" : "_bf16");
}

const json& cases_of(const std::string& dir) {
  static std::map<std::string, json> cache;
  auto& slot = cache[dir];
  if (slot.is_null()) slot = test::load_json(test::fixture(dir + "/cases.json"));
  return slot;
}

std::shared_ptr<LlamaModel> model_of(const std::string& dir, at::ScalarType dtype) {
  static std::map<std::pair<std::string, int>, std::shared_ptr<LlamaModel>> models;
  auto& slot = models[{dir, static_cast<int>(dtype)}];
  if (!slot) slot = LlamaModel::load(test::fixture(dir), dtype);
  return slot;
}

std::vector<int64_t> ids_of(const json& j) { return j.get<std::vector<int64_t>>(); }

// Per-dtype tolerances from shared/fixtures/README.md ("Suggested tolerances", Qwen3 rows), except bf16 logits: the
// suggested abs 5e-2 is below what bf16 can hold for this fixture's wide init (logits around +-12, where one bf16
// step is 0.0625); as for Llama (test_llama Bf16WithinStatedTolerance) a wider bound is stated: 0.4 abs (observed
// worst 0.32, a watched logit at the end of the 300-token case).
struct Tolerance {
  double logits;        // abs
  double reductions;    // rel, logits_sum / l2 / logsumexp
  double hidden_norm;   // rel on the L2 norm of hidden vectors
  bool exact_ranking;   // top-10 and greedy ids
};
Tolerance tolerance(at::ScalarType dtype) {
  if (dtype == at::kFloat) return {1e-4, 1e-5, 1e-5, true};
  return {0.4, 1e-2, 2e-2, false};
}

double l2(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

void expect_hidden(const at::Tensor& got_row, const json& want, const Tolerance& tol, at::ScalarType dtype,
                   const std::string& what) {
  const auto expected = want.get<std::vector<double>>();
  at::Tensor got = got_row.to(at::kDouble).contiguous();
  ASSERT_EQ(got.numel(), static_cast<int64_t>(expected.size())) << what;
  if (dtype == at::kFloat) {
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[i].item<double>(), expected[i], 1e-4) << what << " " << i;
  } else {
    EXPECT_NEAR(got.norm().item<double>(), l2(expected), tol.hidden_norm * l2(expected)) << what;
  }
}

class Qwen3Parity : public testing::TestWithParam<Variant> {};

}  // namespace

TEST(Qwen3Config, ReadsBothFixtureConfigs) {
  LlamaConfig c = LlamaConfig::from_file(test::fixture("qwen3"));
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 16);  // from config.json, not hidden / heads = 8
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.num_parameters(), cases_of("qwen3")["n_params"].get<int64_t>());
  LlamaConfig u = LlamaConfig::from_file(test::fixture("qwen3/untied"));
  EXPECT_FALSE(u.tie_word_embeddings);
  EXPECT_EQ(u.head_dim, 8);
  EXPECT_EQ(u.num_parameters(), cases_of("qwen3/untied")["n_params"].get<int64_t>());
  const auto want = cases_of("qwen3")["rope"]["inv_freq"].get<std::vector<double>>();
  const auto got = c.rope_inv_freq();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], static_cast<float>(want[i])) << i;
}

TEST(Qwen3Config, Qwen3DefaultsAndErrors) {
  LlamaConfig d = LlamaConfig::from_json(json{{"model_type", "qwen3"}});
  EXPECT_EQ(d.head_dim, 128);  // Qwen3Config's default, not 4096 / 32
  EXPECT_EQ(d.vocab_size, 151936);
  EXPECT_EQ(d.num_key_value_heads, 32);
  EXPECT_FALSE(d.bos_token_id.has_value());
  EXPECT_TRUE(d.eos_token_ids.empty());
  auto message = [](const json& j) {
    try {
      LlamaConfig::from_json(j, "cfg");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message(json{{"model_type", "qwen3"}, {"use_sliding_window", true}}).find("sliding"), std::string::npos);
  EXPECT_NE(message(json{{"model_type", "mamba"}}).find("mamba"), std::string::npos);
  EXPECT_NE(message(json{{"model_type", "qwen3"}, {"rope_scaling", {{"rope_type", "longrope"}, {"factor", 2.0}}}})
                .find("longrope"),
            std::string::npos);
}

TEST(Qwen3Config, YarnFrequenciesAndAttentionFactor) {
  json j = {{"model_type", "qwen3"}, {"head_dim", 64}, {"rope_theta", 1e6}, {"max_position_embeddings", 4096},
            {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}};
  LlamaConfig yarn = LlamaConfig::from_json(j);
  j.erase("rope_scaling");
  LlamaConfig plain = LlamaConfig::from_json(j);
  const auto a = yarn.rope_inv_freq(), b = plain.rope_inv_freq();
  ASSERT_EQ(a.size(), 32u);
  // The fastest dimensions rotate many times over the context: kept; the slowest are divided by the factor.
  EXPECT_FLOAT_EQ(a.front(), b.front());
  EXPECT_NEAR(a.back(), b.back() / 4.0f, 1e-6f * b.back());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_LE(a[i], b[i] * (1 + 1e-6f)) << i;
    EXPECT_GE(a[i], b[i] / 4.0f * (1 - 1e-6f)) << i;
  }
  EXPECT_NEAR(yarn.rope_attention_scaling(), 0.1 * std::log(4.0) + 1.0, 1e-6);
  EXPECT_FLOAT_EQ(plain.rope_attention_scaling(), 1.0f);
  // transformers 4.57: an original context length replaces the factor by max_position_embeddings / original.
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 2048}};
  EXPECT_DOUBLE_EQ(LlamaConfig::from_json(j).rope_scaling.factor, 2.0);
}

TEST_P(Qwen3Parity, EveryCase) {
  const auto [dir, dtype] = GetParam();
  const Tolerance tol = tolerance(dtype);
  auto model = model_of(dir, dtype);
  ForwardOptions options;
  options.layer_hidden_at_last = true;
  for (const auto& c : cases_of(dir)["cases"]) {
    const std::string what = c["id"];
    auto out = model->forward(ids_of(c["input_ids"]), nullptr, options);
    at::Tensor logits = out.logits[0];
    for (const auto& [id, value] : c["logits_watch"].items())
      EXPECT_NEAR(logits[std::stoll(id)].item<float>(), value.get<double>(), tol.logits) << what << " id " << id;
    auto [top_values, top_ids] = at::topk(logits, 10);
    for (int i = 0; i < 10; ++i) {
      if (tol.exact_ranking) EXPECT_EQ(top_ids[i].item<int64_t>(), c["top10_ids"][i].get<int64_t>()) << what << " " << i;
      EXPECT_NEAR(top_values[i].item<float>(), c["top10_values"][i].get<double>(), tol.logits) << what << " " << i;
    }
    at::Tensor l = logits.to(at::kDouble);
    const double sum = c["logits_sum"], norm = c["logits_l2"], lse = c["logsumexp"];
    // The sum of 151936 logits of both signs can be small: tolerance relative to the L2 norm.
    EXPECT_NEAR(l.sum().item<double>(), sum, tol.reductions * norm * std::sqrt(151936.0)) << what;
    EXPECT_NEAR(l.norm().item<double>(), norm, tol.reductions * norm) << what;
    EXPECT_NEAR(at::logsumexp(l, -1).item<double>(), lse, tol.reductions * std::abs(lse)) << what;
    expect_hidden(out.last_hidden[0], c["final_hidden"], tol, dtype, what + " final_hidden");
    const auto& layers = c["hidden_states_last_pos"];
    ASSERT_EQ(out.layer_hidden.size(), layers.size()) << what;
    for (size_t k = 0; k < layers.size(); ++k)
      expect_hidden(out.layer_hidden[k][0], layers[k], tol, dtype, what + " layer " + std::to_string(k));
  }
}

TEST_P(Qwen3Parity, KvCacheChunksEqualFull) {
  const auto [dir, dtype] = GetParam();
  const Tolerance tol = tolerance(dtype);
  auto model = model_of(dir, dtype);
  for (const auto& k : cases_of(dir)["kv_cache"]) {
    std::vector<int64_t> ids;
    for (const auto& c : cases_of(dir)["cases"])
      if (c["len"] == k["len"]) ids = ids_of(c["input_ids"]);
    ASSERT_FALSE(ids.empty());
    const auto split = k["split_at"].get<size_t>();
    KVCache cache = model->new_cache(1);
    auto first = model->forward(std::vector<int64_t>(ids.begin(), ids.begin() + split), &cache);
    auto second = model->forward(std::vector<int64_t>(ids.begin() + split, ids.end()), &cache);
    auto full = model->forward(ids);
    if (dtype == at::kFloat) EXPECT_LE((second.logits - full.logits).abs().max().item<float>(), 1e-4);
    for (const auto& [id, value] : k["chunked_logits_watch"].items())
      EXPECT_NEAR(second.logits[0][std::stoll(id)].item<float>(), value.get<double>(), tol.logits) << id;
    if (tol.exact_ranking) {
      auto top = std::get<1>(at::topk(first.logits[0], 10));
      for (int i = 0; i < 10; ++i) EXPECT_EQ(top[i].item<int64_t>(), k["chunk1_last_top10_ids"][i].get<int64_t>());
    }
  }
}

TEST_P(Qwen3Parity, TokenByTokenEqualsFull) {
  const auto [dir, dtype] = GetParam();
  if (dtype != at::kFloat) GTEST_SKIP() << "bf16 rounds each step differently; the fp32 case checks the cache";
  auto model = model_of(dir, dtype);
  const auto& c = cases_of(dir)["cases"][4];  // 17 random ids
  const auto ids = ids_of(c["input_ids"]);
  KVCache cache = model->new_cache(1);
  ForwardOutput step;
  for (int64_t id : ids) step = model->forward(std::vector<int64_t>{id}, &cache);
  EXPECT_LE((step.logits - model->forward(ids).logits).abs().max().item<float>(), 1e-4);
}

TEST_P(Qwen3Parity, GreedyGeneration) {
  const auto [dir, dtype] = GetParam();
  if (dtype != at::kFloat) GTEST_SKIP() << "greedy ids may legitimately differ in bf16 (fixture README)";
  auto model = model_of(dir, dtype);
  for (const auto& g : cases_of(dir)["generation"]) {
    GenerationOptions options;
    options.max_new_tokens = static_cast<int64_t>(g["new_ids"].size());
    options.stop_at_eos = false;  // the fixture ran 12 steps without EOS stopping
    auto result = generate(*model, {ids_of(g["prompt_ids"])}, options);
    EXPECT_EQ(result.new_ids[0], ids_of(g["new_ids"])) << g["prompt"];
    EXPECT_EQ(result.new_ids[0], ids_of(g["hf_generate_new_ids"]));
  }
}

INSTANTIATE_TEST_SUITE_P(Qwen3, Qwen3Parity,
                         testing::Values(Variant{"qwen3", at::kFloat}, Variant{"qwen3", at::kBFloat16},
                                         Variant{"qwen3/untied", at::kFloat}, Variant{"qwen3/untied", at::kBFloat16}),
                         variant_name);

// Qwen3 configurations the fixtures do not hold: random weights, checked for what must hold on any config
// (cached decoding equals the full pass, left padding equals single runs, the q/k norm weights matter).
TEST(Qwen3Variants, CachedAndPaddedRunsAgreeOnOtherConfigs) {
  const json base = {{"model_type", "qwen3"}, {"vocab_size", 61}, {"hidden_size", 24}, {"intermediate_size", 40},
                     {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                     {"head_dim", 12}, {"tie_word_embeddings", false}, {"max_position_embeddings", 64}};
  std::vector<json> variants;
  variants.push_back(base);
  json bias = base;
  bias["attention_bias"] = true;
  variants.push_back(bias);
  json yarn = base;
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 16}};
  variants.push_back(yarn);
  json linear = base;
  linear["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  linear["head_dim"] = nullptr;  // hidden / heads = 6
  variants.push_back(linear);
  const std::vector<int64_t> a = {3, 17, 5, 60, 8, 9, 21}, b = {44, 2, 7};
  for (const auto& j : variants) {
    const std::string what = j.dump();
    LlamaConfig config = LlamaConfig::from_json(j);
    auto tensors = LlamaModel::random_tensors(config, 7, 0.3);
    ASSERT_TRUE(tensors.count("model.layers.0.self_attn.q_norm.weight")) << what;
    EXPECT_EQ(tensors.count("model.layers.1.self_attn.o_proj.bias"), config.attention_bias ? 1u : 0u) << what;
    auto model = LlamaModel::from_tensors(config, tensors);
    at::Tensor full = model->forward(a).logits;
    KVCache cache = model->new_cache(1);
    model->forward(std::vector<int64_t>(a.begin(), a.begin() + 4), &cache);
    at::Tensor cached = model->forward(std::vector<int64_t>(a.begin() + 4, a.end()), &cache).logits;
    EXPECT_LE((cached - full).abs().max().item<float>(), 1e-4) << what;
    auto [ids, mask] = LlamaModel::pad_batch({a, b}, 0, /*left_padding=*/true);
    at::Tensor batch = model->forward(ids, mask, nullptr).logits;
    EXPECT_LE((batch[0] - full[0]).abs().max().item<float>(), 1e-4) << what;
    EXPECT_LE((batch[1] - model->forward(b).logits[0]).abs().max().item<float>(), 1e-4) << what;
    // The per-head norm is applied: changing its weight changes the output.
    tensors["model.layers.0.self_attn.k_norm.weight"] = tensors["model.layers.0.self_attn.k_norm.weight"] * 3.0;
    at::Tensor changed = LlamaModel::from_tensors(config, tensors)->forward(a).logits;
    EXPECT_GT((changed - full).abs().max().item<float>(), 1e-3) << what;
  }
}

TEST(Qwen3Loading, MissingQkNormIsNamed) {
  LlamaConfig config = LlamaConfig::from_file(test::fixture("qwen3/untied"));
  auto tensors = LlamaModel::random_tensors(config, 1);
  tensors.erase("model.layers.1.self_attn.q_norm.weight");
  try {
    LlamaModel::from_tensors(config, tensors);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn.q_norm.weight"), std::string::npos) << e.what();
  }
}
