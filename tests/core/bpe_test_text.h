// Seeded random text for the tokenizer tests: characters from every class the pre-tokenizer regexes distinguish
// (letters of several scripts, digits and other numbers, each kind of whitespace, apostrophes and contraction
// letters, punctuation, emoji, combining marks) and fragments that exercise special-token matching.
#pragma once
#include "text/unicode.h"
#include <random>
#include <string>
#include <vector>

namespace guardkit::test {

inline std::string random_text(std::mt19937& rng, size_t max_chars) {
  static const std::vector<char32_t> pool = {
      'a', 'b', 'e', 'l', 'm', 'r', 's', 't', 'v', 'd', 'S', 'T', 'L', 'D', 'M', 'R', 'V', 'E', 'Z', '0', '1', '7', '9',
      ' ', ' ', ' ', '\t', '\n', '\n', '\r', '\v', '\f', '\'', '\'', '.', ',', '!', '?', '-', '_', '"', '<', '|', '>',
      '(', ')', '#', '$', '/', '\\', 0x17f /* long s */, 0x212a /* Kelvin */, 0xe9, 0xdf, 0x416, 0x436, 0x3b1,
      0x4e2d, 0x6587, 0x3042, 0xd55c, 0x5d0, 0x627, 0x915, 0xe01, 0x1f600, 0x1f44d, 0x2764, 0xfe0f, 0x200d, 0x301,
      0x308, 0xa0, 0x3000, 0x85, 0xfeff, 0x2028, 0x2029, 0x1680, 0x2009, 0x202f, 0x663 /* Arabic-Indic 3 */,
      0x216b /* Roman XII, Nl */, 0xbd /* 1/2, No */, 0xb2, 0xff11 /* fullwidth 1 */, 0x1d400 /* math bold A */,
      0xe000 /* private use */, 0x378 /* unassigned */};
  static const std::vector<std::string> fragments = {"'s", "'LL", "'Re", "<|eot_id|>", "<|begin_of_text|>", "[CTRL]",
                                                     "<name>", "hello", " world", "\r\n", "   ", "12345"};
  std::string out;
  const size_t n = std::uniform_int_distribution<size_t>(0, max_chars)(rng);
  for (size_t k = 0; k < n; ++k) {
    if (rng() % 10 == 0) out += fragments[rng() % fragments.size()];
    else guardkit::text::unicode::append_utf8(out, pool[rng() % pool.size()]);
  }
  return out;
}

// Random bytes, often not UTF-8 (lone continuation bytes, truncated sequences, surrogates, overlongs).
inline std::string random_bytes(std::mt19937& rng, size_t max_len) {
  static const std::vector<std::string> nasty = {"\x80", "\xbf", "\xc0\xaf", "\xc3", "\xe2\x82", "\xed\xa0\x80",
                                                 "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xff", "\xfe", "\xf0\x9f\x98"};
  std::string out;
  const size_t n = std::uniform_int_distribution<size_t>(0, max_len)(rng);
  while (out.size() < n) {
    const unsigned r = rng() % 4;
    if (r == 0) out += nasty[rng() % nasty.size()];
    else if (r == 1) out.push_back(static_cast<char>(rng() % 256));
    else out += random_text(rng, 3);
  }
  return out;
}

}  // namespace guardkit::test
