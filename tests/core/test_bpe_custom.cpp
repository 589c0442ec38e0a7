// A tiny tokenizer.json built here, with a different split regex, merges, added tokens, post-processor and model
// options than Llama 3, to show the implementation follows the file rather than assuming Llama 3; plus malformed
// files and unsupported components, which must give one-line errors.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"
#include "text/bpe_tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::text::BpeTokenizer;
using json = nlohmann::json;

namespace {

// GPT-2's byte -> printable character map, written out independently of the implementation.
std::string byte_char(int b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
      const int cp = printable ? i : 256 + extra++;
      std::string s;
      if (cp < 0x80) s.push_back(static_cast<char>(cp));
      else {
        s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
      }
      t[i] = s;
    }
    return t;
  }();
  return table[b];
}

// Byte-level vocabulary: id = byte value for the 256 single characters, then merged tokens from 256 on.
json tiny_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["hello"] = 259;
  vocab[byte_char(' ') + "w"] = 260;  // "Ġw"
  vocab["abc"] = 261;                 // reachable only through ignore_merges
  json merges = json::array({"h e", "l l", "he ll", "hell o", byte_char(' ') + " w"});
  json added = json::array({
      {{"id", 262}, {"content", "[CTRL]"}, {"special", true}, {"normalized", false}, {"lstrip", false},
       {"rstrip", false}, {"single_word", false}},
      {{"id", 263}, {"content", "<name>"}, {"special", false}, {"normalized", false}, {"lstrip", true},
       {"rstrip", false}, {"single_word", false}},
      {{"id", 264}, {"content", "[BOS]"}, {"special", true}, {"normalized", false}},
      {{"id", 265}, {"content", "[EOS]"}, {"special", true}, {"normalized", false}},
  });
  json post = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "[BOS]"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"SpecialToken", {{"id", "[EOS]"}, {"type_id", 0}}}}})},
      {"pair", json::array({{{"SpecialToken", {{"id", "[BOS]"}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            {{"SpecialToken", {{"id", "[EOS]"}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}},
                            {{"SpecialToken", {{"id", "[EOS]"}, {"type_id", 1}}}}})},
      {"special_tokens", {{"[BOS]", {{"id", "[BOS]"}, {"ids", {264}}, {"tokens", {"[BOS]"}}}},
                          {"[EOS]", {{"id", "[EOS]"}, {"ids", {265}}, {"tokens", {"[EOS]"}}}}}}};
  // Digits one by one, everything else between spaces as one piece, runs of spaces on their own.
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               json::array({{{"type", "Split"}, {"pattern", {{"Regex", "\\d|[^\\d ]+| +"}}}, {"behavior", "Isolated"},
                             {"invert", false}},
                            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                             {"use_regex", false}}})}};
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor", post},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
            {"vocab", vocab}, {"merges", merges}}}};
}

std::unique_ptr<BpeTokenizer> load(const json& j) { return BpeTokenizer::from_json(j, nullptr, "tiny/tokenizer.json"); }

std::vector<int32_t> bytes_of(std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

template <typename... V>
std::vector<int32_t> cat(V... parts) {
  std::vector<int32_t> out;
  (out.insert(out.end(), parts.begin(), parts.end()), ...);
  return out;
}

// Expects loading `j` to fail with a guardkit::Error whose message contains `needle`.
void expect_load_error(const json& j, const std::string& needle) {
  try {
    load(j);
    ADD_FAILURE() << "no error; expected one mentioning \"" << needle << "\"";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(needle), std::string::npos) << what;
    EXPECT_NE(what.find("tiny/tokenizer.json"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
  }
}

}  // namespace

TEST(BpeCustom, FollowsTheFilesRegexAndMerges) {
  auto tok = load(tiny_tokenizer());
  // The file's regex isolates each digit ("42" -> "4", "2"), unlike Llama 3's \p{N}{1,3}.
  EXPECT_EQ(tok->encode("hello 42"), (std::vector<int32_t>{259, ' ', '4', '2'}));
  // Merges apply by rank: "he"+"ll" -> "hell", then "hell"+"o"; "hellx" stops at "hell".
  EXPECT_EQ(tok->encode("hellx"), (std::vector<int32_t>{258, 'x'}));
  EXPECT_EQ(tok->encode("llhe"), (std::vector<int32_t>{257, 256}));
  // " +" is its own piece, so "Ġw" (260) never forms here although it is a merge.
  EXPECT_EQ(tok->encode("a w"), (std::vector<int32_t>{'a', ' ', 'w'}));
  // Without ignore_merges a vocabulary word that merges cannot build is split.
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{'a', 'b', 'c'}));
  // Non-ASCII goes through the byte alphabet.
  EXPECT_EQ(tok->encode("é"), bytes_of("é"));
  EXPECT_EQ(tok->vocab_size(), 266u);
}

