// Exact ids of Hugging Face's slow DebertaV2Tokenizer on every case of shared/fixtures/spm and the tokenizer part of
// shared/fixtures/deberta (single texts, pairs, truncation at max_length).
#include <gtest/gtest.h>

#include "test_util.h"
#include "text/deberta_tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::text;

namespace {

std::vector<int32_t> ids_of(const nlohmann::json& array) { return array.get<std::vector<int32_t>>(); }

const DebertaV2Tokenizer& fixture_tokenizer() {
  static const auto tokenizer = DebertaV2Tokenizer::from_dir(test::fixture("deberta"));
  return *tokenizer;
}

}  // namespace

TEST(UnigramFixtures, VocabularyConventions) {
  const auto& tok = fixture_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 801u);
  EXPECT_EQ(tok.model().size(), 800u);
  EXPECT_EQ(tok.cls_id(), 1);
  EXPECT_EQ(tok.sep_id(), 2);
  EXPECT_EQ(tok.unk_id(), 3);
  EXPECT_EQ(tok.mask_id(), 800);
  EXPECT_EQ(tok.pad_id(), std::optional<int32_t>(0));
  EXPECT_EQ(tok.id_to_token(800), "[MASK]");
  EXPECT_EQ(tok.token_to_id("[MASK]"), std::optional<int32_t>(800));
  EXPECT_EQ(tok.id_to_token(801), "");
  const auto& spec = tok.model().spec();
  EXPECT_EQ(spec.unk_piece, "[UNK]");
  EXPECT_EQ(spec.bos_piece, "[CLS]");
  EXPECT_EQ(spec.eos_piece, "[SEP]");
  EXPECT_EQ(spec.pad_piece, "[PAD]");
  EXPECT_EQ(spec.pad_id, 0);
  EXPECT_EQ(spec.unk_id, 3);
  EXPECT_EQ(spec.normalizer_name, "nmt_nfkc");
  EXPECT_FALSE(spec.precompiled_charsmap.empty());
  EXPECT_TRUE(spec.add_dummy_prefix);
  EXPECT_TRUE(spec.remove_extra_whitespaces);
  EXPECT_FALSE(spec.byte_fallback);
}

TEST(UnigramFixtures, SpmCasesExact) {
  const auto& tok = fixture_tokenizer();
  const auto root = test::load_json(test::fixture("spm/cases.json"));
  ASSERT_EQ(root["cases"].size(), 40u);
  for (const auto& c : root["cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    const std::string text = c["text"];
    EXPECT_EQ(tok.tokenize(text), c["tokens"].get<std::vector<std::string>>());
    EXPECT_EQ(tok.encode(text), ids_of(c["ids_no_special"]));
    const Encoding single = tok.encode_for_model(text);
    EXPECT_EQ(single.ids, ids_of(c["ids"]));
    EXPECT_EQ(single.type_ids, ids_of(c["token_type_ids"]));
    EXPECT_EQ(single.attention_mask, std::vector<int32_t>(single.ids.size(), 1));
    const std::string pair = c["text_pair"];
    const Encoding both = tok.encode_for_model(text, pair);
    EXPECT_EQ(both.ids, ids_of(c["pair_ids"]));
    EXPECT_EQ(both.type_ids, ids_of(c["pair_token_type_ids"]));
    EXPECT_EQ(both.attention_mask, std::vector<int32_t>(both.ids.size(), 1));
  }
}

TEST(UnigramFixtures, DebertaCasesExactWithTruncation) {
  const auto& tok = fixture_tokenizer();
  const auto root = test::load_json(test::fixture("deberta/cases.json"));
  size_t truncated = 0;
  for (const auto& c : root["cases"]) {
    const std::string call = c["tokenizer_call"];
    SCOPED_TRACE(call);
    const std::string text = c["text"];
    std::optional<std::string> pair;
    if (c["text_pair"].is_string()) pair = c["text_pair"].get<std::string>();
    size_t max_length = 0;
    if (const auto at = call.find("max_length="); at != std::string::npos) max_length = std::stoul(call.substr(at + 11));
    const Encoding encoding = pair ? tok.encode_for_model(text, *pair, max_length) : tok.encode_for_model(text, std::nullopt, max_length);
    EXPECT_EQ(encoding.ids, ids_of(c["input_ids"]));
    EXPECT_EQ(encoding.type_ids, ids_of(c["token_type_ids"]));
    EXPECT_EQ(encoding.attention_mask, ids_of(c["attention_mask"]));
    std::vector<std::string> tokens;
    for (int32_t id : encoding.ids) tokens.push_back(tok.id_to_token(id));
    EXPECT_EQ(tokens, c["tokens"].get<std::vector<std::string>>());
    if (c.contains("untruncated_len") && !c["untruncated_len"].is_null()) {
      ++truncated;
      const Encoding full = pair ? tok.encode_for_model(text, *pair) : tok.encode_for_model(text);
      EXPECT_EQ(full.ids.size(), c["untruncated_len"].get<size_t>());
    }
  }
  EXPECT_EQ(truncated, 3u);
}

TEST(UnigramFixtures, BatchRowsExact) {
  const auto& tok = fixture_tokenizer();
  const auto root = test::load_json(test::fixture("deberta/cases.json"));
  ASSERT_TRUE(root.contains("batch"));
  const auto& batch = root["batch"];
  const auto& rows = batch.contains("rows") ? batch["rows"] : batch;
  size_t checked = 0;
  for (const auto& row : rows) {
    if (!row.is_object() || !row.contains("text") || !row.contains("input_ids")) continue;
    // tok(texts, text_pairs, padding=True, truncation=True, max_length=64)
    const Encoding e = tok.encode_for_model(row["text"].get<std::string>(), row["text_pair"].get<std::string>(), 64);
    auto padded = ids_of(row["input_ids"]);
    auto mask = ids_of(row["attention_mask"]);
    size_t real = 0;
    for (int32_t m : mask) real += m;
    padded.resize(real);
    EXPECT_EQ(e.ids, padded);
    for (size_t i = real; i < mask.size(); ++i) EXPECT_EQ(ids_of(row["input_ids"])[i], *tok.pad_id());
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}
