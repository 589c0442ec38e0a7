// `guardkit augment generate|respond|label` end to end on the fixture Llama (generator, responder) and the fixture
// DeBERTa (teacher): every step writes its rows and a rerun appends nothing.
#include <gtest/gtest.h>

#include <set>

#include "test_util.h"

using guardkit::test::parse_jsonl;
using guardkit::test::run_guardkit;

TEST(CliAugment, GenerateRespondLabelChainAndResume) {
  auto dir = guardkit::test::temp_dir("cli_augment");
  const std::string llama = guardkit::test::fixture("llama").string();
  const std::string ins = (dir / "ins.jsonl").string(), resp = (dir / "resp.jsonl").string(),
                    lab = (dir / "lab.jsonl").string();
  const std::string gen = "augment generate --llm " + llama + " --out " + ins +
                          " --count 3 --max-requests 16 --min-chars 1 --max-tokens 8 --batch 4";
  auto g = run_guardkit(gen, "");
  ASSERT_EQ(g.exit_code, 0) << g.output;
  auto rows = parse_jsonl(guardkit::read_file(ins));
  ASSERT_GE(rows.size(), 1u) << g.output;
  ASSERT_LE(rows.size(), 3u);
  std::set<std::string> ids;
  for (const auto& r : rows) {
    EXPECT_FALSE(r["prompt"].get<std::string>().empty());
    EXPECT_EQ(r["prefix"], "I have an idea for a prompt:");
    ids.insert(r["id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), rows.size());
  ASSERT_EQ(run_guardkit(gen, "").exit_code, 0);
  EXPECT_EQ(parse_jsonl(guardkit::read_file(ins)).size(), rows.size());  // nothing repeated

  auto r = run_guardkit("augment respond --llm " + llama + " --instructions " + ins + " --out " + resp +
                            " --max-tokens 6 --batch 4",
                        "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(parse_jsonl(guardkit::read_file(resp)).size(), 2 * rows.size());  // a compliant and a refusing one

  auto l = run_guardkit("augment label --teacher " + guardkit::test::fixture("deberta").string() + " --instructions " +
                            ins + " --responses " + resp + " --out " + lab,
                        "");
  ASSERT_EQ(l.exit_code, 0) << l.output;
  auto labelled = parse_jsonl(guardkit::read_file(lab));
  ASSERT_EQ(labelled.size(), 3 * rows.size());
  for (const auto& row : labelled) {
    const double s = row["unsafe-score"].get<double>();
    EXPECT_GE(s, 0.0);
    EXPECT_LE(s, 1.0);
  }
}