TEST(BpeCustom, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  json j = tiny_tokenizer();
  j["model"]["ignore_merges"] = true;
  auto tok = load(j);
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{261}));
  EXPECT_EQ(tok->encode("abcd"), (std::vector<int32_t>{'a', 'b', 'c', 'd'}));
}

TEST(BpeCustom, GptStyleByteLevelRegexAndPrefixSpace) {
  json j = tiny_tokenizer();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  auto tok = load(j);
  // " world" is one GPT-2 piece, so the "Ġ w" merge applies; the prefix space makes "hello" -> "Ġhello".
  EXPECT_EQ(tok->encode("hello world"), cat(std::vector<int32_t>{' '}, std::vector<int32_t>{259},
                                            std::vector<int32_t>{260}, bytes_of("orld")));
  EXPECT_EQ(tok->decode(tok->encode("hello world"), false, false), " hello world");
}

TEST(BpeCustom, SplitBehaviours) {
  json j = tiny_tokenizer();
  auto& split = j["pre_tokenizer"]["pretokenizers"][0];
  split["pattern"] = {{"String", " "}};
  split["behavior"] = "Removed";
  EXPECT_EQ(load(j)->encode("hello  world"), cat(std::vector<int32_t>{259}, bytes_of("world")));
  split["behavior"] = "MergedWithNext";  // " world" is one piece, so "Ġw" merges
  EXPECT_EQ(load(j)->encode("hello world"), cat(std::vector<int32_t>{259, 260}, bytes_of("orld")));
  split["behavior"] = "MergedWithPrevious";  // "hello " and "world"
  EXPECT_EQ(load(j)->encode("hello world"), cat(std::vector<int32_t>{259, ' '}, bytes_of("world")));
  split["behavior"] = "Isolated";
  split["invert"] = true;  // the text between spaces is the match: still isolated pieces
  EXPECT_EQ(load(j)->encode("he llo"), (std::vector<int32_t>{256, ' ', 257, 'o'}));
  split["behavior"] = "Sideways";
  expect_load_error(j, "behavior");
}

TEST(BpeCustom, AddedTokensBothModes) {
  auto tok = load(tiny_tokenizer());
  // Special token: recognised by default, plain text when parse_special is off.
  EXPECT_EQ(tok->encode("hello[CTRL]"), (std::vector<int32_t>{259, 262}));
  EXPECT_EQ(tok->encode("hello[CTRL]", false), cat(std::vector<int32_t>{259}, bytes_of("[CTRL]")));
  // Non-special added token: matched in both modes; lstrip takes the spaces before it.
  EXPECT_EQ(tok->encode("he  <name>"), (std::vector<int32_t>{256, 263}));
  EXPECT_EQ(tok->encode("he  <name>", false), (std::vector<int32_t>{256, 263}));
  EXPECT_TRUE(tok->is_special(262));
  EXPECT_FALSE(tok->is_special(263));
  EXPECT_EQ(tok->token_to_id("[CTRL]"), 262);
  EXPECT_EQ(tok->id_to_token(263), "<name>");
}

