// Our Unigram tokenizer against Debian's SentencePiece 0.1.97 commands (separate processes) on generated strings:
// the DeBERTa fixture model, and models trained here with spm_train covering byte fallback, user-defined symbols and
// other normaliser settings. Skipped when the `sentencepiece` package is not installed.
#include <gtest/gtest.h>

#include "spm_reference.h"
#include "test_util.h"
#include "text/unigram.h"

using namespace guardkit;
using namespace guardkit::text;
namespace fs = std::filesystem;

namespace {

void require_spm() {
  if (!test::have_command("spm_encode") || !test::have_command("spm_decode"))
    GTEST_SKIP() << "Debian's sentencepiece package (spm_encode) is not installed";
}

// Compares ids and pieces for every line, reporting the first few mismatches with their text.
void expect_same_as_spm(const fs::path& model_path, const std::vector<std::string>& lines, const fs::path& work) {
  const UnigramModel model = UnigramModel::load(model_path);
  const auto reference_ids = test::spm_encode_ids(model_path, lines, work);
  const auto reference_pieces = test::spm_encode_pieces(model_path, lines, work);
  ASSERT_EQ(reference_ids.size(), lines.size());
  ASSERT_EQ(reference_pieces.size(), lines.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto ids = model.encode(lines[i]);
    const auto pieces = model.encode_as_pieces(lines[i]);
    if (ids != reference_ids[i] || pieces != reference_pieces[i]) {
      if (++mismatches <= 5) {
        std::string got, want;
        for (auto& p : pieces) got += p + " ";
        for (auto& p : reference_pieces[i]) want += p + " ";
        ADD_FAILURE() << "line " << i << " [" << lines[i] << "]\n ours: " << got << "\n spm:  " << want;
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << lines.size() << " lines";
}

}  // namespace

TEST(UnigramSpmReference, FixtureModelOnVariedStrings) {
  require_spm();
  const auto work = test::temp_dir("unigram_varied");
  expect_same_as_spm(test::fixture("deberta/spm.model"), test::varied_strings(600, 20261128), work);
  fs::remove_all(work);
}

TEST(UnigramSpmReference, FixtureModelOnInvalidUtf8) {
  require_spm();
  const auto work = test::temp_dir("unigram_invalid");
  expect_same_as_spm(test::fixture("deberta/spm.model"), test::varied_strings(300, 7, /*invalid_utf8=*/true), work);
  fs::remove_all(work);
}

TEST(UnigramSpmReference, DecodeMatchesSpmDecode) {
  require_spm();
  const auto work = test::temp_dir("unigram_decode");
  const auto path = test::fixture("deberta/spm.model");
  const UnigramModel model = UnigramModel::load(path);
  std::vector<std::vector<int32_t>> all_ids;
  std::vector<std::string> lines = test::varied_strings(300, 99);
  for (const auto& line : lines) all_ids.push_back(model.encode(line));
  all_ids.push_back({1, 116, 6, 2, 0, 3, 3});  // control pieces and unknowns
  const auto reference = test::spm_decode_ids(path, all_ids, work);
  ASSERT_EQ(reference.size(), all_ids.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < all_ids.size(); ++i)
    if (model.decode(all_ids[i]) != reference[i] && ++mismatches <= 5)
      ADD_FAILURE() << "ids of [" << (i < lines.size() ? lines[i] : "") << "]: ours [" << model.decode(all_ids[i])
                    << "] spm [" << reference[i] << "]";
  EXPECT_EQ(mismatches, 0u);
  fs::remove_all(work);
}

// Models trained here: each covers settings the fixture model does not.
struct TrainedVariant {
  const char* name;
  const char* flags;
};

class UnigramTrainedModels : public ::testing::TestWithParam<TrainedVariant> {};

TEST_P(UnigramTrainedModels, MatchSpmEncode) {
  require_spm();
  if (!test::have_command("spm_train")) GTEST_SKIP() << "spm_train is not installed";
  const TrainedVariant variant = GetParam();
  const auto work = test::temp_dir(std::string("unigram_train_") + variant.name);
  // Corpus: the fixture texts and generated strings.
  std::vector<std::string> corpus = test::varied_strings(3000, 12345);
  const auto spm_cases = test::load_json(test::fixture("spm/cases.json"));
  for (const auto& c : spm_cases["cases"]) {
    std::string text = c["text"];
    if (text.find('\n') == std::string::npos) corpus.push_back(text);
  }
  test::write_lines(work / "corpus.txt", corpus);
  const auto prefix = work / "m";
  test::run_checked("spm_train --minloglevel=2 --input='" + (work / "corpus.txt").string() + "' --model_prefix='" +
                    prefix.string() +
                    "' --model_type=unigram --vocab_size=600 --hard_vocab_limit=false --num_threads=1 "
                    "--character_coverage=0.98 " +
                    variant.flags + " >/dev/null 2>&1");
  const fs::path model_path = prefix.string() + ".model";
  ASSERT_TRUE(fs::exists(model_path));
  std::vector<std::string> lines = test::varied_strings(400, 4242);
  const auto invalid = test::varied_strings(100, 4243, true);
  lines.insert(lines.end(), invalid.begin(), invalid.end());
  expect_same_as_spm(model_path, lines, work);

  // The settings under test really are in the trained model.
  const UnigramModel model = UnigramModel::load(model_path);
  if (std::string(variant.flags).find("byte_fallback") != std::string::npos) {
    ASSERT_TRUE(model.spec().byte_fallback);
    const auto ids = model.encode("\xF0\x9D\x84\x9E");  // U+1D11E is in no corpus: four byte pieces
    ASSERT_GE(ids.size(), 4u);
    for (size_t i = ids.size() - 4; i < ids.size(); ++i) EXPECT_TRUE(model.is_byte(ids[i]));
    const auto pieces = model.encode_as_pieces("x foo@@<sep>");
    EXPECT_NE(std::find(pieces.begin(), pieces.end(), "@@"), pieces.end());
    EXPECT_NE(std::find(pieces.begin(), pieces.end(), "<sep>"), pieces.end());
  }
  if (std::string(variant.flags).find("suffix") != std::string::npos) {
    EXPECT_TRUE(model.spec().treat_whitespace_as_suffix);
  }
  fs::remove_all(work);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, UnigramTrainedModels,
    ::testing::Values(
        TrainedVariant{"byte_fallback_user_defined",
                       "--byte_fallback=true '--user_defined_symbols=@@,<sep>,foo,[MASK],ab'"},
        TrainedVariant{"identity_raw_whitespace",
                       "--normalization_rule_name=identity --add_dummy_prefix=false --remove_extra_whitespaces=false"},
        TrainedVariant{"nfkc_cf_suffix", "--normalization_rule_name=nfkc_cf --treat_whitespace_as_suffix=true"},
        TrainedVariant{"nmt_nfkc_cf_no_split_digits", "--normalization_rule_name=nmt_nfkc_cf --split_digits=true"}),
    [](const ::testing::TestParamInfo<TrainedVariant>& info) { return std::string(info.param.name); });
