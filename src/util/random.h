// Portable seeded randomness: the same seed gives the same draws with every compiler and standard library.
// std::uniform_int_distribution, std::discrete_distribution, std::shuffle and std::generate_canonical are specified
// only loosely, so libstdc++ and libc++ (and their versions) turn one engine stream into different results. Everything
// here is defined by the few lines below:
//   mix64(z)         SplitMix64's finalizer (Steele, Lea, Flood 2014): a bijection that scatters nearby inputs
//   Rng::next()      SplitMix64: state += 0x9E3779B97F4A7C15, return mix64(state)
//   below(n)         next() % n, redrawn while next() >= 2^64 - (2^64 mod n) (no modulo bias)
//   uniform()        the top 53 bits of next() times 2^-53, in [0, 1)
//   shuffle(v)       Fisher-Yates from the back: for i = n-1 .. 1 swap v[i] with v[below(i + 1)]
//   pick(weights)    the first index whose running weight sum exceeds uniform() * total (WeightedPicker)
//   derive_seed(s,i) mix64(mix64(s) + 0x9E3779B97F4A7C15 * (i + 1)), low 31 bits
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace guardkit {

inline constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The seed of item `index` of a run seeded with `seed` (one request, one trial). Runs seeded s and s + 1 share no
// shifted streams, as they would with seed + index. 31 bits, because servers read the OpenAI "seed" field as a
// 32-bit integer (llama.cpp) or a signed one.
constexpr uint64_t derive_seed(uint64_t seed, uint64_t index) {
  return mix64(mix64(seed) + kGoldenGamma * (index + 1)) & 0x7FFFFFFFULL;
}

// FNV-1a, 64 bit: a stable hash of bytes for fingerprints and for seeds keyed by a name.
constexpr uint64_t fnv1a64(std::string_view bytes, uint64_t hash = 0xCBF29CE484222325ULL) {
  for (const char c : bytes) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001B3ULL;
  return hash;
}

class Rng {
 public:
  explicit constexpr Rng(uint64_t seed) : state_(seed) {}

  constexpr uint64_t next() {
    state_ += kGoldenGamma;
    return mix64(state_);
  }
  constexpr uint64_t operator()() { return next(); }

  // Uniform in [0, n), n > 0.
  uint64_t below(uint64_t n) {
    if (n == 0) fail("Rng::below: the range is empty");
    const uint64_t reject_from = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
    for (;;)
      if (const uint64_t x = next(); x < reject_from) return x % n;
  }

  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  template <typename T>
  void shuffle(std::vector<T>& items) {
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[below(i)]);
  }

  // An index drawn with probability weights[i] / sum(weights) (WeightedPicker, for one draw).
  size_t pick(const std::vector<double>& weights);

 private:
  uint64_t state_;
};

// Many draws from fixed weights (finite, non-negative, not all 0): the running sums once, a binary search a draw.
class WeightedPicker {
 public:
  explicit WeightedPicker(const std::vector<double>& weights) {
    double total = 0.0;
    for (size_t i = 0; i < weights.size(); ++i) {
      const double w = weights[i];
      if (!(w >= 0.0 && w <= std::numeric_limits<double>::max())) fail("weighted draw: weight {} is not usable", w);
      total += w;
      running_.push_back(total);
      if (w > 0.0) last_positive_ = i;
    }
    if (!(total > 0.0)) fail("weighted draw: the weights sum to 0");
  }

  // The first index whose running sum exceeds uniform() * total (a zero weight is never drawn).
  size_t operator()(Rng& rng) const {
    const double target = rng.uniform() * running_.back();
    const size_t i = static_cast<size_t>(std::upper_bound(running_.begin(), running_.end(), target) - running_.begin());
    return std::min(i, last_positive_);  // rounding can leave the target at the very top
  }

 private:
  std::vector<double> running_;
  size_t last_positive_ = 0;
};

inline size_t Rng::pick(const std::vector<double>& weights) { return WeightedPicker(weights)(*this); }

}  // namespace guardkit
