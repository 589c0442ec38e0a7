// Llama decoder: parity with Hugging Face LlamaForCausalLM on the fixture model (shared/fixtures/llama), and
// properties that must hold on configurations the fixture does not cover.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "models/generation.h"
#include "models/llama.h"
#include "models/llama_config.h"
#include "models/weights.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::models;
using nlohmann::json;

namespace {

const json& cases() {
  static json data = test::load_json(test::fixture("llama/cases.json"));
  return data;
}

std::shared_ptr<LlamaModel> fixture_model(c10::ScalarType dtype = at::kFloat) {
  static std::map<int, std::shared_ptr<LlamaModel>> models;
  auto& slot = models[static_cast<int>(dtype)];
  if (!slot) slot = LlamaModel::load(test::fixture("llama"), dtype);
  return slot;
}

std::vector<int64_t> ids_of(const json& j) { return j.get<std::vector<int64_t>>(); }

const json& case_by_id(const std::string& id) {
  for (const auto& c : cases()["cases"])
    if (c["id"] == id) return c;
  throw std::runtime_error("no case " + id);
}

std::vector<float> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous().reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

double logsumexp(const at::Tensor& logits) { return at::logsumexp(logits.to(at::kDouble), -1).item<double>(); }

void expect_watch(const at::Tensor& logits_row, const json& watch, double tol, const std::string& what) {
  for (const auto& [id, value] : watch.items())
    EXPECT_NEAR(logits_row[std::stoll(id)].item<float>(), value.get<double>(), tol) << what << " id " << id;
}

void expect_top10(const at::Tensor& logits_row, const json& ids, const json& values, double tol,
                  const std::string& what) {
  auto [top_values, top_ids] = at::topk(logits_row, 10);
  EXPECT_EQ(to_vector(top_ids.to(at::kFloat)).size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(top_ids[i].item<int64_t>(), ids[i].get<int64_t>()) << what << " rank " << i;
    EXPECT_NEAR(top_values[i].item<float>(), values[i].get<double>(), tol) << what << " rank " << i;
  }
}

json tiny_config_json(const std::string& variant) {
  json j = {{"vocab_size", 97},          {"hidden_size", 24},       {"intermediate_size", 40},
            {"num_hidden_layers", 2},    {"num_attention_heads", 6}, {"num_key_value_heads", 2},
            {"rms_norm_eps", 1e-5},      {"rope_theta", 10000.0},   {"tie_word_embeddings", true},
            {"bos_token_id", 1},         {"eos_token_id", 2},       {"max_position_embeddings", 256}};
  if (variant == "untied") j["tie_word_embeddings"] = false;
  if (variant == "linear") j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  if (variant == "llama3")
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  if (variant == "mha") j["num_key_value_heads"] = 6;
  if (variant == "bias") {
    j["attention_bias"] = true;
    j["mlp_bias"] = true;
  }
  if (variant == "head_dim") {
    j["head_dim"] = 8;  // heads * head_dim != hidden_size, as some checkpoints do
  }
  return j;
}

LlamaConfig tiny_config(const std::string& variant) { return LlamaConfig::from_json(tiny_config_json(variant), variant); }

}  // namespace

// ----------------------------------------------------------------------------------------------------------------
// Config

TEST(LlamaConfig, ReadsTheFixtureConfig) {
  LlamaConfig c = LlamaConfig::from_file(test::fixture("llama"));
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 16);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.query_groups(), 2);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::Llama3);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{128009});
  EXPECT_EQ(c.num_parameters(), cases()["n_params"].get<int64_t>());
}

TEST(LlamaConfig, RopeFrequenciesMatchTransformers) {
  LlamaConfig c = LlamaConfig::from_file(test::fixture("llama"));
  const auto used = cases()["rope"]["inv_freq_used"].get<std::vector<double>>();
  const auto inv = c.rope_inv_freq();
  ASSERT_EQ(inv.size(), used.size());
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(inv[i], used[i], 1e-7 * used[i]) << i;
  c.rope_scaling = {};
  const auto plain = c.rope_inv_freq();
  const auto defaults = cases()["rope"]["inv_freq_default"].get<std::vector<double>>();
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(plain[i], defaults[i], 1e-7 * defaults[i]) << i;
  LlamaConfig linear = tiny_config("linear"), none = tiny_config("none");
  auto a = linear.rope_inv_freq(), b = none.rope_inv_freq();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_FLOAT_EQ(a[i], b[i] / 4.0f);
}

