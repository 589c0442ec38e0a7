// The byte-level BPE trainer: known merges on a small corpus, deterministic output, the vocabulary size bound, and
// files that our own load_tokenizer reads back (round trip of any UTF-8, special tokens as single ids, the Llama 3
// layout of the fixture's tokenizer files).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "test_util.h"
#include "text/bpe_tokenizer.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::text;
using json = nlohmann::json;

namespace {

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> texts = {
      "Write a tutorial on how to make a cake.",
      "Explain how to stay safe online.\nUse strong passwords and keep your software updated.",
      "I'm sorry, but I can't help with that request.",
      "Here is a list of instructions:\n1. Write a poem about the sea.\n2. Describe a sunset.\n3. Plan a trip.",
      "The quick brown fox jumps over the lazy dog. 12345 67890!",
      "Ünïcödé text, 日本語のテキスト, emoji 😀🎉 and tabs\tand  double  spaces.",
      "Guardrails classify prompts and responses; guardrails keep models safe.",
      "user\n\nHow do I bake bread?\nassistant\n\nMix flour, water, yeast and salt, then bake.",
  };
  return texts;
}

BpeTrainer trainer_with_corpus(BpeTrainerOptions options, int repeats = 3) {
  BpeTrainer trainer(std::move(options));
  for (int r = 0; r < repeats; ++r)
    for (const auto& t : corpus()) trainer.add_text(t);
  return trainer;
}

// The stand-in character of a byte (GPT-2's map), for reading merges.
std::string space_char() { return "\xC4\xA0"; }  // "Ġ" = U+0120 stands for ' '

}  // namespace

TEST(BpeTrainer, KnownMergesOnASmallCorpus) {
  // Words after the Llama 3 split: "hug", " hug" x2, " pug", " pun", " bun".
  // Pair counts: (u,g) 4 → first; then (h,ug) 3; then a tie at 2 between (Ġ,hug), (Ġ,p), (u,n): the smallest left id
  // wins, and 'u' (id 84) comes before the space stand-in Ġ (id 220).
  BpeTrainerOptions options;
  options.vocab_size = 256 + 3 + options.special_tokens.size();
  BpeTrainer trainer(options);
  trainer.add_text("hug hug hug pug pun bun");
  EXPECT_EQ(trainer.distinct_words(), 5u);  // "hug", " hug", " pug", " pun", " bun"
  TrainedBpe bpe = trainer.train();
  ASSERT_EQ(bpe.merges.size(), 3u);
  json merges = bpe.tokenizer_json()["model"]["merges"];
  EXPECT_EQ(merges[0], "u g");
  EXPECT_EQ(merges[1], "h ug");
  EXPECT_EQ(merges[2], "u n");
  EXPECT_EQ(bpe.size(), options.vocab_size);
  EXPECT_EQ(bpe.tokens[0], "!");            // Llama 3's byte order: '!' is id 0
  EXPECT_EQ(bpe.tokens[220], space_char());  // the space's stand-in
}

TEST(BpeTrainer, VocabularySizeIsRespectedAndAllBytesArePresent) {
  for (size_t target : {300u, 350u, 400u}) {
    BpeTrainerOptions options;
    options.vocab_size = target;
    options.min_pair_frequency = 1;
    TrainedBpe bpe = trainer_with_corpus(options).train();
    EXPECT_EQ(bpe.size(), target) << "enough distinct pairs to fill " << target;
    EXPECT_EQ(bpe.num_special, options.special_tokens.size());
    json vocab = bpe.tokenizer_json()["model"]["vocab"];
    EXPECT_EQ(vocab.size() + bpe.num_special, bpe.size());
    size_t single_chars = 0;
    for (auto& [token, id] : vocab.items()) single_chars += unicode::is_valid_utf8(token) && [&] {
      size_t i = 0;
      unicode::decode_utf8(token, i);
      return i == token.size();
    }();
    EXPECT_EQ(single_chars, 256u);
  }
  // A corpus too small to fill the target stops early (pairs occurring once are not merged by default).
  BpeTrainerOptions options;
  options.vocab_size = 100000;
  TrainedBpe small = trainer_with_corpus(options, 1).train();
  EXPECT_LT(small.size(), 100000u);
  EXPECT_GT(small.size(), 256u + small.num_special);
}

