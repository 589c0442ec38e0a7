// Bounded, seeded fuzzing of the BPE tokenizer: random and invalid UTF-8 through the Llama 3 tokenizer (valid text
// round-trips exactly, invalid bytes come back as U+FFFD, never a crash), random mutations of a tokenizer.json
// (loading either works or throws guardkit::Error), and random regex patterns (compile or a clear error).
#include <gtest/gtest.h>

#include "bpe_test_text.h"
#include "test_util.h"
#include "text/bpe_tokenizer.h"
#include "text/split_regex.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::text::BpeTokenizer;
using json = nlohmann::json;

namespace {

bool valid_utf8(std::string_view s) {
  // An independent check written for the test: reject overlongs, surrogates, > U+10FFFF, truncation.
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (b < 0x80) { ++i; continue; }
    if ((b & 0xe0) == 0xc0) n = 2, cp = b & 0x1f;
    else if ((b & 0xf0) == 0xe0) n = 3, cp = b & 0x0f;
    else if ((b & 0xf8) == 0xf0) n = 4, cp = b & 0x07;
    else return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n;
  }
  return true;
}

const BpeTokenizer& llama3() {
  static const auto tokenizer = BpeTokenizer::from_file(test::fixture("llama/tokenizer.json"));
  return *tokenizer;
}

json random_value(std::mt19937& rng) {
  switch (rng() % 9) {
    case 0: return nullptr;
    case 1: return rng() % 2 == 0;
    case 2: return static_cast<int>(rng() % 7) - 2;
    case 3: return int64_t{1} << 40;
    case 4: return 2.5;
    case 5: return json::array({"a b", 1, nullptr});
    case 6: return json::object({{"type", "Sequence"}});
    case 7: {
      static const std::vector<std::string> regexish = {"(", "\\p{L}+", "[^a]", "(?i:x)", "a{3}", "\\s+(?!\\S)", "[",
                                                        "\\", "Isolated", "ByteLevel", "Split", "BPE", "<0x41>", ""};
      return regexish[rng() % regexish.size()];
    }
    default: return test::random_bytes(rng, 8);  // may be invalid UTF-8: nlohmann keeps the bytes as they are
  }
}

// Collects pointers to every value inside `j` (objects and arrays included).
void collect(json& j, std::vector<json*>& out) {
  out.push_back(&j);
  if (j.is_object() || j.is_array())
    for (auto& child : j) collect(child, out);
}

json small_tokenizer() {
  json vocab = json::object();
  const std::string letters = "abcdefghijklmnopqrstuvwxyz ";
  int id = 0;
  for (char c : letters) vocab[std::string(1, c)] = id++;
  vocab["ab"] = id++;
  vocab["abc"] = id++;
  vocab["<0x41>"] = id++;
  vocab["[UNK]"] = id++;
  return {{"added_tokens", json::array({{{"id", id}, {"content", "<s>"}, {"special", true}},
                                        {{"id", id + 1}, {"content", "x y"}, {"special", false}, {"lstrip", true},
                                         {"rstrip", true}, {"single_word", true}}})},
          {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", "Q"}}}, {"content", "q"}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", "\\p{L}+|\\s+"}}},
                                            {"behavior", "MergedWithNext"}, {"invert", false}},
                                           {{"type", "Digits"}, {"individual_digits", true}}})}}},
          {"post_processor", {{"type", "TemplateProcessing"},
                              {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                              {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {id}}}}}}}},
          {"decoder", {{"type", "Sequence"}, {"decoders", json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
          {"model", {{"type", "BPE"}, {"unk_token", "[UNK]"}, {"byte_fallback", true}, {"fuse_unk", true},
                     {"vocab", vocab}, {"merges", {"a b", "ab c"}}}}};
}

}  // namespace

TEST(BpeFuzz, RandomAndInvalidUtf8ThroughLlama3) {
  std::mt19937 rng(20261128);
  for (int k = 0; k < 300; ++k) {
    const std::string text = k % 2 == 0 ? test::random_text(rng, 60) : test::random_bytes(rng, 60);
    for (bool parse_special : {true, false}) {
      std::vector<int32_t> ids;
      ASSERT_NO_THROW(ids = llama3().encode(text, parse_special)) << k;
      for (int32_t id : ids) {
        ASSERT_GE(id, 0);
        ASSERT_LT(static_cast<size_t>(id), llama3().vocab_size());
        if (!parse_special) ASSERT_FALSE(llama3().is_special(id)) << k;
      }
      const std::string back = llama3().decode(ids, false, false);
      if (valid_utf8(text)) {
        ASSERT_EQ(back, text) << k;
      } else {
        ASSERT_TRUE(valid_utf8(back)) << k;
        ASSERT_NE(back.find("\xef\xbf\xbd"), std::string::npos) << k;
      }
    }
  }
  // Random ids (in and out of range) decode without crashing, to valid UTF-8.
  for (int k = 0; k < 200; ++k) {
    std::vector<int32_t> ids;
    for (int n = rng() % 20; n > 0; --n) ids.push_back(static_cast<int32_t>(rng() % 130000) - 100);
    ASSERT_TRUE(valid_utf8(llama3().decode(ids, k % 2 == 0, k % 3 == 0)));
  }
}

