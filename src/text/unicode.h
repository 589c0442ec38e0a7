// Unicode character properties and UTF-8 helpers for the tokenizers: general categories (generated table, see
// scripts/gen_unicode_tables.py), White_Space, and lossy UTF-8 decoding as Rust's String::from_utf8_lossy does it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace guardkit::text::unicode {

// Unicode general categories; the numbering is the generator's CATEGORIES order.
enum Category : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co,
  kCategoryCount
};

extern const char* const kUnicodeVersion;
extern const uint16_t kCategoryStage1[0x110000 >> 8];
extern const uint8_t kCategoryStage2[];

inline Category category(char32_t cp) {
  if (cp >= 0x110000) return Cn;
  return static_cast<Category>(kCategoryStage2[(static_cast<size_t>(kCategoryStage1[cp >> 8]) << 8) | (cp & 0xff)]);
}

inline bool is_letter(char32_t cp) {  // \p{L}
  const Category c = category(cp);
  return c >= Lu && c <= Lo;
}
inline bool is_number(char32_t cp) {  // \p{N}
  const Category c = category(cp);
  return c >= Nd && c <= No;
}
inline bool is_mark(char32_t cp) {  // \p{M}
  const Category c = category(cp);
  return c >= Mn && c <= Me;
}

// The White_Space property (what \s means in Unicode-aware regex engines such as Rust's regex and Oniguruma).
inline bool is_whitespace(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0d);
  return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

// Decodes one UTF-8 sequence of valid UTF-8 at s[i]; advances i. Input must already be valid (see make_valid_utf8).
inline char32_t decode_utf8(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  if (b0 < 0xe0) {
    char32_t cp = ((b0 & 0x1f) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3f);
    i += 2;
    return cp;
  }
  if (b0 < 0xf0) {
    char32_t cp = ((b0 & 0x0f) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3f) << 6) |
                  (static_cast<unsigned char>(s[i + 2]) & 0x3f);
    i += 3;
    return cp;
  }
  char32_t cp = ((b0 & 0x07) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3f) << 12) |
                ((static_cast<unsigned char>(s[i + 2]) & 0x3f) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3f);
  i += 4;
  return cp;
}

void append_utf8(std::string& out, char32_t cp);

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not valid UTF-8.
size_t valid_utf8_length(std::string_view s, size_t i);

bool is_valid_utf8(std::string_view s);

// `s` with every maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy, Python's
// errors="replace"): how Hugging Face tokenizers see bytes that are not UTF-8.
std::string make_valid_utf8(std::string_view s);

}  // namespace guardkit::text::unicode
