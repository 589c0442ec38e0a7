#include "augment/dedup.h"

#include <algorithm>
#include <cctype>
#include <set>

namespace guardkit::augment {
namespace {

uint64_t fnv1a(std::string_view s, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::vector<std::string> shingles(const std::string& normalized) {
  std::vector<std::string> words;
  size_t pos = 0;
  while (pos < normalized.size()) {
    size_t end = normalized.find(' ', pos);
    if (end == std::string::npos) end = normalized.size();
    if (end > pos) words.push_back(normalized.substr(pos, end - pos));
    pos = end + 1;
  }
  std::vector<std::string> out;
  if (words.size() < 3) {  // short texts: the whole text is the one shingle
    if (!normalized.empty()) out.push_back(normalized);
    return out;
  }
  for (size_t i = 0; i + 3 <= words.size(); ++i) out.push_back(words[i] + ' ' + words[i + 1] + ' ' + words[i + 2]);
  return out;
}

}  // namespace

std::string normalize_for_dedup(std::string_view text) {
  std::string out;
  bool space = false;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c >= 0x80) {
      if (space && !out.empty()) out += ' ';
      space = false;
      out += static_cast<char>(std::tolower(c));
    } else if (std::isspace(c) || std::ispunct(c)) {
      space = true;
    }
  }
  return out;
}

double shingle_jaccard(std::string_view a, std::string_view b) {
  auto sa = shingles(normalize_for_dedup(a)), sb = shingles(normalize_for_dedup(b));
  std::set<std::string> A(sa.begin(), sa.end()), B(sb.begin(), sb.end());
  if (A.empty() && B.empty()) return 1.0;
  size_t inter = 0;
  for (const auto& s : A) inter += B.count(s);
  return static_cast<double>(inter) / static_cast<double>(A.size() + B.size() - inter);
}

NearDuplicateIndex::Signature NearDuplicateIndex::signature(const std::string& normalized) const {
  Signature sig;
  sig.fill(UINT64_MAX);
  for (const auto& sh : shingles(normalized)) {
    const uint64_t base = fnv1a(sh, 0);
    for (int k = 0; k < kHashes; ++k) sig[k] = std::min(sig[k], mix(base ^ (0xA5A5A5A5ULL * (k + 1))));
  }
  return sig;
}

NearDuplicateIndex::Verdict NearDuplicateIndex::check_and_add(std::string_view text, bool add_anyway) {
  const std::string normalized = normalize_for_dedup(text);
  if (exact_.count(normalized)) return Verdict::ExactDuplicate;
  const Signature sig = signature(normalized);
  constexpr int rows = kHashes / kBands;
  std::vector<uint64_t> band_keys(kBands);
  std::set<uint32_t> candidates;
  for (int b = 0; b < kBands; ++b) {
    uint64_t key = 0;
    for (int r = 0; r < rows; ++r) key = mix(key ^ sig[b * rows + r]);
    band_keys[b] = key;
    if (auto it = bands_[b].find(key); it != bands_[b].end()) candidates.insert(it->second.begin(), it->second.end());
  }
  Verdict verdict = Verdict::New;
  for (uint32_t c : candidates) {
    if (shingle_jaccard(normalized, texts_[c]) >= threshold_) {
      verdict = Verdict::NearDuplicate;
      break;
    }
  }
  if (verdict == Verdict::New || add_anyway) {
    const auto id = static_cast<uint32_t>(texts_.size());
    texts_.push_back(normalized);
    exact_.insert(normalized);
    for (int b = 0; b < kBands; ++b) bands_[b][band_keys[b]].push_back(id);
  }
  return verdict;
}

}  // namespace guardkit::augment
