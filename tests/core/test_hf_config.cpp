// HfConfig: typed reads of config.json with defaults for absent keys, one-line errors naming file and key on wrong
// types, and a seeded fuzz run that mutates a real config and asserts only guardkit::Error comes out.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "io/hf_config.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit;

namespace {
std::string expect_error(const std::function<void()>& action, const std::vector<std::string>& expected) {
  try {
    action();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& s : expected) EXPECT_NE(message.find(s), std::string::npos) << "missing '" << s << "' in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  ADD_FAILURE() << "no error";
  return {};
}
}  // namespace

TEST(HfConfig, ReadsTheLlamaFixture) {
  const auto cfg = io::HfConfig::load(test::fixture("llama"));  // a directory: reads its config.json
  const auto raw = test::load_json(test::fixture("llama/config.json"));
  EXPECT_EQ(cfg.require<int>("hidden_size"), raw["hidden_size"].get<int>());
  EXPECT_EQ(cfg.require<int64_t>("vocab_size"), raw["vocab_size"].get<int64_t>());
  EXPECT_EQ(cfg.get<double>("rms_norm_eps", 1e-6), raw["rms_norm_eps"].get<double>());
  EXPECT_EQ(cfg.get<float>("rope_theta", 10000.0f), raw["rope_theta"].get<float>());
  EXPECT_EQ(cfg.get<bool>("tie_word_embeddings", false), raw["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(cfg.require<std::string>("model_type"), "llama");
  EXPECT_EQ(cfg.get<std::vector<std::string>>("architectures", {}), raw["architectures"].get<std::vector<std::string>>());
  // eos_token_id is one integer here; a list type accepts it as a one-element list.
  EXPECT_EQ(cfg.require<std::vector<int64_t>>("eos_token_id"), std::vector<int64_t>{raw["eos_token_id"].get<int64_t>()});
  // Absent keys take the caller's (HF's) default.
  EXPECT_FALSE(cfg.has("no_such_key"));
  EXPECT_EQ(cfg.get<int>("no_such_key", 7), 7);
  EXPECT_EQ(cfg.get_optional<int>("no_such_key"), std::nullopt);
  EXPECT_EQ(cfg.get_optional<int>("num_key_value_heads"), raw["num_key_value_heads"].get<int>());
  // Nested objects.
  auto scaling = cfg.section("rope_scaling");
  ASSERT_TRUE(scaling.has_value());
  EXPECT_EQ(scaling->require<double>("factor"), raw["rope_scaling"]["factor"].get<double>());
  EXPECT_EQ(scaling->require<int>("original_max_position_embeddings"),
            raw["rope_scaling"]["original_max_position_embeddings"].get<int>());
  EXPECT_FALSE(cfg.section("no_such_section").has_value());
  EXPECT_EQ(cfg.json(), raw);
}

TEST(HfConfig, ReadsTheDebertaFixtureFile) {
  const auto path = test::fixture("deberta/config.json");
  const auto cfg = io::HfConfig::load(path);
  EXPECT_EQ(cfg.origin(), path.string());
  EXPECT_EQ(cfg.require<int>("max_relative_positions"), -1);
  EXPECT_EQ(cfg.get<std::vector<std::string>>("pos_att_type", {}), (std::vector<std::string>{"p2c", "c2p"}));
  EXPECT_EQ(cfg.get<double>("layer_norm_eps", 1e-12), 1e-7);
  EXPECT_EQ(cfg.get<int>("pooler_dropout", 5), 0);
}

TEST(HfConfig, NullMeansAbsentAndIntegralFloatsAreIntegers) {
  const auto cfg = io::HfConfig::parse(
      R"({"pad_token_id": null, "hidden_size": 768.0, "eps": 1, "ids": [1, 2.0, 3], "big": 3000000000})", "c.json");
  EXPECT_FALSE(cfg.has("pad_token_id"));
  EXPECT_EQ(cfg.get<int>("pad_token_id", -1), -1);
  EXPECT_EQ(cfg.get<int>("hidden_size", 0), 768);
  EXPECT_EQ(cfg.get<double>("eps", 0.0), 1.0);  // an integer is a fine double
  EXPECT_EQ(cfg.get<std::vector<int>>("ids", {}), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(cfg.get<int64_t>("big", 0), 3000000000LL);
}

TEST(HfConfig, WrongTypesNameFileAndKey) {
  const auto cfg = io::HfConfig::parse(
      R"({"hidden_size": "768", "eps": "tiny", "flag": 1, "name": 3, "ids": [1, "x"], "ratio": 0.5,
          "big": 3000000000, "rope_scaling": {"factor": "8"}, "not_section": 4})",
      "/models/x/config.json");
  expect_error([&] { cfg.get<int>("hidden_size", 1); }, {"/models/x/config.json", "'hidden_size'", "integer", "string"});
  expect_error([&] { cfg.get<double>("eps", 1.0); }, {"config.json", "'eps'", "number"});
  expect_error([&] { cfg.get<bool>("flag", false); }, {"'flag'", "true or false"});
  expect_error([&] { cfg.get<std::string>("name", ""); }, {"'name'", "string"});
  expect_error([&] { cfg.get<std::vector<int>>("ids", {}); }, {"'ids'", "integer"});
  expect_error([&] { cfg.get<int>("ratio", 0); }, {"'ratio'", "integer"});
  expect_error([&] { cfg.get<int>("big", 0); }, {"'big'", "32 bits"});
  expect_error([&] { cfg.require<int>("vocab_size"); }, {"config.json", "'vocab_size'", "missing"});
  expect_error([&] { cfg.section("rope_scaling")->require<double>("factor"); }, {"'rope_scaling.factor'", "number"});
  expect_error([&] { cfg.section("rope_scaling")->require<double>("type"); }, {"'rope_scaling.type'", "missing"});
  expect_error([&] { cfg.section("not_section"); }, {"'not_section'", "object"});
}

TEST(HfConfig, MalformedFiles) {
  expect_error([] { io::HfConfig::parse("{\"a\": 1,", "broken.json"); }, {"broken.json", "not valid JSON"});
  expect_error([] { io::HfConfig::parse("[1, 2]", "list.json"); }, {"list.json", "object"});
  expect_error([] { io::HfConfig::parse("", "empty.json"); }, {"empty.json"});
  const auto dir = test::temp_dir("cfg_missing");
  expect_error([&] { io::HfConfig::load(dir); }, {(dir / "config.json").string(), "cannot open"});
}

// Mutates the fixture config thousands of times (seeded); parsing and reading every key as every type may only ever
// throw guardkit::Error.
TEST(HfConfig, FuzzParserAndGetters) {
  std::ifstream in(test::fixture("llama/config.json"));
  const std::string seed((std::istreambuf_iterator<char>(in)), {});
  std::mt19937 rng(1128);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
  const std::vector<std::string> tokens = {"null", "-1", "1e400", "-0.0", "[]", "{}", "\"\\ud800\"", "true",
                                           "9223372036854775808", "[1,[2]]", "\"x\"", ",", ":", "\"\xff\""};
  int parsed = 0, rejected = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string text = seed;
    for (int m = 0, n = 1 + static_cast<int>(pick(3)); m < n; ++m) {
      switch (pick(4)) {
        case 0: text[pick(text.size())] = static_cast<char>(rng()); break;
        case 1: text.replace(pick(text.size()), pick(5), tokens[pick(tokens.size())]); break;
        case 2: text.erase(pick(text.size()), 1 + pick(4)); break;
        case 3: text.resize(pick(text.size() + 1)); break;
      }
    }
    try {
      const auto cfg = io::HfConfig::parse(text, "fuzz_config.json");
      ++parsed;
      for (auto it = cfg.json().begin(); it != cfg.json().end(); ++it) {
        const std::string& key = it.key();
        auto attempt = [&](auto read) {
          try {
            read();
          } catch (const Error& e) {
            ASSERT_NE(std::string(e.what()).find("fuzz_config.json"), std::string::npos);
            ASSERT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
          }
        };
        attempt([&] { cfg.get<int>(key, 0); });
        attempt([&] { cfg.get<int64_t>(key, 0); });
        attempt([&] { cfg.get<double>(key, 0); });
        attempt([&] { cfg.get<bool>(key, false); });
        attempt([&] { cfg.get<std::string>(key, ""); });
        attempt([&] { cfg.get<std::vector<int>>(key, {}); });
        attempt([&] { cfg.get<std::vector<std::string>>(key, {}); });
        attempt([&] {
          if (auto s = cfg.section(key)) s->get<double>("factor", 0.0);
        });
      }
    } catch (const Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find("fuzz_config.json"), std::string::npos) << e.what();
      ASSERT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iteration << ": not a guardkit::Error: " << e.what();
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 500);
}
