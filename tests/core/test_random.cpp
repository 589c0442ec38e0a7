// util/random.h against sequences computed by hand from the algorithm in its header comment (an independent
// 20-line Python transcription of those lines); SplitMix64's first outputs for seed 1234567 are the published
// reference values of the generator.
#include "util/random.h"

#include <gtest/gtest.h>

#include <set>

namespace guardkit {
namespace {

TEST(PortableRandom, SplitMix64MatchesTheReferenceStream) {
  Rng rng(1234567);
  const uint64_t expected[] = {6457827717110365317ULL, 3203168211198807973ULL, 9817491932198370423ULL,
                               4593380528125082431ULL, 16408922859458223821ULL};
  for (uint64_t value : expected) EXPECT_EQ(rng.next(), value);
}

TEST(PortableRandom, BelowUniformShuffleAndPickGiveFixedSequences) {
  Rng below(42);
  std::vector<uint64_t> digits;
  for (int i = 0; i < 10; ++i) digits.push_back(below.below(10));
  EXPECT_EQ(digits, (std::vector<uint64_t>{3, 1, 8, 4, 0, 2, 5, 8, 5, 4}));

  Rng uniform(42);
  EXPECT_DOUBLE_EQ(uniform.uniform(), 0.7415648787718233);
  EXPECT_DOUBLE_EQ(uniform.uniform(), 0.1599103928769201);
  EXPECT_DOUBLE_EQ(uniform.uniform(), 0.27860113025513866);

  Rng shuffle(7);
  std::vector<int> items{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  shuffle.shuffle(items);
  EXPECT_EQ(items, (std::vector<int>{8, 1, 5, 9, 0, 4, 3, 2, 6, 7}));

  Rng pick(3);
  std::vector<size_t> picks;
  for (int i = 0; i < 12; ++i) picks.push_back(pick.pick({1.0, 0.0, 3.0, 6.0}));
  EXPECT_EQ(picks, (std::vector<size_t>{2, 3, 3, 0, 2, 3, 2, 3, 3, 3, 3, 3}));  // index 1 (weight 0) never
}

TEST(PortableRandom, BelowRedrawsInsteadOfBiasingTheModulo) {
  // n = 2^63 + 1: draws at or above 2^64 - (2^64 mod n) would favour small results; seed 5's second draw is one.
  Rng rng(5);
  const uint64_t n = (1ULL << 63) + 1;
  EXPECT_EQ(rng.below(n), 7134611160154358618ULL);
  EXPECT_EQ(rng.below(n), 4292726422858613063ULL);  // the third raw draw: the second was rejected
  EXPECT_THROW(rng.below(0), Error);
}

TEST(PortableRandom, PickRejectsWeightsItCannotUse) {
  Rng rng(1);
  EXPECT_THROW(rng.pick({0.0, 0.0}), Error);
  EXPECT_THROW(rng.pick({1.0, -1.0}), Error);
  EXPECT_THROW(rng.pick({}), Error);
}

TEST(PortableRandom, DerivedSeedsAreHashedNotShifted) {
  EXPECT_EQ(derive_seed(42, 0), 168179817u);
  EXPECT_EQ(derive_seed(42, 1), 628154071u);
  EXPECT_EQ(derive_seed(42, 2), 973189845u);
  EXPECT_EQ(derive_seed(43, 0), 1874384767u);
  // seed + index would make run s+1's item i run s's item i+1; hashed seeds share no such shift.
  std::set<uint64_t> run_42, run_43;
  for (uint64_t i = 0; i < 200; ++i) run_42.insert(derive_seed(42, i)), run_43.insert(derive_seed(43, i));
  size_t shared = 0;
  for (uint64_t s : run_43) shared += run_42.count(s);
  EXPECT_EQ(shared, 0u);
  for (uint64_t s : run_42) EXPECT_LT(s, 1ULL << 31);
}

TEST(PortableRandom, Fnv1aMatchesTheReferenceValues) {
  EXPECT_EQ(fnv1a64(""), 14695981039346656037ULL);
  EXPECT_EQ(fnv1a64("a"), 12638187200555641996ULL);
  EXPECT_EQ(fnv1a64("guardkit"), 10037854324606449890ULL);
}

}  // namespace
}  // namespace guardkit
