// The pre-tokenizer regex engine: hand-checked semantics, unsupported syntax errors, and the Llama 3 / GPT-2 fast
// paths agreeing with the general engine on fixture and random text.
#include <gtest/gtest.h>

#include "bpe_test_text.h"
#include "test_util.h"
#include "text/split_regex.h"
#include "util/error.h"

using namespace guardkit;
using guardkit::text::SplitRegex;
using Spans = std::vector<std::pair<size_t, size_t>>;

namespace {
Spans find(std::string_view pattern, std::string_view text, bool fast = true) {
  Spans out;
  SplitRegex(pattern, fast).find_all(text, out);
  return out;
}
std::vector<std::string> pieces(std::string_view pattern, std::string_view text, bool fast = true) {
  std::vector<std::string> out;
  for (const auto& [b, e] : find(pattern, text, fast)) out.emplace_back(text.substr(b, e - b));
  return out;
}
using Strings = std::vector<std::string>;
}  // namespace

TEST(SplitRegex, Semantics) {
  EXPECT_EQ(pieces("a+?", "aaa"), (Strings{"a", "a", "a"}));
  EXPECT_EQ(pieces("(?i:ab)", "AbaBab"), (Strings{"Ab", "aB", "ab"}));
  EXPECT_EQ(pieces("(?i)k", "kK\u212a"), (Strings{"k", "K", "\u212a"}));
  EXPECT_EQ(pieces("\\p{Lu}\\p{Ll}*", "HelloWorld"), (Strings{"Hello", "World"}));
  EXPECT_EQ(find("x(?=y)", "xyxz"), (Spans{{0, 1}}));
  EXPECT_EQ(find("x(?!y)", "xyxz"), (Spans{{2, 3}}));
  EXPECT_EQ(pieces("[^a-c]+", "abxyzc"), (Strings{"xyz"}));
  EXPECT_EQ(pieces("\\d{2,3}", "12345678"), (Strings{"123", "456", "78"}));
  EXPECT_EQ(pieces("\\d{2}", "12345"), (Strings{"12", "34"}));
  EXPECT_EQ(pieces("^a", "aaa"), (Strings{"a"}));
  EXPECT_EQ(pieces("a$", "aaa"), (Strings{"a"}));
  EXPECT_EQ(pieces("\\x{1F600}|\\u00e9", "e\u00e9\U0001F600"), (Strings{"\u00e9", "\U0001F600"}));
  EXPECT_EQ(pieces("ab|a", "aab"), (Strings{"a", "ab"}));  // leftmost-first, not longest
  EXPECT_EQ(pieces("[\\s\\p{N}]+", "a 1\u00a0\u0663b"), (Strings{" 1\u00a0\u0663"}));
  EXPECT_EQ(pieces("\\P{L}+", "ab12cd"), (Strings{"12"}));
  EXPECT_EQ(pieces("\\S+", "ab \u3000cd"), (Strings{"ab", "cd"}));
  EXPECT_EQ(pieces("a*", "baab"), (Strings{"aa"}));  // empty matches are dropped
  EXPECT_EQ(pieces("[.]", "a.b"), (Strings{"."}));
  EXPECT_EQ(pieces(".", "a\nb"), (Strings{"a", "b"}));
  EXPECT_EQ(pieces("(?s).", "a\n"), (Strings{"a", "\n"}));
  EXPECT_EQ(pieces("(?:ab)+", "ababa"), (Strings{"abab"}));
  EXPECT_EQ(pieces("a{2,}", "aaaaa a"), (Strings{"aaaaa"}));
  // Llama 3: a single space before a word joins the word; extra spaces stay apart; newlines gather.
  EXPECT_EQ(pieces(text::kLlama3SplitPattern, "  hello"), (Strings{" ", " hello"}));
  EXPECT_EQ(pieces(text::kLlama3SplitPattern, "a \n\n b"), (Strings{"a", " \n\n", " b"}));
  EXPECT_EQ(pieces(text::kLlama3SplitPattern, "I'M 12345"), (Strings{"I", "'M", " ", "123", "45"}));
  EXPECT_EQ(pieces(text::kLlama3SplitPattern, "x\u017fy'\u017f"), (Strings{"x\u017fy", "'\u017f"}));
  EXPECT_EQ(pieces(text::kGpt2SplitPattern, "I'M 12345"), (Strings{"I", "'", "M", " 12345"}));
}

TEST(SplitRegex, UnsupportedOrBrokenPatternsAreErrors) {
  for (const char* bad : {"(", ")", "a)", "[a-", "[b-a]", "\\b", "a{2,1}", "(?x)a", "[[:alpha:]]", "a++", "(?<=a)b",
                          "(?<!a)b", "\\p{Greek}", "\\p{", "*a", "a**", "(a*)*", "\\", "\\q", "\\x{110000}", "a&&b]",
                          "[a&&b]"}) {
    try {
      SplitRegex regex(bad);
      // "a&&b]" is fine as literal text outside a class; everything else must have thrown.
      EXPECT_EQ(std::string(bad), "a&&b]") << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  std::string deep(150, '(');
  deep += "a" + std::string(150, ')');
  EXPECT_THROW(SplitRegex{deep}, Error);
  // Catastrophic backtracking ends in an error, not a hang.
  EXPECT_THROW(find("(a|aa)+c", std::string(60, 'a')), Error);
}

TEST(SplitRegex, FastPathsAgreeWithTheGeneralEngine) {
  for (auto pattern : {text::kLlama3SplitPattern, text::kGpt2SplitPattern}) {
    EXPECT_TRUE(SplitRegex(pattern).uses_fast_path());
    EXPECT_FALSE(SplitRegex(pattern, false).uses_fast_path());
    const auto root = test::load_json(test::fixture("llama3_tokenizer/cases.json"));
    for (const auto& c : root["cases"]) {
      const std::string text = c["text"];
      EXPECT_EQ(find(pattern, text, true), find(pattern, text, false)) << c["id"];
    }
    std::mt19937 rng(1234);
    for (int k = 0; k < 400; ++k) {
      const std::string text = test::random_text(rng, 40);
      ASSERT_EQ(find(pattern, text, true), find(pattern, text, false)) << pattern << " on: " << text;
    }
  }
}

TEST(SplitRegex, LongInputsStayLinear) {
  // Whitespace runs make \s+(?!\S) backtrack one step; a megabyte of them must not blow the stack or the budget.
  const std::string spaces(1 << 20, ' ');
  for (bool fast : {true, false}) {
    const auto spans = find(text::kLlama3SplitPattern, spaces + "x", fast);
    ASSERT_EQ(spans.size(), 2u);
    EXPECT_EQ(spans[0], (std::pair<size_t, size_t>{0, (1 << 20) - 1}));
  }
}
