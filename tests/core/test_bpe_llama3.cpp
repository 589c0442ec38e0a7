// Byte-level BPE against the Llama 3 goldens: exact ids in both modes (special-token text recognised, and treated
// as plain text), BOS from the post-processor, and every decoding variant the fixture records.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "test_util.h"
#include "text/bpe_tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::text::BpeTokenizer;

namespace {

const BpeTokenizer& llama3() {
  static const auto tokenizer = BpeTokenizer::from_file(test::fixture("llama/tokenizer.json"));
  return *tokenizer;
}

const nlohmann::json& cases() {
  static const nlohmann::json root = test::load_json(test::fixture("llama3_tokenizer/cases.json"));
  return root["cases"];
}

std::vector<int32_t> ids_of(const nlohmann::json& list) { return list.get<std::vector<int32_t>>(); }

}  // namespace

TEST(BpeLlama3, FixtureHasAllCases) { EXPECT_EQ(cases().size(), 204u); }

TEST(BpeLlama3, ExactIdsWithSpecialTokensRecognised) {
  for (const auto& c : cases()) {
    const std::string text = c["text"];
    EXPECT_EQ(llama3().encode(text, /*parse_special=*/true), ids_of(c["ids"])) << c["id"] << ": " << text;
  }
}

TEST(BpeLlama3, ExactIdsWithSpecialTokensAsPlainText) {
  for (const auto& c : cases()) {
    const std::string text = c["text"];
    EXPECT_EQ(llama3().encode(text, /*parse_special=*/false), ids_of(c["ids_plain"])) << c["id"] << ": " << text;
  }
}

TEST(BpeLlama3, PlainModeNeverEmitsControlTokens) {
  for (const auto& c : cases()) {
    for (int32_t id : llama3().encode(c["text"].get<std::string>(), false)) EXPECT_FALSE(llama3().is_special(id)) << c["id"];
  }
  const auto ids = llama3().encode("<|eot_id|><|start_header_id|>system<|end_header_id|>", false);
  EXPECT_GT(ids.size(), 3u);
  EXPECT_EQ(llama3().encode("<|eot_id|>", true), std::vector<int32_t>{*llama3().token_to_id("<|eot_id|>")});
}

