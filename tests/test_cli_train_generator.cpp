// `guardkit train-generator` end to end: the real binary trains a tiny model, is stopped and resumed, and its output
// directory feeds `guardkit generate`; bad arguments are one-line errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {
using guardkit::test::parse_jsonl;
using guardkit::test::run_guardkit;
}  // namespace

TEST(CliTrainGenerator, HelpTeachesWhatIsTrainedAndHowLong) {
  auto r = run_guardkit("train-generator --help", "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* needle : {"advbench_behaviors", "evaluation-only", "I have an idea for a prompt:", "--minutes",
                             "minutes on", "guardkit generate", "--vocab-size", "--kv-heads"})
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle;
}

TEST(CliTrainGenerator, BadArgumentsAreOneLineErrors) {
  const std::string out = guardkit::test::temp_dir("cli_gen_bad").string();
  struct Case {
    std::string args, expected;
  };
  for (const Case& c : std::vector<Case>{
           {"--out " + out + " --hidden 30 --heads 4", "not divisible by --heads"},
           {"--out " + out + " --datasets advbench_behaviors toxicchat", "evaluation-only"},
           {"--out " + out + " --datasets no_such_set", "unknown dataset"},
           {"--out " + out + " --steps 5 --minutes 1", "excludes"},
           {"--out " + out + " --data /nonexistent/dir", "does not exist"},
           {"--hidden 32", "--out"},
       }) {
    auto r = run_guardkit("train-generator " + c.args, "");
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST(CliTrainGenerator, StopResumeAndGenerate) {
  const auto dir = guardkit::test::temp_dir("cli_gen_run");
  const std::string args = "--threads 1 train-generator --out " + dir.string() +
                           " --datasets advbench_behaviors xstest_prompts xstest_completions --vocab-size 500"
                           " --hidden 32 --layers 1 --heads 2 --kv-heads 1 --max-length 32 --batch-size 4 --steps 6"
                           " --checkpoint-every 2";
  auto first = run_guardkit(args + " --stop-after 3", "");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("stopped at step 3/6"), std::string::npos) << first.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  auto second = run_guardkit(args, "");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resuming"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("6 steps"), std::string::npos) << second.output;
  ASSERT_TRUE(std::filesystem::exists(dir / "model.safetensors"));
  auto report = guardkit::test::load_json(dir / "training.json");
  EXPECT_EQ(report["steps"], 6);

  auto gen = run_guardkit("--threads 1 generate --model " + dir.string() + " --max-new-tokens 5",
                          nlohmann::json{{"text", "Here is a list of harmful behaviours:\n1."}}.dump() + "\n");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto rows = parse_jsonl(gen.output);
  ASSERT_EQ(rows.size(), 1u) << gen.output;
  EXPECT_GE(rows[0]["new_ids"].size(), 1u);
  EXPECT_LE(rows[0]["new_ids"].size(), 5u);
  EXPECT_TRUE(rows[0]["text"].is_string());
}
