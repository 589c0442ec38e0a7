// Qwen3Guard-Gen on the tiny Qwen3 fixture model: the prompts and ids of shared/fixtures/qwen3/guard_cases.json, the
// verdict logits and probabilities after "Safety:" per compute dtype within the fixture's tolerances, the preamble
// cache giving the uncached scores, strict / loose Controversial, and the kind in the models file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "guard/qwen3_guard.h"
#include "models/llama.h"
#include "serve/categories.h"
#include "text/qwen3_guard_prompt.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::guard;
using nlohmann::json;

namespace {

const json& guard_cases() {
  static json data = test::load_json(test::fixture("qwen3/guard_cases.json"));
  return data;
}

Conversation conversation_of(const json& c) {
  Conversation conversation;
  for (const auto& m : c["messages"]) conversation.messages.push_back({m["role"], m["content"]});
  return conversation;
}

std::shared_ptr<models::LlamaModel> shared_model(at::ScalarType dtype) {
  static std::map<int, std::shared_ptr<models::LlamaModel>> models;
  auto& slot = models[static_cast<int>(dtype)];
  if (!slot) slot = models::LlamaModel::load(test::fixture("qwen3"), dtype);
  return slot;
}

std::shared_ptr<text::Tokenizer> shared_tokenizer() {
  static std::shared_ptr<text::Tokenizer> tokenizer = text::load_tokenizer(test::fixture("qwen3"));
  return tokenizer;
}

std::unique_ptr<Qwen3Guard> make_guard(at::ScalarType dtype = at::kFloat, bool prefix_cache = true, bool strict = true) {
  Qwen3GuardOptions options;
  options.prefix_cache = prefix_cache;
  options.strict = strict;
  return std::make_unique<Qwen3Guard>(shared_model(dtype), shared_tokenizer(), options);
}

class Qwen3GuardScoring : public testing::TestWithParam<at::ScalarType> {};

}  // namespace

TEST(Qwen3GuardPromptIds, EqualTheFixtureIncludingTheScoringSuffix) {
  auto guard = make_guard();
  EXPECT_EQ(guard->verdict_ids(), (std::vector<int64_t>{22291, 73067, 2093}));
  for (const auto& c : guard_cases()["cases"]) {
    const Conversation conversation = conversation_of(c);
    EXPECT_EQ(guard->render(conversation).text(), c["rendered"].get<std::string>()) << c["id"];
    EXPECT_EQ(guard->prompt_ids(conversation), c["ids"].get<std::vector<int32_t>>()) << c["id"];
    EXPECT_EQ(conversation.judges_response(), c["mode"] == "response") << c["id"];
  }
}

