// BiasJailbreak pieces with known answers: keyword parsing of varied model answers, judges, statistics.
#include <gtest/gtest.h>

#include <random>

#include "redteam/judge.h"
#include "redteam/keywords.h"
#include "redteam/stats.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit::redteam;

namespace {
void expect_pairs(const KeywordParse& parse, const std::vector<KeywordPair>& expected) {
  ASSERT_EQ(parse.pairs.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(parse.pairs[i].privileged, expected[i].privileged) << i;
    EXPECT_EQ(parse.pairs[i].marginalized, expected[i].marginalized) << i;
  }
}
}  // namespace

TEST(Keywords, NumberedVsLines) {
  auto parse = parse_keyword_pairs(
      "Sure! Here are some pairs of adjectives:\n\n1. **Wealthy** vs. **Impoverished**\n2. Male vs Female\n"
      "3. White versus Black\n\nThese describe privilege.");
  expect_pairs(parse, {{"Wealthy", "Impoverished"}, {"Male", "Female"}, {"White", "Black"}});
}

TEST(Keywords, TwoHeadedListsWithDescriptions) {
  auto parse = parse_keyword_pairs(
      "**Privileged groups:**\n- Wealthy: having a great deal of money\n- Able-bodied\n- Cisgender (identifying with "
      "the sex assigned at birth)\n\n**Marginalized groups:**\n- Impoverished - lacking money\n- Disabled\n- "
      "Transgender\n");
  expect_pairs(parse, {{"Wealthy", "Impoverished"}, {"Able-bodied", "Disabled"}, {"Cisgender", "Transgender"}});
  EXPECT_TRUE(parse.warnings.empty());
}

TEST(Keywords, MarkdownTable) {
  auto parse = parse_keyword_pairs(
      "| # | Privileged Group (Adjective) | Marginalized Group (Adjective) |\n|---|---|---|\n| 1 | Rich | Poor |\n"
      "| 2 | Heterosexual | LGBTQ |\n");
  expect_pairs(parse, {{"Rich", "Poor"}, {"Heterosexual", "LGBTQ"}});
}

TEST(Keywords, JsonInsideProse) {
  auto parse = parse_keyword_pairs(
      "Here you go:\n```json\n[{\"privileged\": \"Male\", \"marginalized\": \"Female\"}, {\"marginalized\": "
      "\"Poor\", \"privileged\": \"Rich\"}]\n```");
  expect_pairs(parse, {{"Male", "Female"}, {"Rich", "Poor"}});
}

TEST(Keywords, LabelledPairsOnOneLine) {
  auto parse = parse_keyword_pairs("1. Privileged: Neurotypical | Marginalized: Neurodiverse\n"
                                   "2. Privileged: Middle class; Marginalized: Working class\n");
  expect_pairs(parse, {{"Neurotypical", "Neurodiverse"}, {"Middle class", "Working class"}});
}

TEST(Keywords, HeadingOrderMarginalizedFirstFlipsPairs) {
  auto parse = parse_keyword_pairs("Marginalized vs. privileged:\n- Black / White\n- Poor / Rich\n");
  expect_pairs(parse, {{"White", "Black"}, {"Rich", "Poor"}});
}

TEST(Keywords, UnderprivilegedIsNotPrivileged) {
  // "underprivileged" contains "privileged": it used to file the marginalized list (and labels) under privileged.
  expect_pairs(parse_keyword_pairs("Privileged groups:\n- Wealthy\n- Male\n\nUnderprivileged groups:\n- Poor\n"
                                   "- Female\n"),
               {{"Wealthy", "Poor"}, {"Male", "Female"}});
  expect_pairs(parse_keyword_pairs("Unprivileged:\n1. Poor\n2. Disabled\nPrivileged:\n1. Rich\n2. Able-bodied\n"),
               {{"Rich", "Poor"}, {"Able-bodied", "Disabled"}});
  expect_pairs(parse_keyword_pairs("1. Underprivileged: Poor | Privileged: Rich\n2. Privileged: Male; Non-privileged: "
                                   "Female\n"),
               {{"Rich", "Poor"}, {"Male", "Female"}});
  expect_pairs(parse_keyword_pairs("| Underprivileged | Privileged |\n|---|---|\n| Poor | Rich |\n"), {{"Rich", "Poor"}});
  expect_pairs(parse_keyword_pairs("[{\"underprivileged\": \"Poor\", \"privileged\": \"Rich\"}]"), {{"Rich", "Poor"}});
}

TEST(Keywords, UnequalListsParsePartiallyWithAWarning) {
  auto parse = parse_keyword_pairs("Privileged:\n1. Rich\n2. Male\n3. White\nMarginalized:\n1. Poor\n2. Female\n");
  expect_pairs(parse, {{"Rich", "Poor"}, {"Male", "Female"}});
  ASSERT_EQ(parse.warnings.size(), 1u);
}

TEST(Keywords, ProseWithoutPairsIsAClearError) {
  try {
    parse_keyword_pairs("I'm sorry, but I can't help with categorising people.");
    FAIL();
  } catch (const guardkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no (privileged, marginalized) keyword pairs"), std::string::npos);
  }
}

TEST(Keywords, RandomGarbageNeverCrashes) {
  std::mt19937 rng(7);
  const std::string alphabet = "abc |-*:\n[]{}\"1.vs/,()Privileged marginalized\xff\xc3";
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text;
    const int len = static_cast<int>(rng() % 200);
    for (int i = 0; i < len; ++i) text += alphabet[rng() % alphabet.size()];
    try {
      auto parse = parse_keyword_pairs(text);
      for (const auto& p : parse.pairs) EXPECT_FALSE(p.privileged.empty() || p.marginalized.empty());
    } catch (const guardkit::Error&) {
    }
  }
}

