// Qwen3Guard-Gen prompts and answer parser against shared/fixtures/qwen3/guard_cases.json: rendered text byte for
// byte, the template's special tokens only where it writes them (content typed by a user stays text), exact ids, and
// the README parser's results on every recorded output.
#include <gtest/gtest.h>

#include "test_util.h"
#include "text/bpe_tokenizer.h"
#include "text/qwen3_guard_prompt.h"
#include "util/error.h"

using namespace guardkit;

namespace {

const nlohmann::json& root() {
  static const nlohmann::json data = test::load_json(test::fixture("qwen3/guard_cases.json"));
  return data;
}

const text::BpeTokenizer& qwen3() {
  static const auto tokenizer = text::BpeTokenizer::from_file(test::fixture("qwen3/tokenizer.json"));
  return *tokenizer;
}

text::RenderedPrompt render(const nlohmann::json& messages) {
  const std::string user = messages[0]["content"];
  if (messages.size() == 1) return text::render_qwen3_guard_prompt(user, std::nullopt);
  const std::string assistant = messages[1]["content"];
  return text::render_qwen3_guard_prompt(user, assistant);
}

}  // namespace

TEST(Qwen3GuardPrompt, RenderedTextIdsAndSpecialsEqualTheFixture) {
  ASSERT_EQ(root()["cases"].size(), 8u);
  for (const auto& c : root()["cases"]) {
    const auto prompt = render(c["messages"]);
    EXPECT_EQ(prompt.text(), c["rendered"].get<std::string>()) << c["id"];
    std::vector<std::string> specials, want_specials;
    for (const auto& seg : prompt.segments)
      if (seg.is_special()) specials.push_back(seg.text);
    for (const auto& seg : c["segments"])
      if (seg.contains("special")) want_specials.push_back(seg["special"]);
    EXPECT_EQ(specials, want_specials) << c["id"];
    EXPECT_EQ(text::encode_prompt(qwen3(), prompt), c["ids"].get<std::vector<int32_t>>()) << c["id"];
    if (c.contains("ids_naive"))  // the injection case: a naive encode of the string would obey the user's tokens
      EXPECT_NE(c["ids_naive"], c["ids"]) << c["id"];
  }
}

TEST(Qwen3GuardPrompt, ModeFollowsTheMessages) {
  for (const auto& c : root()["cases"]) {
    const bool response = c["mode"] == "response";
    EXPECT_EQ(c["messages"].size(), response ? 2u : 1u) << c["id"];
    const std::string text = render(c["messages"]).text();
    EXPECT_EQ(text.find("REFUSAL POLICY") != std::string::npos, response) << c["id"];
    EXPECT_EQ(text.find("Jailbreak.") != std::string::npos, !response) << c["id"];
  }
}

TEST(Qwen3GuardPrompt, ParserMatchesTheReadmeRegexes) {
  ASSERT_EQ(root()["parser_cases"].size(), 10u);
  for (const auto& c : root()["parser_cases"]) {
    const bool response = c["mode"] == "response";
    const auto answer = text::parse_qwen3_guard_output(c["output"].get<std::string>(), response);
    const auto& want = c["parsed"];
    if (want["safety"].is_null()) EXPECT_FALSE(answer.safety.has_value()) << c["output"];
    else EXPECT_EQ(answer.safety, want["safety"].get<std::string>()) << c["output"];
    EXPECT_EQ(answer.categories, want["categories"].get<std::vector<std::string>>()) << c["output"];
    if (response) EXPECT_EQ(answer.refusal, want["refusal"].get<std::string>()) << c["output"];
    else EXPECT_FALSE(answer.refusal.has_value());
  }
  // Repeats and order are kept, as re.findall returns them.
  const auto twice = text::parse_qwen3_guard_output("Safety: Unsafe\nCategories: PII, Violent, PII", false);
  EXPECT_EQ(twice.categories, (std::vector<std::string>{"PII", "Violent", "PII"}));
}