TEST_P(Qwen3GuardScoring, VerdictLogitsAndProbabilities) {
  const at::ScalarType dtype = GetParam();
  // fp32: the fixture's tolerances. bf16: its suggested 5e-2 / 2e-2 do not hold for this wide-init fixture (logits
  // around +-12, one bf16 step 0.0625; observed up to 0.17 on verdict logits and 0.05 on probabilities), so 0.25 / 0.1.
  const double logit_tol = dtype == at::kFloat ? 1e-4 : 0.25, p_tol = dtype == at::kFloat ? 1e-5 : 0.1;
  for (bool cached : {false, true}) {
    auto guard = make_guard(dtype, cached);
    std::vector<Conversation> batch;
    for (const auto& c : guard_cases()["cases"]) batch.push_back(conversation_of(c));
    auto scores = guard->score_detailed(batch, cached);
    for (size_t i = 0; i < batch.size(); ++i) {
      const auto& c = guard_cases()["cases"][i];
      const auto& want = c["scoring"];
      const std::string what = c["id"].get<std::string>() + (cached ? " cached" : " uncached");
      EXPECT_NEAR(scores[i].logit_safe, want["verdict_logits"]["Safe"].get<double>(), logit_tol) << what;
      EXPECT_NEAR(scores[i].logit_unsafe, want["verdict_logits"]["Unsafe"].get<double>(), logit_tol) << what;
      EXPECT_NEAR(scores[i].logit_controversial, want["verdict_logits"]["Controversial"].get<double>(), logit_tol) << what;
      const auto& p = want["p_verdict_restricted"];
      EXPECT_NEAR(scores[i].p_safe, p["Safe"].get<double>(), p_tol) << what;
      EXPECT_NEAR(scores[i].p_unsafe, p["Unsafe"].get<double>(), p_tol) << what;
      EXPECT_NEAR(scores[i].p_controversial, p["Controversial"].get<double>(), p_tol) << what;
      // Cached: only the tokens after the role's shared preamble are run again.
      const int64_t input_len = want["input_len"];
      EXPECT_EQ(scores[i].tokens, input_len - (cached ? guard->cached_preamble_tokens(batch[i].judges_response()) : 0))
          << what;
      if (dtype == at::kFloat) {
        const auto hidden = want.contains("final_hidden") ? want["final_hidden"].get<std::vector<double>>()
                                                           : std::vector<double>{};
        ASSERT_EQ(scores[i].feature.size(), hidden.size()) << what;
        for (size_t k = 0; k < hidden.size(); ++k) EXPECT_NEAR(scores[i].feature[k], hidden[k], 1e-4) << what;
      }
    }
    if (cached) {
      EXPECT_EQ(guard->cached_preamble_tokens(false), 201);  // the prompt-moderation head, up to "USER:"
      EXPECT_GT(guard->cached_preamble_tokens(true), 201);   // the response head adds the refusal policy
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Qwen3Guard, Qwen3GuardScoring, testing::Values(at::kFloat, at::kBFloat16),
                         [](const testing::TestParamInfo<at::ScalarType>& info) {
                           return info.param == at::kFloat ? std::string("fp32") : std::string("bf16");
                         });

TEST(Qwen3GuardDecision, StrictCountsControversialAsUnsafeLooseDoesNot) {
  const auto& c = guard_cases()["cases"][3];  // unsafe_response: P(Controversial) = 0.13
  const auto& p = c["scoring"]["p_verdict_restricted"];
  auto strict = make_guard(at::kFloat, true, true)->score({conversation_of(c)});
  auto loose = make_guard(at::kFloat, true, false)->score({conversation_of(c)});
  EXPECT_NEAR(strict[0].p_unsafe, p["Unsafe"].get<double>() + p["Controversial"].get<double>(), 1e-5);
  EXPECT_NEAR(loose[0].p_unsafe, p["Unsafe"].get<double>(), 1e-5);
  EXPECT_TRUE(strict[0].unsafe);  // 0.686 > 0.5
  EXPECT_TRUE(loose[0].unsafe);   // 0.555 > 0.5
  const auto& benign = guard_cases()["cases"][2];
  EXPECT_FALSE(make_guard()->score({conversation_of(benign)})[0].unsafe);
}

TEST(Qwen3GuardDecision, AnswerLinesWithAndWithoutPrefixCache) {
  // The random tiny model writes no real answer; what must hold is that the cached preamble decodes the same text
  // and categories come only from the parsed lines.
  const Conversation conversation = conversation_of(guard_cases()["cases"][3]);
  auto a = make_guard(at::kFloat, true)->answer_for(conversation);
  auto b = make_guard(at::kFloat, false)->answer_for(conversation);
  EXPECT_EQ(a.safety, b.safety);
  EXPECT_EQ(a.categories, b.categories);
  EXPECT_EQ(a.refusal, b.refusal);
  ScoreOptions options;
  options.want_categories = true;
  auto result = make_guard()->score({conversation}, options);
  for (const auto& category : result[0].categories) EXPECT_NE(category, "None");
}

TEST(Qwen3GuardCategories, EveryNameMapsOntoOpenAiKeysOrIsReportedByName) {
  for (bool response : {false, true})
    for (const auto& name : text::qwen3_guard_categories(response)) EXPECT_EQ(serve::category_name(name), name);
  EXPECT_EQ(serve::openai_keys_for("Violent"), (std::vector<std::string_view>{"violence", "illicit/violent"}));
  EXPECT_EQ(serve::openai_keys_for("Suicide & Self-Harm"), std::vector<std::string_view>{"self-harm"});
  EXPECT_EQ(serve::openai_keys_for("Non-violent Illegal Acts"), std::vector<std::string_view>{"illicit"});
  EXPECT_TRUE(serve::openai_keys_for("Jailbreak").empty());
  EXPECT_EQ(serve::openai_keys_for("S1"), (std::vector<std::string_view>{"violence", "illicit/violent"}));
}
