// Byte-level BPE against the Qwen3 goldens (shared/fixtures/qwen3_tokenizer): NFC normalizer, the digit-splitting
// regex, `ignore_merges: false`, no post-processor, and added tokens that are special and not, in all three modes
// (everything matched, special tokens as text, nothing matched), plus every decoding variant the fixture records.
#include <gtest/gtest.h>

#include "test_util.h"
#include "text/bpe_tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::text::BpeTokenizer;

namespace {

const BpeTokenizer& qwen3() {
  static const auto tokenizer = BpeTokenizer::from_file(test::fixture("qwen3/tokenizer.json"));
  return *tokenizer;
}

const nlohmann::json& cases() {
  static const nlohmann::json root = test::load_json(test::fixture("qwen3_tokenizer/cases.json"));
  return root["cases"];
}

std::vector<int32_t> ids_of(const nlohmann::json& list) { return list.get<std::vector<int32_t>>(); }

}  // namespace

TEST(BpeQwen3, FixtureHasAllCases) { EXPECT_EQ(cases().size(), 221u); }

TEST(BpeQwen3, ExactIdsEveryAddedTokenMatched) {
  for (const auto& c : cases())
    EXPECT_EQ(qwen3().encode(c["text"].get<std::string>(), /*parse_special=*/true), ids_of(c["ids"])) << c["id"];
}

TEST(BpeQwen3, ExactIdsSpecialTokensSplit) {
  // HF split_special_tokens=True: the 14 special tokens are text, <think> and the other 11 non-special stay whole.
  for (const auto& c : cases())
    EXPECT_EQ(qwen3().encode(c["text"].get<std::string>(), /*parse_special=*/false), ids_of(c["ids_split_special"]))
        << c["id"];
}

TEST(BpeQwen3, ExactIdsNothingMatched) {
  for (const auto& c : cases())
    EXPECT_EQ(qwen3().encode_plain(c["text"].get<std::string>()), ids_of(c["ids_plain"])) << c["id"];
}

TEST(BpeQwen3, ModesDifferWhereTheFixtureSaysSo) {
  // Guards against a fixture where the modes coincide everywhere (then the three tests above prove less).
  size_t split_differs = 0, plain_differs = 0;
  for (const auto& c : cases()) {
    split_differs += c["ids"] != c["ids_split_special"];
    plain_differs += c["ids_split_special"] != c["ids_plain"];
  }
  EXPECT_GT(split_differs, 0u);
  EXPECT_GT(plain_differs, 0u);
  const auto think = qwen3().token_to_id("<think>");
  ASSERT_TRUE(think.has_value());
  EXPECT_FALSE(qwen3().is_special(*think));
  EXPECT_EQ(qwen3().encode("<think>", false), std::vector<int32_t>{*think});
  EXPECT_GT(qwen3().encode_plain("<think>").size(), 1u);
}

TEST(BpeQwen3, TokensMatchFixtureStrings) {
  for (const auto& c : cases()) {
    const auto ids = ids_of(c["ids"]);
    const auto tokens = c["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(ids.size(), tokens.size());
    for (size_t k = 0; k < ids.size(); ++k) EXPECT_EQ(qwen3().id_to_token(ids[k]), tokens[k]) << c["id"];
  }
}

TEST(BpeQwen3, NoPostProcessorNoBos) {
  for (const auto& c : cases()) {
    const auto enc = qwen3().encode_for_model(c["text"].get<std::string>());
    EXPECT_EQ(enc.ids, ids_of(c["ids"])) << c["id"];
  }
}

TEST(BpeQwen3, DecodingVariants) {
  for (const auto& c : cases()) {
    // tokenizer_config.json says clean_up_tokenization_spaces: false, so the default decode is the faithful one.
    EXPECT_EQ(qwen3().decode(ids_of(c["ids"])), c["decoded"].get<std::string>()) << c["id"];
    EXPECT_EQ(qwen3().decode(ids_of(c["ids_split_special"])), c["decoded_split_special"].get<std::string>()) << c["id"];
    EXPECT_EQ(qwen3().decode(ids_of(c["ids_plain"])), c["decoded_plain"].get<std::string>()) << c["id"];
    EXPECT_EQ(qwen3().decode(ids_of(c["ids"]), true), c["decoded_skip_special"].get<std::string>()) << c["id"];
    EXPECT_EQ(c["decoded"], c["text_nfc"]) << c["id"];  // NFC cannot be undone by decoding
  }
}

TEST(BpeQwen3, SizesAndIds) {
  EXPECT_EQ(qwen3().vocab_size(), 151669u);  // the model has 151936 rows; the rest are padding
  EXPECT_EQ(qwen3().token_to_id("<|im_end|>"), 151645);
  EXPECT_EQ(qwen3().token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(qwen3().id_to_token(151669), "");
}
