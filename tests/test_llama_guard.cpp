// LlamaGuard on the tiny Llama fixture model: prompts byte for byte as the Llama Guard 3 chat templates render them,
// ids with user content in plain-text mode, safe/unsafe scores as shared/fixtures/llama/guard_cases.json records,
// and the preamble cache giving the uncached scores.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "guard/llama_guard.h"
#include "models/llama.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::guard;
using nlohmann::json;

namespace {

const json& guard_cases() {
  static json data = test::load_json(test::fixture("llama/guard_cases.json"));
  return data;
}

LlamaGuardVariant variant_of(const json& c) {
  return c["variant"] == "8B" ? LlamaGuardVariant::Guard3_8B : LlamaGuardVariant::Guard3_1B;
}

// 8B cases carry string content, 1B cases a list of {"type": "text", "text": ...} parts.
Conversation conversation_of(const json& c) {
  Conversation conversation;
  for (const auto& m : c["messages"]) {
    std::string content;
    if (m["content"].is_string()) {
      content = m["content"];
    } else {
      for (const auto& part : m["content"])
        if (part["type"] == "text") content += part["text"].get<std::string>();
    }
    conversation.messages.push_back({m["role"], content});
  }
  return conversation;
}

std::shared_ptr<models::LlamaModel> shared_model() {
  static auto model = models::LlamaModel::load(test::fixture("llama"));
  return model;
}

std::shared_ptr<text::Tokenizer> shared_tokenizer() {
  static std::shared_ptr<text::Tokenizer> tokenizer = text::load_tokenizer(test::fixture("llama"));
  return tokenizer;
}

std::unique_ptr<LlamaGuard> make_guard(LlamaGuardVariant variant, bool prefix_cache = true,
                                       LlamaGuardScore score = LlamaGuardScore::TwoWay) {
  LlamaGuardOptions options;
  options.variant = variant;
  options.prefix_cache = prefix_cache;
  options.score = score;
  return std::make_unique<LlamaGuard>(shared_model(), shared_tokenizer(), options);
}

}  // namespace

TEST(LlamaGuardPrompt, RendersTheTemplatesByteForByte) {
  for (const auto& c : guard_cases()["cases"]) {
    auto prompt = make_guard(variant_of(c))->render(conversation_of(c));
    EXPECT_EQ(prompt.text(), c["rendered"].get<std::string>()) << c["id"];
    // Same cut into special tokens and plain-text runs as the fixture.
    std::vector<std::pair<bool, std::string>> expected, got;
    for (const auto& s : c["segments"])
      expected.emplace_back(s.contains("special"), s.contains("special") ? s["special"] : s["text"]);
    for (const auto& piece : prompt.token_pieces()) got.emplace_back(piece.special, piece.text);
    EXPECT_EQ(got, expected) << c["id"];
  }
}

TEST(LlamaGuardPrompt, IdsKeepUserContentPlainText) {
  for (const auto& c : guard_cases()["cases"]) {
    auto guard = make_guard(variant_of(c));
    std::vector<int32_t> ids = guard->prompt_ids(conversation_of(c));
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << c["id"];
    if (!c["ids_equal_naive"].get<bool>()) {
      // The injection case: parsing special tokens in the rendered text would give other ids; ours are plain text,
      // and the only <|eot_id|> / header tokens are the template's own.
      EXPECT_NE(ids, c["ids_naive"].get<std::vector<int32_t>>()) << c["id"];
      const int64_t eots = std::count(ids.begin(), ids.end(), 128009);
      EXPECT_EQ(eots, 1) << c["id"];
    }
  }
}

TEST(LlamaGuardPrompt, RejectsMalformedConversations) {
  auto guard = make_guard(LlamaGuardVariant::Guard3_8B);
  Conversation empty;
  EXPECT_THROW(guard->prompt_ids(empty), Error);
  Conversation two_users{{{"user", "a"}, {"user", "b"}}};
  EXPECT_THROW(guard->prompt_ids(two_users), Error);
  Conversation starts_with_assistant{{{"assistant", "a"}}};
  EXPECT_THROW(guard->prompt_ids(starts_with_assistant), Error);
  Conversation system{{{"system", "a"}}};
  EXPECT_THROW(guard->score({system}), Error);
}

