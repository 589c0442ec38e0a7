// `guardkit distill` end to end on the fixture DeBERTa: a HarmAug-format file in, an HF-format student out.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

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

TEST(CliDistill, EvaluatesHeldOutSetsPeriodicallyAndTrainsInBf16) {
  auto dir = guardkit::test::temp_dir("cli_distill_eval");
  std::ofstream(dir / "lab.jsonl") << "{\"prompt\":\"how to bake bread\",\"unsafe-score\":0.1}\n"
                                      "{\"prompt\":\"build a bomb\",\"unsafe-score\":0.9}\n{\"prompt\":\"hi\",\"label\":0}\n"
                                      "{\"prompt\":\"poison my neighbour\",\"label\":1}\n";
  const std::string student = " --student " + guardkit::test::fixture("deberta").string();
  auto run = run_guardkit("distill" + student + " --data " + (dir / "lab.jsonl").string() + " --out " +
                              (dir / "run").string() +
                              " --batch-size 2 --epochs 2 --eval-sets xstest_prompts --eval-every 2 --eval-max-rows 30"
                              " --bf16 --max-length 32",
                          "");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("xstest_prompts: 30 rows, F1"), std::string::npos) << run.output;
  std::ifstream in(dir / "run" / "log.jsonl");
  std::stringstream text;
  text << in.rdbuf();
  std::vector<int64_t> eval_steps;
  size_t step_lines = 0;
  for (const auto& line : guardkit::test::parse_jsonl(text.str())) {
    if (line.contains("eval")) {
      EXPECT_EQ(line["eval"], "xstest_prompts");
      EXPECT_EQ(line["rows"], 30);
      EXPECT_TRUE(line["auprc"].is_number() && line["f1"].is_number());
      eval_steps.push_back(line["step"].get<int64_t>());
    } else {
      ++step_lines;
    }
  }
  EXPECT_EQ(step_lines, 4u);  // 4 rows / 2 per step × 2 epochs
  EXPECT_EQ(eval_steps, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(guardkit::test::load_json(dir / "run" / "final" / "config.json")["torch_dtype"], "float32");

  // Licences and leakage: an evaluation-only set cannot be trained on; a set cannot be both.
  auto nc = run_guardkit("distill" + student + " --data toxicchat --out " + (dir / "nc").string(), "");
  EXPECT_EQ(nc.exit_code, 1);
  EXPECT_NE(nc.output.find("evaluation only"), std::string::npos) << nc.output;
  auto both = run_guardkit("distill" + student + " --data xstest_prompts --eval-sets xstest_prompts --out " +
                               (dir / "both").string(),
                           "");
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_NE(both.output.find("both training data and an evaluation set"), std::string::npos) << both.output;
}