TEST(BpeCustom, TemplateAndDecoding) {
  auto tok = load(tiny_tokenizer());
  const auto single = tok->encode_for_model("hello");
  EXPECT_EQ(single.ids, (std::vector<int32_t>{264, 259, 265}));
  const auto pair = tok->encode_for_model("hello", std::string_view("he"));
  EXPECT_EQ(pair.ids, (std::vector<int32_t>{264, 259, 265, 256, 265}));
  EXPECT_EQ(pair.type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(tok->decode(pair.ids, false, false), "[BOS]hello[EOS]he[EOS]");
  EXPECT_EQ(tok->decode(pair.ids, true, false), "hellohe");
  // Default cleanup (no tokenizer_config.json: transformers' default true) removes the space before '.'.
  EXPECT_EQ(tok->decode(tok->encode("he .")), "he.");
  EXPECT_EQ(tok->decode(tok->encode("he ."), false, false), "he .");
  // Ids beyond the vocabulary are skipped, as tokenizers does; a split UTF-8 sequence decodes to U+FFFD.
  EXPECT_EQ(tok->decode({259, 99999, -5}, false, false), "hello");
  EXPECT_EQ(tok->decode({0xc3}, false, false), "\xef\xbf\xbd");
}

TEST(BpeCustom, WordLevelStyleModelWithUnknownTokens) {
  // A non-byte-level BPE: characters outside the vocabulary become [UNK] (fused when fuse_unk), no decoder.
  json j = {{"added_tokens", json::array()},
            {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
            {"model", {{"type", "BPE"}, {"unk_token", "[UNK]"}, {"fuse_unk", false},
                       {"vocab", {{"[UNK]", 0}, {"a", 1}, {"b", 2}, {"ab", 3}}}, {"merges", {"a b"}}}}};
  EXPECT_EQ(load(j)->encode("ab axyb"), (std::vector<int32_t>{3, 1, 0, 0, 2}));
  EXPECT_EQ(load(j)->decode({3, 1, 0}, false, false), "ab a [UNK]");
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(load(j)->encode("ab axyb"), (std::vector<int32_t>{3, 1, 0, 2}));
  // Merges given as pairs (the newer tokenizer.json format) work the same.
  j["model"]["merges"] = json::array({json::array({"a", "b"})});
  EXPECT_EQ(load(j)->encode("ab"), (std::vector<int32_t>{3}));
}

TEST(BpeCustom, MalformedAndUnsupportedFilesGiveClearErrors) {
  expect_load_error(json::array(), "expected a JSON object");
  {
    json j = tiny_tokenizer();
    j.erase("model");
    expect_load_error(j, "model");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["type"] = "Unigram";
    expect_load_error(j, "not BPE");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["vocab"] = json::array();
    expect_load_error(j, "model.vocab");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["vocab"]["he"] = "256";
    expect_load_error(j, "expected an integer");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["vocab"]["he"] = -3;
    expect_load_error(j, "out of range");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["merges"].push_back("q z9");
    expect_load_error(j, "not in the vocabulary");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["merges"].push_back("abc");
    expect_load_error(j, "two tokens");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["merges"].push_back(7);
    expect_load_error(j, "model.merges[5]");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["dropout"] = 0.1;
    expect_load_error(j, "dropout");
  }
  {
    json j = tiny_tokenizer();
    j["model"]["unk_token"] = "<unk>";
    expect_load_error(j, "unk_token");
  }
  {
    json j = tiny_tokenizer();
    j["normalizer"] = {{"type", "Lowercase"}};
    expect_load_error(j, "normalizer type \"Lowercase\" is not supported");
  }
  {
    json j = tiny_tokenizer();
    j["pre_tokenizer"]["pretokenizers"][0]["type"] = "BertPreTokenizer";
    expect_load_error(j, "pre_tokenizer.pretokenizers[0]");
  }
  {
    json j = tiny_tokenizer();
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(?<=a)b";
    expect_load_error(j, "lookbehind");
  }
  {
    json j = tiny_tokenizer();
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{Han}+";
    expect_load_error(j, "Han");
  }
  {
    json j = tiny_tokenizer();
    j["decoder"] = {{"type", "WordPiece"}};
    expect_load_error(j, "decoder type \"WordPiece\"");
  }
  {
    json j = tiny_tokenizer();
    j["post_processor"] = {{"type", "BertProcessing"}};
    expect_load_error(j, "post-processor type");
  }
  {
    json j = tiny_tokenizer();
    j["post_processor"]["single"][0]["SpecialToken"]["id"] = "[NOPE]";
    expect_load_error(j, "[NOPE]");
  }
  {
    json j = tiny_tokenizer();
    j["added_tokens"][0]["id"] = "x";
    expect_load_error(j, "added_tokens[0].id");
  }
  {
    json j = tiny_tokenizer();
    json nested = {{"type", "ByteLevel"}};
    for (int k = 0; k < 200; ++k) nested = {{"type", "Sequence"}, {"pretokenizers", json::array({nested})}};
    j["pre_tokenizer"] = nested;
    expect_load_error(j, "nested too deeply");
  }
}

TEST(BpeCustom, FromFileErrorsNameTheFile) {
  const auto dir = test::temp_dir("bpe_custom");
  EXPECT_THROW(BpeTokenizer::from_file(dir / "missing.json"), Error);
  {
    std::ofstream(dir / "tokenizer.json") << "{\"model\": {";
  }
  try {
    BpeTokenizer::from_file(dir / "tokenizer.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  // A tokenizer_config.json next to it sets the cleanup default and the bos/eos/pad tokens.
  {
    std::ofstream(dir / "tokenizer.json") << tiny_tokenizer().dump();
    std::ofstream(dir / "tokenizer_config.json")
        << R"({"clean_up_tokenization_spaces": false, "bos_token": "[BOS]", "eos_token": {"content": "[EOS]"}, "pad_token": "[CTRL]"})";
  }
  auto tok = BpeTokenizer::from_file(dir / "tokenizer.json");
  EXPECT_EQ(tok->decode(tok->encode("he .")), "he .");
  EXPECT_EQ(tok->bos_id(), 264);
  EXPECT_EQ(tok->eos_id(), 265);
  EXPECT_EQ(tok->pad_id(), 262);
  std::filesystem::remove_all(dir);
}

TEST(BpeCustom, NormalizerRunsBeforeSplitting) {
  json j = tiny_tokenizer();
  // NFC first: a decomposed "é" becomes the two UTF-8 bytes of U+00E9 before the byte-level BPE sees it.
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Strip"}}})}};
  auto tok = load(j);
  EXPECT_EQ(tok->encode("  e\u0301 "), bytes_of("\u00e9"));
  EXPECT_EQ(tok->encode("\ufb01"), bytes_of("\ufb01"));  // NFC keeps the ligature
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_EQ(load(j)->encode("\ufb01"), bytes_of("fi"));
}

namespace {
// A SentencePiece-style BPE (Llama 2 / Mistral layout): "▁" for spaces, byte fallback, fused unknowns.
json sentencepiece_style(bool legacy_normalizer) {
  const std::string u = "\u2581";
  json vocab = {{"<unk>", 0}, {"<s>", 1},  {"</s>", 2}, {u, 3},  {"h", 4},       {"i", 5},        {u + "h", 6},
                {u + "hi", 7}, {"t", 8}, {"e", 9},    {"r", 10}, {u + "t", 11}, {"he", 12}, {"<0xC3>", 13}, {"<0xA9>", 14}};
  json j = {{"added_tokens", json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}}})},
            {"post_processor", {{"type", "TemplateProcessing"},
                                {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                                {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}}}}}}},
            {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                       {"vocab", vocab}, {"merges", {u + " h", u + "h i", u + " t", "h e"}}}}};
  if (legacy_normalizer) {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", u}},
                                                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", u}}})}};
    j["pre_tokenizer"] = nullptr;
    j["decoder"] = {{"type", "Sequence"},
                    {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", u}}}, {"content", " "}},
                                              {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  } else {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", u}, {"prepend_scheme", "first"}, {"split", false}};
    j["decoder"] = {{"type", "Metaspace"}, {"replacement", u}, {"prepend_scheme", "first"}};
  }
  return j;
}
}  // namespace

TEST(BpeCustom, SentencePieceStyleLegacyNormalizer) {
  auto tok = load(sentencepiece_style(true));
  // "▁hi▁there": merges by rank give ▁hi, ▁t, he, r, e.
  EXPECT_EQ(tok->encode("hi there"), (std::vector<int32_t>{7, 11, 12, 10, 9}));
  EXPECT_EQ(tok->decode({7, 11, 12, 10, 9}, false, false), "hi there");
  // Byte fallback for é (C3 A9); ö has no <0xB6>, so it is one [UNK].
  EXPECT_EQ(tok->encode("\u00e9"), (std::vector<int32_t>{3, 13, 14}));
  EXPECT_EQ(tok->decode({3, 13, 14}, false, false), "\u00e9");
  EXPECT_EQ(tok->encode("\u00f6\u00f6"), (std::vector<int32_t>{3, 0}));
  // The normalizer runs on each piece between added tokens, so "hi" after <s> gets its own "▁" (HF's legacy).
  EXPECT_EQ(tok->encode("hi<s>hi"), (std::vector<int32_t>{7, 1, 7}));
  EXPECT_EQ(tok->encode_for_model("hi").ids, (std::vector<int32_t>{1, 7}));
}

TEST(BpeCustom, MetaspacePreTokenizerAndDecoder) {
  json j = sentencepiece_style(false);
  EXPECT_EQ(load(j)->encode("hi there"), (std::vector<int32_t>{7, 11, 12, 10, 9}));
  // prepend_scheme "first": only the text at the very start gets the "▁".
  EXPECT_EQ(load(j)->encode("hi<s>hi"), (std::vector<int32_t>{7, 1, 4, 5}));
  EXPECT_EQ(load(j)->decode({7, 11, 12, 10, 9}, false, false), "hi there");
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  EXPECT_EQ(load(j)->encode("hi<s>hi"), (std::vector<int32_t>{7, 1, 7}));
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(load(j)->encode("hi"), (std::vector<int32_t>{4, 5}));
  j["pre_tokenizer"]["prepend_scheme"] = "sometimes";
  expect_load_error(j, "prepend_scheme");
}