TEST(BpeTrainer, TrainingIsDeterministicWhateverTheTextOrder) {
  BpeTrainerOptions options;
  options.vocab_size = 500;
  options.min_pair_frequency = 1;
  TrainedBpe a = trainer_with_corpus(options).train();
  BpeTrainer reversed(options);
  for (int r = 0; r < 3; ++r)
    for (auto it = corpus().rbegin(); it != corpus().rend(); ++it) reversed.add_text(*it);
  TrainedBpe b = reversed.train();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.tokenizer_json().dump(), b.tokenizer_json().dump());
  // Weights count like repeated text.
  BpeTrainer weighted(options);
  for (const auto& t : corpus()) weighted.add_text(t, 3);
  EXPECT_EQ(weighted.train().merges, a.merges);
}

TEST(BpeTrainer, SavedFilesLoadAndRoundTripAnyText) {
  BpeTrainerOptions options;
  options.vocab_size = 700;
  options.min_pair_frequency = 1;
  TrainedBpe bpe = trainer_with_corpus(options).train();
  auto dir = test::temp_dir("bpe_trainer_files");
  bpe.save(dir);
  ASSERT_TRUE(std::filesystem::exists(dir / "tokenizer.json"));
  ASSERT_TRUE(std::filesystem::exists(dir / "tokenizer_config.json"));
  ASSERT_TRUE(std::filesystem::exists(dir / "special_tokens_map.json"));

  std::unique_ptr<Tokenizer> tok = load_tokenizer(dir);
  EXPECT_EQ(tok->vocab_size(), bpe.size());

  // Frequent words became single tokens.
  EXPECT_EQ(tok->encode(" guardrails").size(), 1u);
  EXPECT_LT(tok->encode("Write a tutorial on how to make a cake.").size(), 20u);

  std::vector<std::string> texts = {
      "",
      "plain ascii text",
      "Never-seen wørds: Ψυχή, Привет, مرحبا, 中文字符, 한국어",
      "emoji 😀🎉👩‍👩‍👧 flags 🇫🇷 and ZWJ",
      "  leading and trailing spaces  \n\n\ttabs\r\nwindows line ends",
      "punctuation!!! ... ??? ''' \"\" <|not_special|> <|eot_id ",
      std::string("nul \0 byte and control \x01\x1f chars", sizeof("nul \0 byte and control \x01\x1f chars") - 1),
      "I'M SHOUTING, you're whispering, we'll see, they'd've",
  };
  for (const auto& t : texts) {
    std::vector<int32_t> ids = tok->encode(t, /*parse_special=*/false);
    EXPECT_EQ(tok->decode(ids), t) << t;
  }
  // Random UTF-8 and random bytes: invalid sequences come back as U+FFFD, as our BPE tokenizer reads them.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      if (trial % 2 == 0) {
        static const char32_t ranges[][2] = {{0x20, 0x7e}, {0xa0, 0x2ff}, {0x400, 0x4ff}, {0x4e00, 0x4fff}, {0x1f300, 0x1f64f}};
        const auto& r = ranges[rng() % 5];
        unicode::append_utf8(s, r[0] + static_cast<char32_t>(rng() % (r[1] - r[0] + 1)));
      } else {
        s.push_back(static_cast<char>(rng() & 0xff));
      }
    }
    std::vector<int32_t> ids = tok->encode(s, false);
    for (int32_t id : ids) ASSERT_LT(static_cast<size_t>(id), bpe.first_special_id());
    EXPECT_EQ(tok->decode(ids), unicode::make_valid_utf8(s));
  }
}

