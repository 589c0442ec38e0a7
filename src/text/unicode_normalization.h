// Unicode normalization forms (NFC, NFD, NFKC, NFKD) for tokenizer.json normalizers, from generated tables
// (scripts/gen_unicode_normalization.py): full decomposition, canonical ordering, canonical composition.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace guardkit::text::unicode {

enum class NormalizationForm { NFC, NFD, NFKC, NFKD };

// `text` must be valid UTF-8.
std::string normalize(std::string_view text, NormalizationForm form);

struct CombiningClass {
  char32_t cp;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  uint32_t canonical_offset, canonical_length;  // into kDecompositionData
  uint32_t compat_offset, compat_length;
};
struct Composition {
  char32_t first, second, composite;
};
extern const CombiningClass kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const char32_t kDecompositionData[];
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];
extern const size_t kCompositionCount;

}  // namespace guardkit::text::unicode
