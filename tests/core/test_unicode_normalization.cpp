// NFC/NFD/NFKC/NFKD against hand-checked cases from the Unicode standard's examples, and the normalizer of a
// tokenizer.json (Qwen2-style NFC before byte-level BPE).
#include <gtest/gtest.h>

#include <random>

#include "bpe_test_text.h"
#include "text/unicode.h"
#include "text/unicode_normalization.h"

using guardkit::text::unicode::normalize;
using Form = guardkit::text::unicode::NormalizationForm;

TEST(UnicodeNormalization, StandardExamples) {
  // Decomposed e + acute composes; composed stays composed; NFD splits it.
  EXPECT_EQ(normalize("e\u0301", Form::NFC), "\u00e9");
  EXPECT_EQ(normalize("\u00e9", Form::NFC), "\u00e9");
  EXPECT_EQ(normalize("\u00e9", Form::NFD), "e\u0301");
  // Singletons: Angstrom sign and Ohm sign become A-ring and Omega under every form.
  EXPECT_EQ(normalize("\u212b", Form::NFC), "\u00c5");
  EXPECT_EQ(normalize("\u2126", Form::NFD), "\u03a9");
  // Canonical ordering: dot below (ccc 220) sorts before dot above (ccc 230); NFC then builds s-dot-below-dot-above.
  EXPECT_EQ(normalize("s\u0307\u0323", Form::NFD), "s\u0323\u0307");
  EXPECT_EQ(normalize("s\u0307\u0323", Form::NFC), "\u1e69");
  // Blocked: a second mark of the same class cannot compose past the first.
  EXPECT_EQ(normalize("a\u0301\u0301", Form::NFC), "\u00e1\u0301");
  // Composition exclusion: U+0958 (Devanagari qa) decomposes and never recomposes.
  EXPECT_EQ(normalize("\u0958", Form::NFC), "\u0915\u093c");
  // Hangul: jamo compose to a syllable (with and without a trailing consonant) and decompose back.
  EXPECT_EQ(normalize("\u1100\u1161", Form::NFC), "\uac00");
  EXPECT_EQ(normalize("\u1100\u1161\u11a8", Form::NFC), "\uac01");
  EXPECT_EQ(normalize("\uac01", Form::NFD), "\u1100\u1161\u11a8");
  // Compatibility forms: ligature, full-width, superscript, and the ſ + dot above of UAX #15's example.
  EXPECT_EQ(normalize("\ufb01", Form::NFKC), "fi");
  EXPECT_EQ(normalize("\ufb01", Form::NFC), "\ufb01");
  EXPECT_EQ(normalize("\uff21\uff11", Form::NFKC), "A1");
  EXPECT_EQ(normalize("x\u00b2", Form::NFKD), "x2");
  EXPECT_EQ(normalize("\u1e9b\u0323", Form::NFC), "\u1e9b\u0323");
  EXPECT_EQ(normalize("\u1e9b\u0323", Form::NFD), "\u017f\u0323\u0307");
  EXPECT_EQ(normalize("\u1e9b\u0323", Form::NFKC), "\u1e69");
  EXPECT_EQ(normalize("\u1e9b\u0323", Form::NFKD), "s\u0323\u0307");
  // A leading combining mark stays; ASCII is untouched.
  EXPECT_EQ(normalize("\u0301e", Form::NFC), "\u0301e");
  EXPECT_EQ(normalize("plain ascii", Form::NFKC), "plain ascii");
}

TEST(UnicodeNormalization, FormsAreIdempotentAndConsistent) {
  std::mt19937 rng(3);
  for (int k = 0; k < 500; ++k) {
    const std::string text = guardkit::test::random_text(rng, 30) + "e\u0301\u0323\u1100\u1161\ufb01";
    for (Form form : {Form::NFC, Form::NFD, Form::NFKC, Form::NFKD}) {
      const std::string once = normalize(text, form);
      ASSERT_TRUE(guardkit::text::unicode::is_valid_utf8(once));
      ASSERT_EQ(normalize(once, form), once) << text;
    }
    // NFC(NFD(x)) == NFC(x) and NFKC(NFKD(x)) == NFKC(x).
    ASSERT_EQ(normalize(normalize(text, Form::NFD), Form::NFC), normalize(text, Form::NFC)) << text;
    ASSERT_EQ(normalize(normalize(text, Form::NFKD), Form::NFKC), normalize(text, Form::NFKC)) << text;
  }
}