TEST(LlamaGuardPrompt, CustomCategories) {
  std::vector<GuardCategory> custom = {{"S1", "Weapons.\nHelping make weapons."}, {"S2", "Spam."}};
  LlamaGuardOptions custom_options;
  custom_options.variant = LlamaGuardVariant::Guard3_1B;
  custom_options.categories = custom;
  auto rendered = LlamaGuard(shared_model(), shared_tokenizer(), custom_options).render(Conversation::from_prompt("hi")).text();
  EXPECT_NE(rendered.find("<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Weapons.\nHelping make weapons.\nS2: Spam.\n"
                          "<END UNSAFE CONTENT CATEGORIES>"),
            std::string::npos);
  EXPECT_EQ(rendered.find("Violent Crimes"), std::string::npos);
  // A guard with custom categories caches its own preamble: cached equals uncached.
  LlamaGuardOptions options;
  options.categories = custom;
  LlamaGuard cached(shared_model(), shared_tokenizer(), options);
  options.prefix_cache = false;
  LlamaGuard uncached(shared_model(), shared_tokenizer(), options);
  auto conversation = Conversation::from_pair("How do I make a bomb?", "Like this.");
  auto a = cached.score_detailed({conversation}, true, true), b = uncached.score_detailed({conversation}, true, false);
  EXPECT_NEAR(a[0].p_unsafe_2way, b[0].p_unsafe_2way, 1e-5);
  EXPECT_NEAR(a[0].p_unsafe_full_vocab, b[0].p_unsafe_full_vocab, 1e-7);
  auto defaults = make_guard(LlamaGuardVariant::Guard3_1B)->score_detailed({conversation}, false, false);
  EXPECT_GT(std::abs(defaults[0].logit_unsafe - a[0].logit_unsafe), 1e-4);  // the policy text matters
}

TEST(LlamaGuardScoring, MatchesFixtureScoresWithAndWithoutPreambleCache) {
  for (bool cached : {true, false}) {
    for (const std::string variant : {"8B", "1B"}) {
      std::vector<Conversation> batch;
      std::vector<const json*> expected;
      for (const auto& c : guard_cases()["cases"])
        if (c["variant"] == variant) {
          batch.push_back(conversation_of(c));
          expected.push_back(&c);
        }
      auto guard = make_guard(variant == "8B" ? LlamaGuardVariant::Guard3_8B : LlamaGuardVariant::Guard3_1B, cached);
      // The whole variant in one call: prompt-judging and response-judging rows, padded together.
      auto scores = guard->score_detailed(batch, /*full_vocab=*/true, cached);
      for (size_t i = 0; i < batch.size(); ++i) {
        const json& s = (*expected[i])["scoring"];
        const std::string what = (*expected[i])["id"].get<std::string>() + (cached ? " cached" : " uncached");
        EXPECT_NEAR(scores[i].logit_safe, s["logit_safe_19193"].get<double>(), 1e-4) << what;
        EXPECT_NEAR(scores[i].logit_unsafe, s["logit_unsafe_39257"].get<double>(), 1e-4) << what;
        const double p2 = s["p_unsafe_2way"], pf = s["p_unsafe_full_vocab"];
        EXPECT_NEAR(scores[i].p_unsafe_2way, p2, std::max(1e-5, 1e-3 * p2)) << what;
        EXPECT_NEAR(scores[i].p_unsafe_full_vocab, pf, std::max(1e-5 * pf, 1e-3 * pf)) << what;
        const auto hidden = s["final_hidden"].get<std::vector<double>>();
        ASSERT_EQ(scores[i].feature.size(), hidden.size());
        for (size_t k = 0; k < hidden.size(); ++k) EXPECT_NEAR(scores[i].feature[k], hidden[k], 1e-4) << what;
        const int64_t full_length = s["input_len"];
        // Cached: only the tokens after the whole shared preamble are run again.
        const int64_t preamble = cached ? guard->cached_preamble_tokens(batch[i].judges_response()) : 0;
        EXPECT_EQ(scores[i].tokens, full_length - preamble) << what;
      }
      if (cached) {
        EXPECT_GT(guard->cached_preamble_tokens(false), 120);  // 146 tokens (8B), 138 (1B)
        EXPECT_GT(guard->cached_preamble_tokens(true), 120);
      }
    }
  }
}

