// Duplicate filtering for synthetic instructions: exact duplicates after normalisation, and near duplicates by
// MinHash over word 3-gram shingles with LSH banding (so 100k rows do not cost 100k² comparisons).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace guardkit::augment {

// Lowercase ASCII, punctuation dropped, whitespace runs collapsed: "Write, a POEM!" → "write a poem".
std::string normalize_for_dedup(std::string_view text);

// Jaccard similarity of the word 3-gram shingle sets (exact, for tests and for confirming LSH candidates).
double shingle_jaccard(std::string_view a, std::string_view b);

class NearDuplicateIndex {
 public:
  static constexpr int kHashes = 64, kBands = 16;  // 4 rows a band: pairs at Jaccard 0.8 collide with p ≈ 0.9999

  explicit NearDuplicateIndex(double jaccard_threshold = 0.8) : threshold_(jaccard_threshold) {}

  enum class Verdict { New, ExactDuplicate, NearDuplicate };
  // Checks `text` against everything added so far; adds it when new (or always when `add_anyway`).
  Verdict check_and_add(std::string_view text, bool add_anyway = false);
  size_t size() const { return texts_.size(); }

 private:
  using Signature = std::array<uint64_t, kHashes>;
  Signature signature(const std::string& normalized) const;
  double threshold_;
  std::unordered_set<std::string> exact_;
  std::vector<std::string> texts_;  // normalized
  std::vector<std::unordered_map<uint64_t, std::vector<uint32_t>>> bands_ = std::vector<std::unordered_map<uint64_t, std::vector<uint32_t>>>(kBands);
};

}  // namespace guardkit::augment
