// ClassifierGuard on the tiny DeBERTa fixture: HarmAug's pair encoding, P(unsafe) = softmax(logits)[:, 1] equal to
// the Hugging Face goldens, length-sorted padded batches returning results in input order, features and costs.
#include <gtest/gtest.h>

#include "guard/classifier_guard.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::guard::ClassifierGuard;
using guardkit::guard::ClassifierGuardOptions;
using guardkit::guard::Conversation;
using guardkit::guard::GuardResult;
using guardkit::guard::plan_micro_batches;
using nlohmann::json;

namespace {

std::filesystem::path model_dir() { return test::fixture("deberta"); }
const json& cases() {
  static const json data = test::load_json(model_dir() / "cases.json");
  return data;
}

size_t max_length_of(const json& c) {
  const std::string call = c["tokenizer_call"];
  auto pos = call.find("max_length=");
  return pos == std::string::npos ? 0 : std::stoul(call.substr(pos + 11));
}

Conversation conversation_of(const json& c) {
  if (c["text_pair"].is_null()) return Conversation::from_prompt(c["text"]);
  const std::string pair = c["text_pair"];
  // tok(prompt, "") is what the guard sends for a prompt without a response.
  return pair.empty() ? Conversation::from_prompt(c["text"]) : Conversation::from_pair(c["text"], pair);
}

}  // namespace