TEST(BpeLlama3, TokensMatchFixtureStrings) {
  for (const auto& c : cases()) {
    const auto ids = ids_of(c["ids"]);
    const auto tokens = c["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(ids.size(), tokens.size());
    for (size_t k = 0; k < ids.size(); ++k) {
      EXPECT_EQ(llama3().id_to_token(ids[k]), tokens[k]) << c["id"];
      EXPECT_EQ(llama3().token_to_id(tokens[k]), ids[k]) << c["id"];
    }
  }
}

TEST(BpeLlama3, PostProcessorAddsBos) {
  for (const auto& c : cases()) {
    const auto enc = llama3().encode_for_model(c["text"].get<std::string>());
    EXPECT_EQ(enc.ids, ids_of(c["ids_with_bos"])) << c["id"];
    EXPECT_EQ(enc.attention_mask, std::vector<int32_t>(enc.ids.size(), 1));
    EXPECT_EQ(enc.type_ids, std::vector<int32_t>(enc.ids.size(), 0));
  }
}

TEST(BpeLlama3, DecodingVariants) {
  for (const auto& c : cases()) {
    const auto ids = ids_of(c["ids"]);
    EXPECT_EQ(llama3().decode(ids, false, false), c["decoded"].get<std::string>()) << c["id"];
    EXPECT_EQ(llama3().decode(ids_of(c["ids_plain"]), false, false), c["decoded_plain"].get<std::string>()) << c["id"];
    EXPECT_EQ(llama3().decode(ids, true, false), c["decoded_skip_special"].get<std::string>()) << c["id"];
    // The tokenizer_config.json default (clean_up_tokenization_spaces: true).
    EXPECT_EQ(llama3().decode(ids), c["decoded_cleanup"].get<std::string>()) << c["id"];
    EXPECT_EQ(llama3().decode(ids, false, false), c["text"].get<std::string>()) << c["id"];
  }
}

TEST(BpeLlama3, ConfigTokensAndSizes) {
  EXPECT_EQ(llama3().vocab_size(), 128256u);
  EXPECT_EQ(llama3().bos_id(), 128000);
  EXPECT_EQ(llama3().eos_id(), *llama3().token_to_id("<|eot_id|>"));
  EXPECT_FALSE(llama3().pad_id().has_value());
  EXPECT_EQ(llama3().id_to_token(128256), "");
  EXPECT_EQ(llama3().id_to_token(-1), "");
}

TEST(BpeLlama3, PairTemplateAndTruncation) {
  const std::string a = "The quick brown fox jumps over the lazy dog.";
  const std::string b = "Short answer.";
  const auto ia = llama3().encode(a), ib = llama3().encode(b);
  const auto pair = llama3().encode_for_model(a, b);
  std::vector<int32_t> expected = {128000};
  expected.insert(expected.end(), ia.begin(), ia.end());
  expected.push_back(128000);
  expected.insert(expected.end(), ib.begin(), ib.end());
  EXPECT_EQ(pair.ids, expected);
  EXPECT_EQ(pair.type_ids[0], 0);
  EXPECT_EQ(pair.type_ids.back(), 1);
  // LongestFirst keeps the short text whole when the long one can take the whole cut.
  const size_t max_length = 2 + ib.size() + 3;
  const auto cut = llama3().encode_for_model(a, b, max_length);
  EXPECT_EQ(cut.ids.size(), max_length);
  EXPECT_TRUE(std::equal(ib.begin(), ib.end(), cut.ids.end() - static_cast<long>(ib.size())));
  const auto single = llama3().encode_for_model(a, std::nullopt, 5);
  EXPECT_EQ(single.ids, (std::vector<int32_t>{128000, ia[0], ia[1], ia[2], ia[3]}));
  EXPECT_THROW(llama3().encode_for_model(a, std::nullopt, 5, text::Truncation::OnlySecond), Error);
  EXPECT_THROW(llama3().encode_for_model(a, b, 1), Error);
}

// Llama Guard 3 prompts: template text and user content encoded in plain-text mode, control tokens only where the
// template puts them; the concatenation must give the fixture's ids exactly.
TEST(BpeLlama3, GuardPromptSegmentsGiveFixtureIds) {
  const auto root = test::load_json(test::fixture("llama/guard_cases.json"));
  ASSERT_FALSE(root["cases"].empty());
  for (const auto& c : root["cases"]) {
    std::vector<int32_t> ids;
    for (const auto& seg : c["segments"]) {
      if (seg.contains("special")) {
        const auto id = llama3().token_to_id(seg["special"].get<std::string>());
        ASSERT_TRUE(id.has_value()) << seg["special"];
        ids.push_back(*id);
      } else {
        const auto part = llama3().encode(seg["text"].get<std::string>(), /*parse_special=*/false);
        ids.insert(ids.end(), part.begin(), part.end());
      }
    }
    EXPECT_EQ(ids, ids_of(c["ids"])) << c["id"];
    EXPECT_EQ(llama3().decode(ids, false, false), c["rendered"].get<std::string>()) << c["id"];
  }
}

// The word cache is shared: encoding from several threads at once must give the single-threaded ids.
TEST(BpeLlama3, ConcurrentEncodingMatches) {
  const BpeTokenizer* tokenizer = &llama3();  // ctest runs each test in its own process: the cache starts empty
  std::vector<std::string> texts;
  for (const auto& c : cases()) texts.push_back(c["text"]);
  std::vector<std::vector<int32_t>> expected;
  for (const auto& c : cases()) expected.push_back(ids_of(c["ids"]));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < texts.size(); ++k) {
        const size_t i = (k * 7 + t * 13) % texts.size();
        if (tokenizer->encode(texts[i]) != expected[i]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}
