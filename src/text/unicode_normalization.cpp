#include "text/unicode_normalization.h"

#include <algorithm>
#include <vector>

#include "text/unicode.h"

namespace guardkit::text::unicode {
namespace {

// Hangul syllables compose and decompose algorithmically (Unicode chapter 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = kCombiningClasses + kCombiningClassCount;
  const auto* it = std::lower_bound(kCombiningClasses, end, cp,
                                    [](const CombiningClass& e, char32_t c) { return e.cp < c; });
  return it != end && it->cp == cp ? it->ccc : 0;
}

void decompose(char32_t cp, bool compat, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = kDecompositions + kDecompositionCount;
  const auto* it = std::lower_bound(kDecompositions, end, cp,
                                    [](const Decomposition& e, char32_t c) { return e.cp < c; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  const uint32_t offset = compat ? it->compat_offset : it->canonical_offset;
  const uint32_t length = compat ? it->compat_length : it->canonical_length;
  out.append(kDecompositionData + offset, length);
}

char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = kCompositions + kCompositionCount;
  const auto* it = std::lower_bound(kCompositions, end, std::pair{a, b}, [](const Composition& e, std::pair<char32_t, char32_t> k) {
    return e.first < k.first || (e.first == k.first && e.second < k.second);
  });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

// Text that no normalization form changes: below U+00A0 nothing decomposes or combines.
bool trivially_normalized(std::string_view text) {
  for (unsigned char c : text)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

std::string normalize(std::string_view text, NormalizationForm form) {
  if (trivially_normalized(text)) return std::string(text);
  const bool compat = form == NormalizationForm::NFKC || form == NormalizationForm::NFKD;
  const bool compose = form == NormalizationForm::NFC || form == NormalizationForm::NFKC;

  std::u32string cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) decompose(decode_utf8(text, i), compat, cps);

  // Canonical ordering: stable-sort each run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }

  if (compose && !cps.empty()) {
    // Canonical composition: each character joins the last starter unless something in between blocks it.
    size_t starter = 0, write = 1;
    int last_class = combining_class(cps[0]) ? 256 : 0;
    for (size_t read = 1; read < cps.size(); ++read) {
      const char32_t c = cps[read];
      const int cls = combining_class(c);
      const char32_t composite = last_class < cls || last_class == 0 ? compose_pair(cps[starter], c) : 0;
      if (composite && (last_class < cls || (last_class == 0 && write == starter + 1))) {
        cps[starter] = composite;
        continue;
      }
      if (cls == 0) starter = write;
      last_class = cls;
      cps[write++] = c;
    }
    cps.resize(write);
  }

  std::string out;
  out.reserve(text.size());
  for (char32_t cp : cps) append_utf8(out, cp);
  return out;
}

}  // namespace guardkit::text::unicode
