// `guardkit generate` end to end: the real binary on the tiny Llama fixture, greedy ids equal to the HF goldens.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

struct RunResult {
  int exit_code;
  std::string output;
};

RunResult run(const std::string& args, const std::string& stdin_text) {
  auto dir = guardkit::test::temp_dir("cli_generate");
  std::ofstream(dir / "in.jsonl") << stdin_text;
  const std::string cmd =
      std::string(GUARDKIT_BUILD_DIR) + "/guardkit " + args + " < " + (dir / "in.jsonl").string() + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

std::vector<nlohmann::json> lines(const std::string& out) {
  std::vector<nlohmann::json> result;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t nl = out.find('\n', pos);
    if (nl == std::string::npos) nl = out.size();
    if (nl > pos) result.push_back(nlohmann::json::parse(out.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  return result;
}

}  // namespace

TEST(CliGenerate, GreedyIdsEqualTheGoldens) {
  const auto generation = guardkit::test::load_json(guardkit::test::fixture("llama/cases.json"))["generation"];
  const std::string dir = guardkit::test::fixture("llama").string();
  // The first prompt as text (BOS added by the tokenizer), the second as ids; a batch of two.
  std::string input = nlohmann::json{{"text", "The capital of France is"}}.dump() + "\n" +
                      nlohmann::json{{"input_ids", generation[1]["prompt_ids"]}}.dump() + "\n";
  auto result = run("generate --model " + dir + " --max-new-tokens 12", input);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto out = lines(result.output);
  ASSERT_EQ(out.size(), 2u) << result.output;
  EXPECT_EQ(out[0]["prompt_tokens"], generation[0]["prompt_ids"].size());
  EXPECT_EQ(out[0]["new_ids"], generation[0]["new_ids"]);
  EXPECT_EQ(out[1]["new_ids"], generation[1]["new_ids"]);
  EXPECT_EQ(out[0]["text"], generation[0]["decoded_new"]);
  EXPECT_EQ(out[0]["finish_reason"], "length");
}

TEST(CliGenerate, BadInputIsAOneLineError) {
  const std::string dir = guardkit::test::fixture("llama").string();
  auto result = run("generate --model " + dir, "{\"input_ids\": [1, 999999]}\n");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("999999"), std::string::npos) << result.output;
  result = run("generate --model " + dir, "{\"prompt\": \"x\"}\n");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("input_ids"), std::string::npos) << result.output;
}