TEST(ClassifierGuard, EveryFixtureCaseMatchesHuggingFace) {
  for (const json& c : cases()["cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    ClassifierGuardOptions options;
    options.max_length = max_length_of(c);
    options.pair_with_empty_response = !c["text_pair"].is_null();  // single texts: tok(text)
    auto guard = ClassifierGuard::load(model_dir(), options);
    const Conversation conversation = conversation_of(c);
    EXPECT_EQ(guard->encode(conversation).ids, c["input_ids"].get<std::vector<int32_t>>());
    auto results = guard->score({conversation}, {.want_features = true});
    ASSERT_EQ(results.size(), 1u);
    const double expected = c["probs"][1].get<double>();
    EXPECT_NEAR(results[0].p_unsafe, expected, 1e-4);
    EXPECT_EQ(results[0].unsafe, results[0].p_unsafe >= 0.5);
    EXPECT_EQ(results[0].tokens, c["seq_len"].get<int64_t>());
    ASSERT_EQ(results[0].feature.size(), c["pooled"].size());
    for (size_t i = 0; i < results[0].feature.size(); ++i)
      EXPECT_NEAR(results[0].feature[i], c["pooled"][i].get<double>(), 1e-4);
  }
}

TEST(ClassifierGuard, SortedPaddedBatchKeepsInputOrder) {
  ClassifierGuardOptions options;
  options.max_length = 64;
  options.batch_size = 3;  // several micro-batches of mixed lengths
  options.threshold = 0.6;
  auto guard = ClassifierGuard::load(model_dir(), options);
  std::vector<Conversation> batch;
  for (const json& c : cases()["cases"])
    if (!c["text_pair"].is_null()) batch.push_back(conversation_of(c));
  for (const json& c : cases()["cases"])
    if (c["text_pair"].is_null()) batch.push_back(Conversation::from_pair(c["text"], "Sure, here it is."));
  ASSERT_GE(batch.size(), 8u);
  auto together = guard->score(batch, {.want_features = true});
  ASSERT_EQ(together.size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    auto alone = guard->score({batch[i]}, {.want_features = true});
    EXPECT_NEAR(together[i].p_unsafe, alone[0].p_unsafe, 1e-5) << i;
    EXPECT_EQ(together[i].tokens, alone[0].tokens);
    EXPECT_EQ(together[i].tokens, static_cast<int64_t>(guard->encode(batch[i]).ids.size()));
    EXPECT_EQ(together[i].unsafe, together[i].p_unsafe >= 0.6);
    EXPECT_EQ(together[i].decided_by, "deberta");
    EXPECT_EQ(together[i].feature.size(), static_cast<size_t>(guard->feature_dim()));
    EXPECT_DOUBLE_EQ(together[i].flops, guard->model().forward_flops(together[i].tokens));
  }
  // Features were not asked for: none returned.
  EXPECT_TRUE(guard->score({batch[0]})[0].feature.empty());
  EXPECT_TRUE(guard->score({}).empty());
}

TEST(ClassifierGuard, LengthAwareMicroBatchesKeepScoresForEveryOverhead) {
  std::vector<Conversation> batch;
  for (const json& c : cases()["cases"]) batch.push_back(conversation_of(c));
  std::vector<GuardResult> reference;
  for (double overhead : {0.0, 1.0, 48.0, 1e9}) {  // fixed chunks, one pass per length, mixed, one pass
    ClassifierGuardOptions options;
    options.batch_size = 4;
    options.pass_overhead_tokens = overhead;
    auto results = ClassifierGuard::load(model_dir(), options)->score(batch);
    ASSERT_EQ(results.size(), batch.size());
    if (reference.empty()) reference = results;
    for (size_t i = 0; i < batch.size(); ++i) EXPECT_NEAR(results[i].p_unsafe, reference[i].p_unsafe, 1e-5) << overhead;
  }
}

TEST(ClassifierGuard, MicroBatchPlanKnownAnswers) {
  using V = std::vector<size_t>;
  // no overhead model: fixed chunks of max_batch
  EXPECT_EQ(plan_micro_batches({9, 9, 9, 9, 9}, 2, 0), (V{2, 2, 1}));
  // equal lengths: padding costs nothing, so as few passes as allowed
  EXPECT_EQ(plan_micro_batches(V(16, 20), 16, 48), (V{16}));
  EXPECT_EQ(plan_micro_batches(V(10, 20), 4, 48), (V{4, 4, 2}));
  // two clusters far apart: one pass each (cost 2x48 + 4x100 + 4x10 beats 48 + 8x100)
  EXPECT_EQ(plan_micro_batches({100, 100, 100, 100, 10, 10, 10, 10}, 16, 48), (V{4, 4}));
  // ... unless a pass costs more than the padding it saves
  EXPECT_EQ(plan_micro_batches({100, 100, 100, 100, 10, 10, 10, 10}, 16, 1000), (V{8}));
  // tiny overhead: every distinct length its own pass
  EXPECT_EQ(plan_micro_batches({30, 30, 20, 10, 10}, 16, 0.5), (V{2, 1, 2}));
  EXPECT_TRUE(plan_micro_batches({}, 16, 48).empty());
  EXPECT_THROW(plan_micro_batches({3}, 0, 48), guardkit::Error);
  // the plan always covers every item exactly once, within max_batch
  std::vector<size_t> lengths;
  for (size_t i = 0; i < 37; ++i) lengths.push_back(200 - 5 * i);
  const V plan = plan_micro_batches(lengths, 8, 48);
  size_t total = 0;
  for (size_t s : plan) {
    EXPECT_GE(s, 1u);
    EXPECT_LE(s, 8u);
    total += s;
  }
  EXPECT_EQ(total, lengths.size());
}

TEST(ClassifierGuard, FlopsFollowTheDocumentedFormula) {
  auto guard = ClassifierGuard::load(model_dir());
  const auto& c = guard->model().config();
  const double T = 13, H = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers;
  // dense: q,k,v,o (4 H^2) + FFN (2 H I) per token; attention: QK^T, PV, c2p, p2c = 4 * T^2 * H; 2 FLOPs/MAC.
  const double expected = L * (2 * T * (4 * H * H + 2 * H * I) + 4 * 2 * T * T * H) + 2 * H * H + 2 * H * c.num_labels;
  EXPECT_DOUBLE_EQ(guard->model().forward_flops(13), expected);
}

TEST(ClassifierGuard, MultiTurnJudgesTheLastExchangeAndBadOptionsFail) {
  auto guard = ClassifierGuard::load(model_dir());
  Conversation turns;
  turns.messages = {{"user", "hello"}, {"assistant", "hi"}, {"user", "How do I build a bomb?"}, {"assistant", "No."}};
  EXPECT_EQ(guard->encode(turns).ids, guard->encode(Conversation::from_pair("How do I build a bomb?", "No.")).ids);
  ClassifierGuardOptions bad;
  bad.unsafe_label = 2;
  EXPECT_THROW(ClassifierGuard::load(model_dir(), bad), Error);
  bad = {};
  bad.batch_size = 0;
  EXPECT_THROW(ClassifierGuard::load(model_dir(), bad), Error);
  EXPECT_THROW(guard->score({Conversation{}}), Error);  // no user message
}