TEST(LlamaGuardScoring, PrefixCachedEqualsUncachedWithin1e5) {
  auto cached = make_guard(LlamaGuardVariant::Guard3_1B, true), plain = make_guard(LlamaGuardVariant::Guard3_1B, false);
  std::vector<Conversation> batch = {Conversation::from_prompt("How do I bake bread?"),
                                     Conversation::from_pair("Tell me a joke", "Why did the chicken cross the road?"),
                                     Conversation::from_prompt("   padded    "),
                                     Conversation::from_prompt("A much longer prompt that asks about many different "
                                                               "things, so the rows of the batch differ in length.")};
  auto a = cached->score_detailed(batch, false, true), b = plain->score_detailed(batch, false, false);
  for (size_t i = 0; i < batch.size(); ++i) {
    EXPECT_NEAR(a[i].p_unsafe_2way, b[i].p_unsafe_2way, 1e-5) << i;
    EXPECT_NEAR(a[i].logit_unsafe, b[i].logit_unsafe, 1e-4) << i;
    // The same conversation scored alone (no padding) agrees too.
    auto single = plain->score_detailed({batch[i]}, false, false);
    EXPECT_NEAR(single[0].p_unsafe_2way, b[i].p_unsafe_2way, 1e-5) << i;
  }
}

TEST(LlamaGuardScoring, GuardInterface) {
  // The fixture model has 2 layers: Auto picks the 1B template.
  auto guard = make_guard(LlamaGuardVariant::Auto);
  EXPECT_EQ(guard->variant(), LlamaGuardVariant::Guard3_1B);
  EXPECT_EQ(guard->feature_dim(), 16);
  EXPECT_EQ(guard->safe_id(), 19193);
  EXPECT_EQ(guard->unsafe_id(), 39257);
  std::vector<Conversation> batch;
  std::vector<double> expected;
  for (const auto& c : guard_cases()["cases"])
    if (c["variant"] == "1B") {
      batch.push_back(conversation_of(c));
      expected.push_back(c["scoring"]["p_unsafe_2way"]);
    }
  ScoreOptions options;
  options.want_features = true;
  auto results = guard->score(batch, options);
  ASSERT_EQ(results.size(), batch.size());
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_NEAR(results[i].p_unsafe, expected[i], std::max(1e-5, 1e-3 * expected[i]));
    EXPECT_EQ(results[i].unsafe, results[i].p_unsafe >= guard->threshold());
    EXPECT_EQ(results[i].feature.size(), 16u);
    EXPECT_GT(results[i].tokens, 0);
    EXPECT_GT(results[i].flops, 0);
    EXPECT_EQ(results[i].decided_by, guard->name());
    EXPECT_TRUE(results[i].categories.empty());  // not asked for
  }
  // The full-vocabulary score as p_unsafe (HarmAug's teacher).
  auto teacher = make_guard(LlamaGuardVariant::Auto, true, LlamaGuardScore::FullVocab);
  auto full = teacher->score({batch[0]});
  for (const auto& c : guard_cases()["cases"])
    if (c["variant"] == "1B") {
      const double pf = c["scoring"]["p_unsafe_full_vocab"];
      EXPECT_NEAR(full[0].p_unsafe, pf, 1e-3 * pf);
      break;
    }
}

TEST(LlamaGuardScoring, CategoriesDecodedWhenUnsafe) {
  LlamaGuardOptions options;
  options.threshold = 0.0;  // everything is unsafe for this random model, so categories are always decoded
  options.max_category_tokens = 6;
  LlamaGuard guard(shared_model(), shared_tokenizer(), options);
  options.prefix_cache = false;
  LlamaGuard plain(shared_model(), shared_tokenizer(), options);
  ScoreOptions want;
  want.want_categories = true;
  auto conversation = Conversation::from_prompt("How do I make a bomb?");
  auto a = guard.score({conversation}, want), b = plain.score({conversation}, want);
  EXPECT_TRUE(a[0].unsafe);
  EXPECT_EQ(a[0].categories, b[0].categories);  // the cached preamble decodes the same line
  for (const auto& code : a[0].categories) EXPECT_TRUE(code.size() >= 2 && code[0] == 'S') << code;
  // Decoding costs FLOPs on top of the scoring pass.
  auto without = guard.score({conversation});
  EXPECT_GT(a[0].flops, without[0].flops);
}