TEST(BpeFuzz, SmallTokenizerBaseline) {
  auto tok = BpeTokenizer::from_json(small_tokenizer(), nullptr, "fuzz/tokenizer.json");
  // "abc" merges fully; "A" has no token but byte fallback finds <0x41>; digits are unknown ([UNK], fused).
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{28}));
  EXPECT_EQ(tok->encode("A"), (std::vector<int32_t>{29}));
  // Q is normalized to q; " 12" is one piece that Digits splits, so each digit is its own [UNK]...
  EXPECT_EQ(tok->encode("Qz 12"), (std::vector<int32_t>{16, 25, 26, 30, 30}));
  // ...while unknown characters inside one word fuse into one (fuse_unk; no <0xC3> for byte fallback).
  EXPECT_EQ(tok->encode("\u00e9\u00e9"), (std::vector<int32_t>{30}));
  EXPECT_EQ(tok->encode_for_model("ab").ids, (std::vector<int32_t>{31, 27}));
  EXPECT_EQ(tok->decode({29, 0, 1}, false, false), "Aab");
}

TEST(BpeFuzz, TokenizerJsonMutations) {
  std::mt19937 rng(7);
  const json base = small_tokenizer();
  int loaded = 0, rejected = 0;
  for (int k = 0; k < 400; ++k) {
    json j = base;
    for (int m = rng() % 4 == 0 ? 2 : 1; m > 0; --m) {
      std::vector<json*> nodes;
      collect(j, nodes);
      json* target = nodes[rng() % nodes.size()];
      if (target->is_object() && !target->empty() && rng() % 3 == 0) {
        auto it = target->begin();
        std::advance(it, rng() % target->size());
        target->erase(it.key());
      } else {
        *target = random_value(rng);
      }
    }
    std::unique_ptr<BpeTokenizer> tok;
    try {
      tok = BpeTokenizer::from_json(j, nullptr, "fuzz/tokenizer.json");
    } catch (const Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find("fuzz/tokenizer.json"), std::string::npos) << e.what();
      continue;
    } catch (const std::exception& e) {
      FAIL() << "mutation " << k << " threw a non-guardkit exception: " << e.what() << "\n" << j.dump();
    }
    ++loaded;
    for (int t = 0; t < 5; ++t) {
      const std::string text = test::random_bytes(rng, 30);
      try {
        const auto ids = tok->encode(text, t % 2 == 0);
        (void)tok->decode(ids, t % 2 == 1);
        (void)tok->encode_for_model(text, std::string_view("ab c"), 8);
      } catch (const Error&) {
        // A clear error (e.g. a regex that backtracks too much) is acceptable; anything else is not.
      } catch (const std::exception& e) {
        FAIL() << "mutation " << k << " encode threw " << e.what();
      }
    }
  }
  // Both outcomes must actually occur, or the fuzzing is not exercising anything.
  EXPECT_GT(loaded, 10);
  EXPECT_GT(rejected, 20);
}

TEST(BpeFuzz, RandomRegexPatterns) {
  static const std::vector<std::string> atoms = {"a", "b", "\\s", "\\S", "\\p{L}", "\\p{N}", "\\P{L}", "[^\\r\\n]",
                                                 "[a-z]", ".", "(?i:s)", "'", " ", "|", "(", ")", "(?:", "(?=", "(?!",
                                                 "*", "+", "?", "{1,3}", "{2}", "*?", "[", "]", "\\", "^", "$", "\\d",
                                                 "\\w", "-", "{", "}"};
  std::mt19937 rng(99);
  int compiled = 0;
  for (int k = 0; k < 300; ++k) {
    std::string pattern;
    for (int n = 1 + rng() % 8; n > 0; --n) pattern += atoms[rng() % atoms.size()];
    std::optional<text::SplitRegex> regex;
    try {
      regex.emplace(pattern);
    } catch (const Error&) {
      continue;
    }
    ++compiled;
    const std::string text = test::random_text(rng, 40);
    std::vector<std::pair<size_t, size_t>> spans;
    try {
      regex->find_all(text, spans);
    } catch (const Error&) {
      continue;  // too much backtracking: a clear error
    }
    size_t prev = 0;
    for (const auto& [b, e] : spans) {
      ASSERT_LE(prev, b) << pattern;
      ASSERT_LT(b, e) << pattern;
      ASSERT_LE(e, text.size()) << pattern;
      ASSERT_TRUE(valid_utf8(text.substr(b, e - b))) << pattern << " split a character";
      prev = e;
    }
  }
  EXPECT_GT(compiled, 50);
}
