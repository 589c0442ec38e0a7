// SentencePiece's text normalisation, as normalizer.cc does it: the precompiled charsmap (a darts-clone double-array
// trie over UTF-8 bytes whose leaves point into a blob of NUL-terminated replacement strings; longest match wins),
// user-defined symbols copied verbatim, malformed UTF-8 bytes replaced one by one with U+FFFD, leading/trailing/
// repeated spaces removed, a dummy-prefix space added, and spaces escaped as U+2581 "▁".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace guardkit::text {

inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// Length of the UTF-8 character starting with byte `lead`, as SentencePiece's OneCharLen (1 for stray bytes).
inline int utf8_char_length(uint8_t lead) { return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[lead >> 4]; }

// Decodes one character as SentencePiece's DecodeUTF8: returns false for a malformed sequence (then *length = 1),
// true otherwise. A literal U+FFFD counts as valid.
bool decode_utf8_char(std::string_view text, size_t* length, char32_t* codepoint = nullptr);

// The precompiled_charsmap of a NormalizerSpec: uint32 LE trie size, the double array, the replacement strings.
class PrecompiledCharsmap {
 public:
  PrecompiledCharsmap() = default;
  // Throws guardkit::Error naming `source` when the blob is malformed.
  PrecompiledCharsmap(std::string_view blob, const std::string& source);

  bool empty() const { return units_.empty(); }

  // Longest rule matching a prefix of `input`: {bytes consumed, replacement}; {0, ""} when none matches.
  std::pair<size_t, std::string_view> longest_match(std::string_view input) const;

 private:
  std::vector<uint32_t> units_;
  std::string normalized_;  // replacement strings, each NUL-terminated
  std::string source_;
};

struct NormalizerOptions {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool treat_whitespace_as_suffix = false;
};

class SpmNormalizer {
 public:
  SpmNormalizer() = default;
  SpmNormalizer(PrecompiledCharsmap charsmap, NormalizerOptions options, std::vector<std::string> user_defined);

  // The normalised text the segmenter sees ("▁Hello▁world" for "  Hello   world ").
  std::string normalize(std::string_view input) const;
  void normalize(std::string_view input, std::string& out) const;

  const NormalizerOptions& options() const { return options_; }

 private:
  // One normalisation step at the start of `input`: {replacement, bytes consumed}.
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view input) const;
  size_t user_defined_match(std::string_view input) const;

  PrecompiledCharsmap charsmap_;
  NormalizerOptions options_;
  std::vector<std::string> user_defined_;  // longest first
  bool user_defined_first_byte_[256] = {};
};

}  // namespace guardkit::text
