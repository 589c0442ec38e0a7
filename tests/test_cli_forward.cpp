// `guardkit forward` end to end: the real binary on the fixture checkpoints, against Hugging Face's numbers.
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

TEST(CliForward, DebertaTextAndIdsMatchTheReference) {
  auto cases = guardkit::test::load_json(guardkit::test::fixture("deberta/cases.json"))["cases"];
  std::string input;
  std::vector<nlohmann::json> picked;
  for (const auto& c : cases) {
    if (c["kind"] != "single" || c["input_ids"].size() > 60) continue;
    picked.push_back(c);
    input += nlohmann::json{{"text", c["text"]}}.dump() + "\n";
    input += nlohmann::json{{"input_ids", c["input_ids"]}}.dump() + "\n";
  }
  ASSERT_FALSE(picked.empty());
  auto [code, out] = run_guardkit("forward --model " + guardkit::test::fixture("deberta").string(), input);
  ASSERT_EQ(code, 0) << out;
  auto rows = parse_jsonl(out);
  ASSERT_EQ(rows.size(), 2 * picked.size());
  for (size_t i = 0; i < picked.size(); ++i) {
    for (size_t k : {2 * i, 2 * i + 1}) {
      for (size_t l = 0; l < 2; ++l) {
        EXPECT_NEAR(rows[k]["logits"][l].get<double>(), picked[i]["logits"][l].get<double>(), 1e-4) << picked[i]["id"];
        EXPECT_NEAR(rows[k]["probs"][l].get<double>(), picked[i]["probs"][l].get<double>(), 1e-4);
      }
      ASSERT_EQ(rows[k]["feature"].size(), picked[i]["pooled"].size());
      EXPECT_NEAR(rows[k]["feature"][0].get<double>(), picked[i]["pooled"][0].get<double>(), 1e-4);
    }
  }
}

TEST(CliForward, LlamaChosenIdsMatchTheWatchedLogits) {
  auto c = guardkit::test::load_json(guardkit::test::fixture("llama/cases.json"))["cases"][0];
  std::vector<std::string> ids;
  for (auto& [id, value] : c["logits_watch"].items()) ids.push_back(id);
  std::string id_list;
  for (const auto& id : ids) id_list += (id_list.empty() ? "" : ",") + id;
  auto [code, out] = run_guardkit("forward --model " + guardkit::test::fixture("llama").string() + " --ids " + id_list,
                         nlohmann::json{{"input_ids", c["input_ids"]}}.dump() + "\n");
  ASSERT_EQ(code, 0) << out;
  auto row = parse_jsonl(out).at(0);
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_NEAR(row["logits"][i].get<double>(), c["logits_watch"][ids[i]].get<double>(), 1e-4) << ids[i];
  EXPECT_NEAR(row["logsumexp"].get<double>(), c["logsumexp"].get<double>(), 1e-4);
}

TEST(CliForward, BadInputsAreClearErrors) {
  const std::string model = "--model " + guardkit::test::fixture("deberta").string();
  auto [c1, o1] = run_guardkit("forward " + model, "{\"input_ids\": [1, 99999, 2]}\n");
  EXPECT_EQ(c1, 1);
  EXPECT_NE(o1.find("outside the vocabulary"), std::string::npos) << o1;
  auto [c2, o2] = run_guardkit("forward " + model, "{\"prompt\": \"x\"}\n");
  EXPECT_EQ(c2, 1);
  EXPECT_NE(o2.find("expected \"text\""), std::string::npos) << o2;
  auto [c3, o3] = run_guardkit("forward --model /nonexistent", "");
  EXPECT_EQ(c3, 1);
  EXPECT_NE(o3.find("no config.json"), std::string::npos) << o3;
}
