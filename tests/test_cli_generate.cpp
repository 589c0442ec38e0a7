// `guardkit generate` end to end: the real binary on the tiny Llama fixture, greedy ids equal to the HF goldens.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {
using guardkit::test::parse_jsonl;
using guardkit::test::run_guardkit;
}  // namespace

TEST(CliGenerate, GreedyIdsEqualTheGoldens) {
  const auto generation = guardkit::test::load_json(guardkit::test::fixture("llama/cases.json"))["generation"];
  const std::string dir = guardkit::test::fixture("llama").string();
  // The first prompt as text (BOS added by the tokenizer), the second as ids; a batch of two.
  std::string input = nlohmann::json{{"text", "The capital of France is"}}.dump() + "\n" +
                      nlohmann::json{{"input_ids", generation[1]["prompt_ids"]}}.dump() + "\n";
  auto result = run_guardkit("generate --model " + dir + " --max-new-tokens 12", input);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto out = parse_jsonl(result.output);
  ASSERT_EQ(out.size(), 2u) << result.output;
  EXPECT_EQ(out[0]["prompt_tokens"], generation[0]["prompt_ids"].size());
  EXPECT_EQ(out[0]["new_ids"], generation[0]["new_ids"]);
  EXPECT_EQ(out[1]["new_ids"], generation[1]["new_ids"]);
  EXPECT_EQ(out[0]["text"], generation[0]["decoded_new"]);
  EXPECT_EQ(out[0]["finish_reason"], "length");
}

TEST(CliGenerate, BadInputIsAOneLineError) {
  const std::string dir = guardkit::test::fixture("llama").string();
  auto result = run_guardkit("generate --model " + dir, "{\"input_ids\": [1, 999999]}\n");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("999999"), std::string::npos) << result.output;
  result = run_guardkit("generate --model " + dir, "{\"prompt\": \"x\"}\n");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("input_ids"), std::string::npos) << result.output;
}