TEST(LlamaConfig, HuggingFaceDefaultsAndErrors) {
  LlamaConfig d = LlamaConfig::from_json(json::object());
  EXPECT_EQ(d.vocab_size, 32000);
  EXPECT_EQ(d.num_key_value_heads, 32);  // absent = MHA
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_DOUBLE_EQ(d.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(d.rope_theta, 10000.0);
  EXPECT_FALSE(d.tie_word_embeddings);
  EXPECT_EQ(d.rope_scaling.kind, RopeScaling::Kind::None);
  EXPECT_EQ(d.bos_token_id, 1);
  EXPECT_EQ(d.eos_token_ids, std::vector<int64_t>{2});

  LlamaConfig lists = LlamaConfig::from_json(
      json{{"eos_token_id", {128001, 128008, 128009}}, {"bos_token_id", nullptr}, {"vocab_size", 128256},
           {"num_key_value_heads", nullptr}, {"rope_scaling", nullptr}});
  EXPECT_EQ(lists.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(lists.bos_token_id.has_value());
  EXPECT_EQ(lists.num_key_value_heads, 32);

  auto message = [](const json& j) {
    try {
      LlamaConfig::from_json(j, "cfg.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"num_attention_heads", 6}, {"num_key_value_heads", 4}, {"hidden_size", 24}}).find("multiple"),
            std::string::npos);
  EXPECT_NE(message({{"rope_scaling", {{"rope_type", "longrope"}, {"factor", 4.0}}}}).find("longrope"), std::string::npos);
  EXPECT_NE(message({{"hidden_size", "big"}}).find("hidden_size"), std::string::npos);
  EXPECT_NE(message({{"model_type", "bert"}}).find("bert"), std::string::npos);
  EXPECT_NE(message({{"eos_token_id", "x"}}).find("eos_token_id"), std::string::npos);
  EXPECT_NE(message({{"hidden_size", 30}, {"num_attention_heads", 4}}).find("divisible"), std::string::npos);
}

// ----------------------------------------------------------------------------------------------------------------
// Parity with the HF goldens (fp32, abs 1e-4; reductions rel 1e-5; top-10 ids exact)

TEST(LlamaParity, EveryCaseFp32) {
  auto model = fixture_model();
  for (const auto& c : cases()["cases"]) {
    const std::string id = c["id"];
    ForwardOptions options;
    options.logits = LogitsMode::Last;
    options.layer_hidden_at_last = true;
    ForwardOutput out = model->forward(ids_of(c["input_ids"]), nullptr, options);
    at::Tensor row = out.logits[0];
    ASSERT_EQ(row.size(0), 128256);
    expect_watch(row, c["logits_watch"], 1e-4, id);
    expect_top10(row, c["top10_ids"], c["top10_values"], 1e-4, id);
    at::Tensor d = row.to(at::kDouble);
    EXPECT_NEAR(d.sum().item<double>(), c["logits_sum"].get<double>(), 1e-5 * std::abs(c["logits_sum"].get<double>()) + 1e-3) << id;
    EXPECT_NEAR(d.norm().item<double>(), c["logits_l2"].get<double>(), 1e-5 * c["logits_l2"].get<double>()) << id;
    EXPECT_NEAR(logsumexp(row), c["logsumexp"].get<double>(), 1e-5 * std::abs(c["logsumexp"].get<double>())) << id;
    const auto hidden = to_vector(out.last_hidden[0]);
    const auto expected = c["final_hidden"].get<std::vector<double>>();
    ASSERT_EQ(hidden.size(), expected.size());
    for (size_t i = 0; i < hidden.size(); ++i) EXPECT_NEAR(hidden[i], expected[i], 1e-4) << id << " hidden " << i;
    const auto& layers = c["hidden_states_last_pos"];
    ASSERT_EQ(out.layer_hidden.size(), layers.size()) << id;
    for (size_t k = 0; k < layers.size(); ++k) {
      const auto got = to_vector(out.layer_hidden[k][0]);
      const auto want = layers[k].get<std::vector<double>>();
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << id << " layer " << k << " " << i;
    }
  }
}

TEST(LlamaParity, KvCacheTwoChunksEqualsFull) {
  auto model = fixture_model();
  for (const auto& kv : cases()["kv_cache"]) {
    const auto ids = ids_of(case_by_id(kv["sequence"])["input_ids"]);
    const int64_t split = kv["split_at"];
    KVCache cache = model->new_cache(1);
    ForwardOutput first = model->forward(std::vector<int64_t>(ids.begin(), ids.begin() + split), &cache);
    EXPECT_EQ(cache.length(), split);
    expect_top10(first.logits[0], kv["chunk1_last_top10_ids"], kv["chunk1_last_top10_values"], 1e-4, "chunk1");
    ForwardOutput second = model->forward(std::vector<int64_t>(ids.begin() + split, ids.end()), &cache);
    EXPECT_EQ(cache.length(), static_cast<int64_t>(ids.size()));
    EXPECT_EQ(cache.real_tokens()[0].item<int64_t>(), static_cast<int64_t>(ids.size()));
    expect_watch(second.logits[0], kv["chunked_logits_watch"], 1e-4, "chunked");
    expect_top10(second.logits[0], kv["chunked_top10_ids"], kv["chunked_top10_values"], 1e-4, "chunked");
    ForwardOutput full = model->forward(ids);
    EXPECT_LT((full.logits - second.logits).abs().max().item<float>(), 1e-4);
  }
}

TEST(LlamaParity, TokenByTokenDecodingEqualsFull) {
  auto model = fixture_model();
  const auto ids = ids_of(case_by_id("public-len17_random_ids")["input_ids"]);
  KVCache cache = model->new_cache(1, 2);  // small capacity: forces the cache to grow on the way
  ForwardOutput step;
  for (int64_t id : ids) step = model->forward(std::vector<int64_t>{id}, &cache);
  ForwardOutput full = model->forward(ids);
  EXPECT_LT((full.logits - step.logits).abs().max().item<float>(), 1e-4);
}

TEST(LlamaParity, GreedyGenerationIds) {
  auto model = fixture_model();
  GenerationOptions options;
  options.max_new_tokens = 12;
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& g : cases()["generation"]) {
    prompts.push_back(ids_of(g["prompt_ids"]));
    GenerationResult r = generate(*model, {prompts.back()}, options);
    EXPECT_EQ(r.new_ids[0], ids_of(g["new_ids"])) << g["prompt"];
    EXPECT_EQ(r.finish_reasons[0], "length");
    EXPECT_EQ(r.generated_tokens, 12);
  }
  // Both prompts in one left-padded batch (lengths 6 and 17) give the same ids.
  GenerationResult batched = generate(*model, prompts, options);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batched.new_ids[i], ids_of(cases()["generation"][i]["new_ids"]));
}

TEST(LlamaParity, Bf16WithinStatedTolerance) {
  // The README suggests abs 5e-2 on bf16 logits, but this fixture's wide init (std 0.5, logits around +-10) puts
  // the unavoidable error higher: rounding only the weights to bf16 (fp32 compute) already moves the watched logits
  // by up to 0.094, and bf16 compute (bf16 activations and matmuls, attention products in fp32) by up to 0.14.
  // Stated tolerance: 0.25 abs on logits, 2e-2 relative on logsumexp.
  auto model = fixture_model(at::kBFloat16);
  double worst = 0;
  for (const auto& c : cases()["cases"]) {
    ForwardOutput out = model->forward(ids_of(c["input_ids"]));
    for (const auto& [id, value] : c["logits_watch"].items())
      worst = std::max(worst, std::abs(out.logits[0][std::stoll(id)].item<float>() - value.get<double>()));
    EXPECT_NEAR(logsumexp(out.logits[0]), c["logsumexp"].get<double>(), 2e-2 * c["logsumexp"].get<double>());
  }
  EXPECT_LT(worst, 0.25);
  std::cout << "bf16 worst watch-logit error " << worst << "\n";
}

// ----------------------------------------------------------------------------------------------------------------
// Batching, chosen ids, prefix caches

TEST(LlamaBatch, LeftAndRightPaddingEqualSingleRuns) {
  auto model = fixture_model();
  std::vector<std::vector<int64_t>> seqs = {ids_of(case_by_id("public-len7")["input_ids"]),
                                            ids_of(case_by_id("public-len2")["input_ids"]),
                                            ids_of(case_by_id("public-len17_random_ids")["input_ids"])};
  for (bool left : {true, false}) {
    auto [ids, mask] = LlamaModel::pad_batch(seqs, 0, left);
    ForwardOutput batch = model->forward(ids, mask, nullptr);
    for (size_t i = 0; i < seqs.size(); ++i) {
      ForwardOutput single = model->forward(seqs[i]);
      EXPECT_LT((batch.logits[static_cast<int64_t>(i)] - single.logits[0]).abs().max().item<float>(), 1e-4)
          << (left ? "left" : "right") << " row " << i;
      EXPECT_LT((batch.last_hidden[static_cast<int64_t>(i)] - single.last_hidden[0]).abs().max().item<float>(), 1e-4);
    }
    // Continue the padded batch by one token per row through the cache: still equal to the single runs.
    KVCache cache = model->new_cache(static_cast<int64_t>(seqs.size()));
    model->forward(ids, mask, &cache);
    at::Tensor next = at::tensor(std::vector<int64_t>{271, 128009, 19193}).view({3, 1});
    ForwardOutput step = model->forward(next, at::Tensor(), &cache);
    for (size_t i = 0; i < seqs.size(); ++i) {
      auto extended = seqs[i];
      extended.push_back(next[static_cast<int64_t>(i)][0].item<int64_t>());
      ForwardOutput single = model->forward(extended);
      EXPECT_LT((step.logits[static_cast<int64_t>(i)] - single.logits[0]).abs().max().item<float>(), 1e-4)
          << (left ? "left" : "right") << " continued row " << i;
    }
  }
}

TEST(LlamaBatch, ChosenIdsEqualFullLogits) {
  auto model = fixture_model();
  const auto ids = ids_of(case_by_id("public-chat_template")["input_ids"]);
  ForwardOutput full = model->forward(ids);
  ForwardOptions options;
  options.logits = LogitsMode::LastChosen;
  options.chosen_ids = {19193, 39257, 5, 128255};
  ForwardOutput chosen = model->forward(ids, nullptr, options);
  ASSERT_EQ(chosen.logits.sizes(), (at::IntArrayRef{1, 4}));
  for (size_t i = 0; i < options.chosen_ids.size(); ++i)
    EXPECT_NEAR(chosen.logits[0][static_cast<int64_t>(i)].item<float>(),
                full.logits[0][options.chosen_ids[i]].item<float>(), 1e-5);
  options.chosen_ids = {128256};
  EXPECT_THROW(model->forward(ids, nullptr, options), Error);
  // All positions: [1, T, V], last row equals the last-position logits.
  ForwardOptions all;
  all.logits = LogitsMode::All;
  ForwardOutput every = model->forward(ids, nullptr, all);
  ASSERT_EQ(every.logits.sizes(), (at::IntArrayRef{1, static_cast<int64_t>(ids.size()), 128256}));
  EXPECT_LT((every.logits[0][-1] - full.logits[0]).abs().max().item<float>(), 1e-5);
}

TEST(LlamaBatch, SharedPrefixCacheEqualsUncached) {
  auto model = fixture_model();
  const auto preamble = ids_of(case_by_id("public-len64")["input_ids"]);
  KVCache prefix = model->new_cache(1);
  model->forward(preamble, &prefix);
  std::vector<std::vector<int64_t>> suffixes = {{271, 19193}, {39257}, {1, 2, 3, 4, 5, 6}};
  for (bool left : {true, false}) {
    KVCache cache = prefix.repeat(3, 0, 8);
    EXPECT_EQ(prefix.length(), 64);  // the shared prefix itself is untouched
    auto [ids, mask] = LlamaModel::pad_batch(suffixes, 0, left);
    ForwardOutput batch = model->forward(ids, mask, &cache);
    for (size_t i = 0; i < suffixes.size(); ++i) {
      auto whole = preamble;
      whole.insert(whole.end(), suffixes[i].begin(), suffixes[i].end());
      ForwardOutput single = model->forward(whole);
      EXPECT_LT((batch.logits[static_cast<int64_t>(i)] - single.logits[0]).abs().max().item<float>(), 1e-5)
          << (left ? "left" : "right") << " row " << i;
    }
  }
}

TEST(LlamaBatch, TruncatedPrefixCacheEqualsShorterPrefix) {
  // The cache of a sequence cut to its first n slots is the cache of the first n tokens (causal attention).
  auto model = fixture_model();
  const auto ids = ids_of(case_by_id("public-len64")["input_ids"]);
  KVCache whole = model->new_cache(1);
  model->forward(ids, &whole);
  KVCache cut = whole.repeat(2, 0, 4, 30);
  EXPECT_EQ(cut.length(), 30);
  EXPECT_EQ(cut.real_tokens()[1].item<int64_t>(), 30);
  at::Tensor next = at::tensor(std::vector<int64_t>{ids[30], 271}).view({2, 1});
  ForwardOutput out = model->forward(next, at::Tensor(), &cut);
  for (int64_t row = 0; row < 2; ++row) {
    std::vector<int64_t> prefix(ids.begin(), ids.begin() + 30);
    prefix.push_back(next[row][0].item<int64_t>());
    EXPECT_LT((out.logits[row] - model->forward(prefix).logits[0]).abs().max().item<float>(), 1e-4) << row;
  }
  EXPECT_THROW(whole.repeat(1, 0, 0, 65), Error);
  EXPECT_THROW(whole.repeat(1, 1), Error);
}

TEST(LlamaBatch, BadInputsGiveErrors) {
  auto model = fixture_model();
  EXPECT_THROW(model->forward(std::vector<int64_t>{}), Error);
  EXPECT_THROW(model->forward(std::vector<int64_t>{128256}), Error);
  EXPECT_THROW(model->forward(std::vector<int64_t>{-1}), Error);
  at::Tensor ids = at::ones({2, 3}, at::kLong);
  at::Tensor mask = at::tensor(std::vector<int64_t>{1, 1, 1, 0, 0, 0}).view({2, 3});
  EXPECT_THROW(model->forward(ids, mask, nullptr), Error);  // a row without real tokens
  KVCache cache = model->new_cache(3);
  EXPECT_THROW(model->forward(ids, at::Tensor(), &cache), Error);  // batch mismatch
}

// ----------------------------------------------------------------------------------------------------------------
// Generation

TEST(LlamaGeneration, ForcedPrefixContinuesLikeGreedy) {
  auto model = fixture_model();
  const auto& g = cases()["generation"][1];
  auto prompt = ids_of(g["prompt_ids"]);
  const auto expected = ids_of(g["new_ids"]);
  // Force the first 4 generated tokens as an assistant prefix: greedy continues with the remaining 8.
  prompt.insert(prompt.end(), expected.begin(), expected.begin() + 4);
  GenerationOptions options;
  options.max_new_tokens = 8;
  GenerationResult r = generate(*model, {prompt}, options);
  EXPECT_EQ(r.new_ids[0], std::vector<int64_t>(expected.begin() + 4, expected.end()));
}

TEST(LlamaGeneration, StopIdsAndPrefixCache) {
  auto model = fixture_model();
  const auto& g = cases()["generation"][0];
  const auto expected = ids_of(g["new_ids"]);
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.stop_ids = {expected[2]};
  GenerationResult r = generate(*model, {ids_of(g["prompt_ids"])}, options);
  EXPECT_EQ(r.new_ids[0], std::vector<int64_t>(expected.begin(), expected.begin() + 3));
  EXPECT_EQ(r.finish_reasons[0], "stop");
  // A cached prefix (the first 3 prompt tokens) + the rest of the prompt gives the same greedy ids.
  const auto prompt = ids_of(g["prompt_ids"]);
  KVCache prefix = model->new_cache(1);
  model->forward(std::vector<int64_t>(prompt.begin(), prompt.begin() + 3), &prefix);
  options.stop_ids.clear();
  GenerationResult cached = generate(*model, {std::vector<int64_t>(prompt.begin() + 3, prompt.end())}, options, &prefix);
  EXPECT_EQ(cached.new_ids[0], expected);
}

TEST(LlamaGeneration, SamplingIsReproducibleForASeed) {
  auto model = fixture_model();
  const auto prompt = ids_of(cases()["generation"][0]["prompt_ids"]);
  GenerationOptions options;
  options.max_new_tokens = 10;
  options.do_sample = true;
  options.temperature = 1.5;
  options.top_k = 50;
  options.top_p = 0.9;
  options.seed = 7;
  GenerationResult a = generate(*model, {prompt, prompt}, options);
  GenerationResult b = generate(*model, {prompt, prompt}, options);
  EXPECT_EQ(a.new_ids, b.new_ids);
  options.seed = 8;
  GenerationResult c = generate(*model, {prompt, prompt}, options);
  EXPECT_NE(a.new_ids, c.new_ids);  // 10 draws from a flat distribution over 50 tokens: a collision is ~impossible
  // top_k = 1 sampling is greedy.
  options.top_k = 1;
  options.top_p = 1.0;
  GenerationResult k1 = generate(*model, {prompt}, options);
  std::vector<int64_t> greedy = ids_of(cases()["generation"][0]["new_ids"]);
  EXPECT_EQ(k1.new_ids[0], std::vector<int64_t>(greedy.begin(), greedy.begin() + 10));
}

TEST(LlamaGeneration, SamplingStepRules) {
  GenerationOptions greedy;
  // Repetition penalty: positive logits divided, negative multiplied.
  EXPECT_EQ(choose_next_token({3.0f, 2.0f, -1.0f}, {}, greedy, 0.5), 0);
  greedy.repetition_penalty = 2.0;
  EXPECT_EQ(choose_next_token({3.0f, 2.0f, -1.0f}, {0}, greedy, 0.5), 1);       // 1.5 < 2
  EXPECT_EQ(choose_next_token({-1.0f, -1.5f, -3.0f}, {0}, greedy, 0.5), 1);     // -2 < -1.5
  GenerationOptions sample;
  sample.do_sample = true;
  // Probabilities 0.5, 0.25, 0.25 (logits log 2, 0, 0); top_p 0.5 keeps only the first.
  std::vector<float> logits = {std::log(2.0f), 0.0f, 0.0f};
  EXPECT_EQ(choose_next_token(logits, {}, sample, 0.49), 0);
  EXPECT_EQ(choose_next_token(logits, {}, sample, 0.51), 1);
  EXPECT_EQ(choose_next_token(logits, {}, sample, 0.99), 2);
  sample.top_p = 0.5;
  EXPECT_EQ(choose_next_token(logits, {}, sample, 0.99), 0);
  sample.top_p = 1.0;
  sample.top_k = 2;  // ties with the 2nd largest are kept (HF): three tokens remain
  EXPECT_EQ(choose_next_token(logits, {}, sample, 0.99), 2);
  sample.top_k = 0;
  sample.temperature = 1e-3;  // near-greedy
  EXPECT_EQ(choose_next_token(logits, {}, sample, 0.99), 0);
}

// ----------------------------------------------------------------------------------------------------------------
// Configurations the fixture does not cover

TEST(LlamaVariants, RunWithCorrectShapesAndConsistentCaches) {
  for (const std::string variant : {"none", "untied", "linear", "llama3", "mha", "bias", "head_dim"}) {
    LlamaConfig config = tiny_config(variant);
    auto model = LlamaModel::from_tensors(config, LlamaModel::random_tensors(config, 11, 0.3));
    std::vector<int64_t> ids = {1, 5, 9, 33, 40, 7, 90, 96, 3, 3, 12, 60, 61};
    ForwardOptions all;
    all.logits = LogitsMode::All;
    ForwardOutput full = model->forward(ids, nullptr, all);
    EXPECT_EQ(full.logits.sizes(), (at::IntArrayRef{1, 13, 97})) << variant;
    EXPECT_EQ(full.last_hidden.sizes(), (at::IntArrayRef{1, 24})) << variant;
    EXPECT_TRUE(at::isfinite(full.logits).all().item<bool>()) << variant;
    // Chunked through the cache = whole.
    KVCache cache = model->new_cache(1);
    model->forward(std::vector<int64_t>(ids.begin(), ids.begin() + 5), &cache);
    ForwardOutput rest = model->forward(std::vector<int64_t>(ids.begin() + 5, ids.end()), &cache);
    EXPECT_LT((rest.logits[0] - full.logits[0][-1]).abs().max().item<float>(), 1e-4) << variant;
    // Left-padded batch = single.
    auto [batch_ids, mask] = LlamaModel::pad_batch({ids, {4, 8}}, 0, true);
    ForwardOutput batch = model->forward(batch_ids, mask, nullptr);
    EXPECT_LT((batch.logits[0] - full.logits[0][-1]).abs().max().item<float>(), 1e-4) << variant;
    EXPECT_LT((batch.logits[1] - model->forward(std::vector<int64_t>{4, 8}).logits[0]).abs().max().item<float>(), 1e-4)
        << variant;
  }
}

TEST(LlamaVariants, UntiedHeadIsUsed) {
  LlamaConfig config = tiny_config("untied");
  auto tensors = LlamaModel::random_tensors(config, 3, 0.3);
  auto model = LlamaModel::from_tensors(config, tensors);
  ForwardOutput out = model->forward(std::vector<int64_t>{1, 2, 3});
  at::Tensor expected = at::matmul(out.last_hidden, tensors["lm_head.weight"].t());
  EXPECT_LT((out.logits - expected).abs().max().item<float>(), 1e-5);
  at::Tensor with_embed = at::matmul(out.last_hidden, tensors["model.embed_tokens.weight"].t());
  EXPECT_GT((out.logits - with_embed).abs().max().item<float>(), 1e-2);
}

TEST(LlamaVariants, GroupedQueryEqualsMhaWithRepeatedKvHeads) {
  // A GQA model equals the MHA model whose k/v projections repeat each kv head for its query group (HF repeat_kv).
  LlamaConfig gqa = tiny_config("none"), mha = tiny_config("mha");
  auto tensors = LlamaModel::random_tensors(gqa, 5, 0.3);
  auto repeated = tensors;
  const int64_t groups = gqa.query_groups(), hd = gqa.head_dim;
  for (auto& [name, tensor] : repeated) {
    if (name.find("k_proj") == std::string::npos && name.find("v_proj") == std::string::npos) continue;
    tensor = tensor.view({gqa.num_key_value_heads, 1, hd, -1}).expand({-1, groups, -1, -1}).reshape({gqa.num_attention_heads * hd, -1});
  }
  auto a = LlamaModel::from_tensors(gqa, tensors), b = LlamaModel::from_tensors(mha, repeated);
  std::vector<int64_t> ids = {3, 14, 15, 92, 65, 35};
  EXPECT_LT((a->forward(ids).logits - b->forward(ids).logits).abs().max().item<float>(), 1e-5);
}

TEST(LlamaLoading, CheckpointErrorsNameTheTensor) {
  LlamaConfig config = tiny_config("untied");
  auto tensors = LlamaModel::random_tensors(config, 1, 0.3);
  json cfg = tiny_config_json("untied");
  auto write = [&](const std::string& name, std::map<std::string, at::Tensor> t) {
    auto dir = test::temp_dir("llama_" + name);
    std::ofstream(dir / "config.json") << cfg.dump();
    std::vector<std::pair<std::string, at::Tensor>> list(t.begin(), t.end());
    save_tensors((dir / "model.safetensors").string(), list);
    return dir;
  };
  auto error_of = [](const std::filesystem::path& dir) {
    try {
      LlamaModel::load(dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // A complete checkpoint loads and equals the in-memory model; bf16 loading works too.
  auto good = write("good", tensors);
  auto loaded = LlamaModel::load(good);
  auto direct = LlamaModel::from_tensors(config, tensors);
  std::vector<int64_t> ids = {5, 6, 7};
  EXPECT_LT((loaded->forward(ids).logits - direct->forward(ids).logits).abs().max().item<float>(), 1e-6);
  auto bf16 = LlamaModel::load(good, at::kBFloat16);
  EXPECT_EQ(bf16->forward(ids).logits.scalar_type(), at::kFloat);

  auto missing = tensors;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  EXPECT_NE(error_of(write("missing", missing)).find("model.layers.1.mlp.up_proj.weight"), std::string::npos);
  auto no_head = tensors;
  no_head.erase("lm_head.weight");
  EXPECT_NE(error_of(write("nohead", no_head)).find("lm_head.weight"), std::string::npos);
  auto wrong_shape = tensors;
  wrong_shape["model.layers.0.self_attn.k_proj.weight"] = at::zeros({24, 24});
  EXPECT_NE(error_of(write("shape", wrong_shape)).find("model.layers.0.self_attn.k_proj.weight"), std::string::npos);
  auto extra = tensors;
  extra["model.layers.0.self_attn.q_norm.weight"] = at::zeros({4});
  EXPECT_NE(error_of(write("extra", extra)).find("q_norm"), std::string::npos);
  auto dir = test::temp_dir("llama_badjson");
  std::ofstream(dir / "config.json") << "{not json";
  EXPECT_NE(error_of(dir).find("config.json"), std::string::npos);
}
