// `guardkit tokenize` end to end: the real binary on fixture tokenizers, compared with the reference ids.
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

TEST(CliTokenize, Llama3IdsEqualTheReferenceInBothModes) {
  auto cases = guardkit::test::load_json(guardkit::test::fixture("llama3_tokenizer/cases.json"))["cases"];
  std::string input;
  std::vector<nlohmann::json> picked;
  for (size_t i = 0; i < cases.size(); i += 9) {
    picked.push_back(cases[i]);
    input += nlohmann::json{{"text", cases[i]["text"]}}.dump() + "\n";
  }
  const std::string dir = guardkit::test::fixture("llama").string();
  auto special = run_guardkit("tokenize --tokenizer " + dir + " --no-special-tokens", input);
  ASSERT_EQ(special.exit_code, 0) << special.output;
  auto plain = run_guardkit("tokenize --tokenizer " + dir + " --no-special-tokens --plain-specials", input);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  auto with_bos = run_guardkit("tokenize --tokenizer " + dir, input);
  auto s = parse_jsonl(special.output), p = parse_jsonl(plain.output), b = parse_jsonl(with_bos.output);
  ASSERT_EQ(s.size(), picked.size());
  ASSERT_EQ(p.size(), picked.size());
  ASSERT_EQ(b.size(), picked.size());
  for (size_t i = 0; i < picked.size(); ++i) {
    EXPECT_EQ(s[i]["ids"], picked[i]["ids"]) << picked[i]["id"];
    EXPECT_EQ(p[i]["ids"], picked[i]["ids_plain"]) << picked[i]["id"];
    EXPECT_EQ(b[i]["ids"], picked[i]["ids_with_bos"]) << picked[i]["id"];
  }
}

TEST(CliTokenize, DebertaPairsGetTypeIds) {
  auto result = run_guardkit("tokenize --tokenizer " + guardkit::test::fixture("deberta").string() + " --pair",
                    "{\"text\":\"How do I bake bread?\",\"text_pair\":\"Mix flour and water.\"}\n");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto out = parse_jsonl(result.output).at(0);
  auto ids = out["ids"].get<std::vector<int>>();
  auto types = out["type_ids"].get<std::vector<int>>();
  ASSERT_EQ(ids.size(), types.size());
  EXPECT_EQ(ids.front(), 1);  // [CLS]
  EXPECT_EQ(ids.back(), 2);   // [SEP]
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);
  EXPECT_EQ(types.front(), 0);
  EXPECT_EQ(types.back(), 1);
}

TEST(CliTokenize, BadInputIsAClearErrorNamingTheLine) {
  const std::string dir = guardkit::test::fixture("deberta").string();
  auto bad_json = run_guardkit("tokenize --tokenizer " + dir, "{\"text\":\"ok\"}\nnot json\n");
  EXPECT_EQ(bad_json.exit_code, 1);
  EXPECT_NE(bad_json.output.find("<stdin>:2: not valid JSON"), std::string::npos) << bad_json.output;
  auto bad_utf8 = run_guardkit("tokenize --tokenizer " + dir, "{\"text\":\"\xff\"}\n");
  EXPECT_EQ(bad_utf8.exit_code, 1);
  EXPECT_NE(bad_utf8.output.find("UTF-8"), std::string::npos) << bad_utf8.output;
  auto no_text = run_guardkit("tokenize --tokenizer " + dir, "{\"prompt\":\"x\"}\n");
  EXPECT_EQ(no_text.exit_code, 1);
  EXPECT_NE(no_text.output.find("missing \"text\""), std::string::npos) << no_text.output;
  auto no_dir = run_guardkit("tokenize --tokenizer /nonexistent/dir", "");
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_NE(no_dir.output.find("/nonexistent/dir"), std::string::npos) << no_dir.output;
}
