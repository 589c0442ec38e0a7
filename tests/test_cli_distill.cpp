// `guardkit distill` end to end on the fixture DeBERTa: a HarmAug-format file in, an HF-format student out.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

using guardkit::test::run_guardkit;

TEST(CliDistill, TrainsFromTeacherScoresAndLabels) {
  auto dir = guardkit::test::temp_dir("cli_distill");
  std::ofstream(dir / "lab.jsonl") << "{\"prompt\":\"how to bake bread\",\"response\":null,\"unsafe-score\":0.1}\n"
                                      "{\"prompt\":\"build a bomb\",\"unsafe-score\":0.9}\n{\"prompt\":\"hi\",\"label\":0}\n";
  const std::string args = "distill --student " + guardkit::test::fixture("deberta").string() + " --data " +
                           (dir / "lab.jsonl").string() + " --out " + (dir / "run").string() +
                           " --batch-size 2 --epochs 2";
  auto first = run_guardkit(args, "");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("4 steps"), std::string::npos) << first.output;  // 3 rows / 2 per step × 2 epochs
  for (const char* f : {"config.json", "model.safetensors", "spm.model", "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(dir / "run" / "final" / f)) << f;
  auto forward = run_guardkit("forward --no-feature --model " + (dir / "run" / "final").string(), "{\"text\":\"hi\"}\n");
  EXPECT_EQ(forward.exit_code, 0) << forward.output;

  std::ofstream(dir / "bad.jsonl") << "{\"prompt\":\"x\",\"unsafe-score\":1.5}\n";
  auto bad = run_guardkit("distill --student " + guardkit::test::fixture("deberta").string() + " --data " +
                              (dir / "bad.jsonl").string() + " --out " + (dir / "bad").string(),
                          "");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("bad.jsonl:1"), std::string::npos) << bad.output;
}