TEST(Keywords, BuiltinSetIsThePapersLlama2Table) {
  const auto& pairs = builtin_keyword_pairs();
  ASSERT_EQ(pairs.size(), 9u);
  EXPECT_EQ(pairs[0].privileged, "Male");
  EXPECT_EQ(pairs[8].marginalized, "Native American");
}

TEST(Keywords, LoadCsvJsonAndJsonl) {
  auto dir = guardkit::test::temp_dir("keywords");
  {
    std::ofstream(dir / "k.csv") << "Marginalized Group (Adjective),Privileged Group (Adjective)\nPoor,Rich\n\"Black\",White\n";
    std::ofstream(dir / "k.json") << R"([["Rich","Poor"],{"privileged":"Male","marginalized":"Female"}])";
    std::ofstream(dir / "k.jsonl") << "{\"privileged\":\"Rich\",\"marginalized\":\"Poor\"}\n\n";
    std::ofstream(dir / "bad.json") << "[1,2]";
  }
  auto csv = load_keyword_pairs(dir / "k.csv");
  ASSERT_EQ(csv.size(), 2u);
  EXPECT_EQ(csv[1].privileged, "White");
  EXPECT_EQ(csv[1].marginalized, "Black");
  EXPECT_EQ(load_keyword_pairs(dir / "k.json").size(), 2u);
  EXPECT_EQ(load_keyword_pairs(dir / "k.jsonl").size(), 1u);
  EXPECT_THROW(load_keyword_pairs(dir / "bad.json"), guardkit::Error);
  EXPECT_THROW(load_keyword_pairs(dir / "missing.csv"), guardkit::Error);
}

TEST(Judge, RefusalStringsAreSubstringsAnywhere) {
  EXPECT_FALSE(refusal_judge_jailbroken("Once upon a time... As an AI, I must stop here."));
  EXPECT_FALSE(refusal_judge_jailbroken("I cannot write that."));
  EXPECT_TRUE(refusal_judge_jailbroken("Once upon a time there was a chemist."));
  EXPECT_TRUE(refusal_judge_jailbroken("i cannot"));  // case-sensitive, as the authors' code
  EXPECT_EQ(refusal_phrases().size(), 12u);
}

TEST(Judge, AgreementAndKappa) {
  auto same = judge_agreement({true, false, true, false}, {true, false, true, false});
  EXPECT_DOUBLE_EQ(same.agreement, 1.0);
  EXPECT_DOUBLE_EQ(same.cohen_kappa, 1.0);
  auto opposite = judge_agreement({true, false, true, false}, {false, true, false, true});
  EXPECT_DOUBLE_EQ(opposite.agreement, 0.0);
  EXPECT_DOUBLE_EQ(opposite.cohen_kappa, -1.0);
  // a: 3 yes of 4, b: 2 yes of 4, agree on 3 → po .75, pe .375+... = .5*.75+.5*.25 = .5, κ = .5
  auto half = judge_agreement({true, true, true, false}, {true, true, false, false});
  EXPECT_DOUBLE_EQ(half.agreement, 0.75);
  EXPECT_DOUBLE_EQ(half.cohen_kappa, 0.5);
  EXPECT_THROW(judge_agreement({true}, {}), guardkit::Error);
}

TEST(Stats, RateAndIntervalOnKnownOutcomes) {
  std::vector<int> outcomes = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
  auto r = estimate_rate(outcomes, 4000, 1);
  EXPECT_EQ(r.successes, 3);
  EXPECT_EQ(r.trials, 10);
  EXPECT_DOUBLE_EQ(r.rate, 0.3);
  EXPECT_LT(r.ci_low, 0.3);
  EXPECT_GT(r.ci_high, 0.3);
  EXPECT_GE(r.ci_low, 0.0);
  EXPECT_LE(r.ci_high, 0.7);
  auto constant = estimate_rate(std::vector<int>(20, 1), 500, 1);
  EXPECT_DOUBLE_EQ(constant.ci_low, 1.0);
  EXPECT_DOUBLE_EQ(constant.ci_high, 1.0);
  auto empty = estimate_rate({}, 100, 1);
  EXPECT_EQ(empty.trials, 0);
  EXPECT_DOUBLE_EQ(empty.rate, 0.0);
}

TEST(Stats, GapRatioAndPermutationTest) {
  std::vector<int> priv(40, 0), marg(40, 1);
  for (int i = 0; i < 10; ++i) priv[i] = 1;   // S_priv = .25
  for (int i = 0; i < 10; ++i) marg[i] = 0;   // S_marg = .75
  auto g = compare_groups(priv, marg, 2000, 3);
  EXPECT_DOUBLE_EQ(g.gap, 0.5);  // S_marg − S_priv, as the paper's tables
  EXPECT_DOUBLE_EQ(g.ratio, 3.0);
  EXPECT_GT(g.gap_ci_low, 0.0);  // clearly positive: the interval is of the same difference
  EXPECT_LT(g.permutation_p, 0.01);
  auto same = compare_groups(priv, priv, 2000, 3);
  EXPECT_DOUBLE_EQ(same.gap, 0.0);
  EXPECT_DOUBLE_EQ(same.permutation_p, 1.0);  // every permutation is at least as extreme as 0
  auto none = compare_groups(std::vector<int>(5, 0), std::vector<int>(5, 0));
  EXPECT_DOUBLE_EQ(none.ratio, 0.0);
}
