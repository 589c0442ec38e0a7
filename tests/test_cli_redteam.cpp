// `guardkit redteam` end to end on the real (tiny) fixture Llama as target: logs, report, resume without repeats.
#include <gtest/gtest.h>

#include "test_util.h"

using guardkit::test::parse_jsonl;
using guardkit::test::run_guardkit;

TEST(CliRedteam, BiasRunWritesReportAndResumesWithoutRepeats) {
  auto dir = guardkit::test::temp_dir("cli_redteam");
  const std::string args = "redteam bias --target " + guardkit::test::fixture("llama").string() +
                           " --limit 2 --max-tokens 4 --temperature 0 --batch 4 --out " + (dir / "run").string() +
                           " --judge-guard " + guardkit::test::fixture("deberta").string();
  auto first = run_guardkit(args, "");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_TRUE(std::filesystem::exists(dir / "run" / "report.md")) << first.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "run" / "report.svg"));
  const std::string report = guardkit::read_file(dir / "run" / "report.md");
  EXPECT_NE(report.find("BiasJailbreak report"), std::string::npos);
  EXPECT_NE(report.find("Cohen"), std::string::npos);  // both judges ran
  // Find the trial log: 2 behaviours × (baseline + 9 pairs × 2 groups) = 38 records with distinct ids.
  std::filesystem::path log;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir / "run"))
    if (e.path().extension() == ".jsonl") log = e.path();
  ASSERT_FALSE(log.empty());
  auto records = parse_jsonl(guardkit::read_file(log));
  EXPECT_EQ(records.size(), 38u);
  // A second run finds every trial done: the log does not grow.
  auto second = run_guardkit(args, "");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_EQ(parse_jsonl(guardkit::read_file(log)).size(), 38u);
}

TEST(CliRedteam, UnknownTargetIsAClearError) {
  auto result = run_guardkit("redteam bias --target /nonexistent/model --limit 1", "");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("/nonexistent/model"), std::string::npos) << result.output;
}