TEST(BpeTrainer, SpecialTokensAreSingleIdsAndTheChatTemplateIsLlama3s) {
  BpeTrainerOptions options;
  options.vocab_size = 400;
  TrainedBpe bpe = trainer_with_corpus(options).train();
  auto dir = test::temp_dir("bpe_trainer_special");
  bpe.save(dir);
  auto tok = BpeTokenizer::from_file(dir / "tokenizer.json");
  const size_t first = bpe.first_special_id();
  for (size_t k = 0; k < options.special_tokens.size(); ++k) {
    const std::string& s = options.special_tokens[k];
    ASSERT_EQ(tok->token_to_id(s), static_cast<int32_t>(first + k)) << s;
    EXPECT_EQ(tok->encode(s), std::vector<int32_t>{static_cast<int32_t>(first + k)}) << s;
    EXPECT_TRUE(tok->is_special(static_cast<int32_t>(first + k)));
    // As untrusted text it is ordinary characters.
    EXPECT_GT(tok->encode(s, /*parse_special=*/false).size(), 1u);
  }
  const int32_t bos = *tok->token_to_id("<|begin_of_text|>");
  const int32_t eot = *tok->token_to_id("<|eot_id|>");
  EXPECT_EQ(tok->bos_id(), bos);
  EXPECT_EQ(tok->eos_id(), eot);
  EXPECT_EQ(bos, static_cast<int32_t>(first));       // Llama 3's order
  EXPECT_EQ(eot, static_cast<int32_t>(first + 9));
  Encoding e = tok->encode_for_model("hello");
  ASSERT_FALSE(e.ids.empty());
  EXPECT_EQ(e.ids.front(), bos);
  std::vector<int32_t> chat = tok->encode("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  EXPECT_EQ(chat.front(), *tok->token_to_id("<|start_header_id|>"));
  EXPECT_EQ(chat.back(), eot);
  EXPECT_EQ(tok->decode(chat, /*skip_special_tokens=*/true), "user\n\nhi");

  // Same layout and template as the Llama 3 fixture's files.
  json ours = test::load_json(dir / "tokenizer.json");
  json config = test::load_json(dir / "tokenizer_config.json");
  json fixture_config = test::load_json(test::fixture("llama/tokenizer_config.json"));
  EXPECT_EQ(config["chat_template"], fixture_config["chat_template"]);
  EXPECT_EQ(config["bos_token"], "<|begin_of_text|>");
  EXPECT_EQ(config["eos_token"], "<|eot_id|>");
  EXPECT_EQ(config["added_tokens_decoder"][std::to_string(eot)]["content"], "<|eot_id|>");
  json fixture_tok = test::load_json(test::fixture("llama/tokenizer.json"));
  EXPECT_EQ(ours["pre_tokenizer"], fixture_tok["pre_tokenizer"]);
  EXPECT_EQ(ours["decoder"], fixture_tok["decoder"]);
  EXPECT_EQ(ours["model"]["type"], "BPE");
  EXPECT_EQ(ours["post_processor"]["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"][0], bos);
  json map = test::load_json(dir / "special_tokens_map.json");
  EXPECT_EQ(map["eos_token"]["content"], "<|eot_id|>");
}

TEST(BpeTrainer, BadOptionsGiveClearErrors) {
  BpeTrainerOptions tiny;
  tiny.vocab_size = 200;
  try {
    trainer_with_corpus(tiny).train();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot hold the 256 byte symbols"), std::string::npos) << e.what();
  }
  BpeTrainerOptions twice;
  twice.special_tokens = {"<|a|>", "<|a|>"};
  twice.bos_token = twice.eos_token = "";
  EXPECT_THROW(BpeTrainer(twice).train(), Error);
  BpeTrainerOptions missing;
  missing.special_tokens = {"<|x|>"};
  EXPECT_THROW(BpeTrainer(missing).train(), Error);  // bos/eos not among the specials
  // An ordinary word equal to a special token's text cannot also be special.
  BpeTrainerOptions clash;
  clash.special_tokens = {"ab"};
  clash.bos_token = clash.eos_token = "";
  clash.min_pair_frequency = 1;
  BpeTrainer t(clash);
  t.add_text("ab ab");
  EXPECT_THROW(t.train(), Error);
}
