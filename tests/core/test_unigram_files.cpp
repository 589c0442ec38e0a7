// Loading paths of the Unigram tokenizer: a tokenizer.json written here from spm.model's pieces gives the same ids;
// malformed spm.model files give one-line guardkit::Error messages naming the file; a bounded, seeded fuzz of the
// model bytes and of input strings (invalid UTF-8 included) never crashes. Truncation, decode and lower-casing.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "spm_reference.h"
#include "test_util.h"
#include "text/deberta_tokenizer.h"
#include "text/unigram.h"
#include "util/error.h"
#include "util/paths.h"

using namespace guardkit;
using namespace guardkit::text;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string base64_encode(std::string_view in) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out.push_back(table[(v >> k) & 63]);
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += {table[(v >> 18) & 63], table[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {table[(v >> 18) & 63], table[(v >> 12) & 63], table[(v >> 6) & 63], '='};
  }
  return out;
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A tokenizer.json as transformers' DebertaV2Converter writes it, built from the pieces of an spm.model.
json tokenizer_json_from_spm(const SpmModel& spm) {
  json vocab = json::array();
  json added = json::array();
  for (size_t i = 0; i < spm.pieces.size(); ++i) {
    const auto& p = spm.pieces[i];
    vocab.push_back(json::array({p.piece, p.score}));
    if (p.type == PieceType::Control || p.type == PieceType::Unknown)
      added.push_back({{"id", i}, {"content", p.piece}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", p.type == PieceType::Unknown}, {"special", true}});
  }
  added.push_back({{"id", spm.pieces.size()}, {"content", "[MASK]"}, {"single_word", false}, {"lstrip", false},
                   {"rstrip", false}, {"normalized", false}, {"special", true}});
  json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = added;
  root["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       json::array({{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                    {{"type", "Precompiled"}, {"precompiled_charsmap", base64_encode(spm.precompiled_charsmap)}},
                    {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}})}};
  root["pre_tokenizer"] = {{"type", "Sequence"},
                           {"pretokenizers", json::array({{{"type", "Metaspace"},
                                                           {"replacement", "\u2581"},
                                                           {"add_prefix_space", true},
                                                           {"prepend_scheme", "always"}}})}};
  root["post_processor"] = {{"type", "TemplateProcessing"}};
  root["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"add_prefix_space", true}};
  root["model"] = {{"type", "Unigram"}, {"unk_id", spm.unk_id}, {"vocab", vocab}, {"byte_fallback", false}};
  return root;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Serialises a minimal ModelProto by hand, so malformed variants can be built field by field.
std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string field_bytes(uint32_t field, std::string_view payload) {
  return varint(field << 3 | 2) + varint(payload.size()) + std::string(payload);
}
std::string field_varint(uint32_t field, uint64_t value) { return varint(field << 3) + varint(value); }
std::string piece_message(const std::string& piece, float score, int type) {
  std::string score_bytes(4, '\0');
  std::memcpy(score_bytes.data(), &score, 4);
  return field_bytes(1, piece) + varint(2 << 3 | 5) + score_bytes + field_varint(3, static_cast<uint64_t>(type));
}

}  // namespace

TEST(UnigramFiles, TokenizerJsonRoundTripGivesSameIds) {
  const auto dir = test::temp_dir("unigram_tokjson");
  const SpmModel spm = SpmModel::load(test::fixture("deberta/spm.model"));
  write_file(dir / "tokenizer.json", tokenizer_json_from_spm(spm).dump());
  const auto from_json = DebertaV2Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  const auto from_spm = DebertaV2Tokenizer::from_dir(test::fixture("deberta"));
  EXPECT_EQ(from_json->vocab_size(), from_spm->vocab_size());
  EXPECT_EQ(from_json->mask_id(), 800);

  std::vector<std::string> texts;
  const auto spm_cases = test::load_json(test::fixture("spm/cases.json"));
  for (const auto& c : spm_cases["cases"]) texts.push_back(c["text"]);
  for (auto& s : test::varied_strings(300, 31337)) texts.push_back(s);
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE(texts[i]);
    EXPECT_EQ(from_json->encode(texts[i]), from_spm->encode(texts[i]));
    const auto& pair = texts[(i + 1) % texts.size()];
    EXPECT_EQ(from_json->encode_for_model(texts[i], pair, 48).ids, from_spm->encode_for_model(texts[i], pair, 48).ids);
  }
  fs::remove_all(dir);
}

TEST(UnigramFiles, TokenizerJsonErrors) {
  const auto dir = test::temp_dir("unigram_tokjson_bad");
  const auto path = dir / "tokenizer.json";
  auto expect_error = [&](const std::string& content, const std::string& needle) {
    write_file(path, content);
    const std::string message = error_of([&] { DebertaV2Tokenizer::from_tokenizer_json(path); });
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  expect_error("{not json", "not valid JSON");
  expect_error(R"({"model": {"type": "BPE", "vocab": {}}})", "not Unigram");
  expect_error(R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})", "unk_id");
  expect_error(R"({"model": {"type": "Unigram", "unk_id": 5, "vocab": [["a", 0.0]]}})", "outside");
  expect_error(R"({"model": {"type": "Unigram", "unk_id": 0, "vocab": [["a"]]}})", "vocab[0]");
  expect_error(R"({"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0]]},
                  "normalizer": {"type": "Precompiled", "precompiled_charsmap": "!!!"}})",
               "base64");
  fs::remove_all(dir);
}

TEST(UnigramFiles, MalformedSpmModelsNameTheFile) {
  const auto dir = test::temp_dir("unigram_malformed");
  const std::string good = read_file(test::fixture("deberta/spm.model"));
  const std::string unk = field_bytes(1, piece_message("<unk>", 0, 2));
  const std::string a = field_bytes(1, piece_message("a", -1.0f, 1));
  struct Case {
    const char* name;
    std::string bytes;
    const char* needle;
  };
  std::string bad_charsmap_size = std::string("\xFF\xFF\xFF\x7F", 4) + "abcd";
  const std::vector<Case> cases = {
      {"empty", "", "no pieces"},
      {"truncated", good.substr(0, good.size() / 2), "runs past the end"},
      {"truncated_varint", std::string("\x0A\xFF", 2), "truncated varint"},
      {"garbage", std::string(64, '\xFF'), "varint"},
      {"wrong_wire_type", field_varint(1, 7), "wire type"},
      {"group_wire_type", varint(1 << 3 | 3), "wire type"},
      {"no_unknown", a, "no unknown piece"},
      {"two_unknowns", unk + field_bytes(1, piece_message("<unk2>", 0, 2)) + a, "second unknown"},
      {"duplicate_piece", unk + a + a, "already defined"},
      {"empty_piece", unk + field_bytes(1, piece_message("", 0, 1)), "empty"},
      {"bad_type", unk + field_bytes(1, piece_message("b", 0, 9)), "unknown type"},
      {"byte_without_fallback", unk + a + field_bytes(1, piece_message("<0x41>", 0, 6)), "byte_fallback is false"},
      {"fallback_missing_bytes", unk + a + field_bytes(2, field_varint(35, 1)) +
                                     field_bytes(1, piece_message("<0x41>", 0, 6)), "is missing"},
      {"bpe_model", unk + a + field_bytes(2, field_varint(3, 2)), "not supported"},
      {"charsmap_too_large", unk + a + field_bytes(3, field_bytes(2, bad_charsmap_size)), "exceeds"},
      {"charsmap_too_short", unk + a + field_bytes(3, field_bytes(2, "ab")), "too short"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto path = dir / (std::string(c.name) + ".model");
    write_file(path, c.bytes);
    const std::string message = error_of([&] { UnigramModel::load(path); });
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(c.needle), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
  // A minimal hand-written model works: the reader is not just rejecting everything.
  write_file(dir / "ok.model", unk + a + field_bytes(1, piece_message("\xE2\x96\x81", -2.0f, 1)));
  const UnigramModel ok = UnigramModel::load(dir / "ok.model");
  EXPECT_EQ(ok.encode("a a"), (std::vector<int32_t>{2, 1, 2, 1}));
  EXPECT_EQ(ok.encode("ab"), (std::vector<int32_t>{2, 1, 0}));
  const std::string missing = error_of([&] { UnigramModel::load(dir / "nope.model"); });
  EXPECT_NE(missing.find("nope.model"), std::string::npos);
  const std::string no_dir = error_of([&] { DebertaV2Tokenizer::from_dir(dir / "nothing"); });
  EXPECT_NE(no_dir.find("no spm.model"), std::string::npos) << no_dir;
  fs::remove_all(dir);
}

// Seeded mutations of the fixture model (bytes flipped, truncated, duplicated) must load or fail with
// guardkit::Error; whatever loads must then encode and decode arbitrary bytes without crashing.
TEST(UnigramFiles, FuzzModelBytesAndInputs) {
  const std::string good = read_file(test::fixture("deberta/spm.model"));
  const auto dir = test::temp_dir("unigram_fuzz");
  std::mt19937 rng(4711);
  const auto inputs = test::varied_strings(20, 5, true);
  size_t loaded = 0, rejected = 0;
  for (int iteration = 0; iteration < 150; ++iteration) {
    std::string bytes = good;
    switch (iteration % 4) {
      case 0:  // flip a few random bytes anywhere
        for (int k = 0; k < 1 + static_cast<int>(rng() % 8); ++k) bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 1:  // truncate
        bytes.resize(rng() % bytes.size());
        break;
      case 2: {  // corrupt the tail, where the normalizer spec and its charsmap live
        const size_t from = bytes.size() - 1 - rng() % std::min<size_t>(bytes.size() - 1, 200000);
        for (int k = 0; k < 4; ++k) bytes[from + rng() % (bytes.size() - from)] = static_cast<char>(rng());
        break;
      }
      default: {  // splice a random chunk into a random place
        const size_t at = rng() % bytes.size(), len = rng() % 64;
        bytes.insert(at, bytes.substr(rng() % (bytes.size() - len), len));
      }
    }
    const auto path = dir / "fuzz.model";
    write_file(path, bytes);
    try {
      const UnigramModel model = UnigramModel::load(path);
      ++loaded;
      for (const auto& input : inputs) {
        try {
          const auto ids = model.encode(input);
          for (int32_t id : ids) ASSERT_TRUE(model.valid(id));
          (void)model.decode(ids);
        } catch (const Error&) {
          // a corrupt charsmap may be detected only while normalising
        }
      }
    } catch (const Error& e) {
      ++rejected;
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(loaded, 0u);
  EXPECT_GT(rejected, 0u);

  // Random byte strings through the real tokenizer: never a crash, ids always in range, decode always works.
  const auto tok = DebertaV2Tokenizer::from_dir(test::fixture("deberta"));
  for (int i = 0; i < 500; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 0x80 : rng());
    if (i % 5 == 0) s += "[MASK]";
    const Encoding e = tok->encode_for_model(s, std::string_view(s).substr(0, s.size() / 2), 32);
    EXPECT_LE(e.ids.size(), 32u);
    for (int32_t id : e.ids) EXPECT_LT(static_cast<size_t>(id), tok->vocab_size());
    (void)tok->decode(e.ids);
  }
  fs::remove_all(dir);
}

TEST(UnigramFiles, TruncationStrategies) {
  const auto tok = DebertaV2Tokenizer::from_dir(test::fixture("deberta"));
  const std::string a = "How can I kill a Python process?";  // 11 pieces
  const std::string b = "Hello world";                       // 5 pieces
  const auto ia = tok->encode(a), ib = tok->encode(b);
  ASSERT_EQ(ia.size(), 11u);
  ASSERT_EQ(ib.size(), 5u);
  auto expected = [&](size_t na, size_t nb) {
    std::vector<int32_t> ids = {tok->cls_id()};
    ids.insert(ids.end(), ia.begin(), ia.begin() + static_cast<long>(na));
    ids.push_back(tok->sep_id());
    ids.insert(ids.end(), ib.begin(), ib.begin() + static_cast<long>(nb));
    ids.push_back(tok->sep_id());
    return ids;
  };
  // longest_first takes from the longer side, ties from the second (transformers' loop).
  EXPECT_EQ(tok->encode_for_model(a, b, 13, Truncation::LongestFirst).ids, expected(5, 5));
  EXPECT_EQ(tok->encode_for_model(a, b, 12, Truncation::LongestFirst).ids, expected(5, 4));
  EXPECT_EQ(tok->encode_for_model(a, b, 16, Truncation::OnlyFirst).ids, expected(8, 5));
  EXPECT_EQ(tok->encode_for_model(a, b, 16, Truncation::OnlySecond).ids, expected(11, 2));
  EXPECT_EQ(tok->encode_for_model(a, b, 16, Truncation::None).ids, expected(11, 5));
  EXPECT_EQ(tok->encode_for_model(a, b, 100).ids, expected(11, 5));
  const auto types = tok->encode_for_model(a, b, 12).type_ids;
  EXPECT_EQ(types, (std::vector<int32_t>{0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1}));
  // Impossible requests are errors, not silently overlong inputs.
  EXPECT_NE(error_of([&] { tok->encode_for_model(a, b, 8, Truncation::OnlySecond); }).find("max_length 8"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tok->encode_for_model(a, std::nullopt, 1); }).find("max_length 1"), std::string::npos);
  EXPECT_EQ(tok->encode_for_model(a, std::nullopt, 5).ids.size(), 5u);
}

TEST(UnigramFiles, SpecialTextAndDecode) {
  const auto tok = DebertaV2Tokenizer::from_dir(test::fixture("deberta"));
  // parse_special=false: "[MASK]" is ordinary text, as for untrusted user content.
  const auto parsed = tok->encode("a [MASK] b");
  const auto plain = tok->encode("a [MASK] b", /*parse_special=*/false);
  EXPECT_NE(std::find(parsed.begin(), parsed.end(), 800), parsed.end());
  EXPECT_EQ(std::find(plain.begin(), plain.end(), 800), plain.end());
  EXPECT_EQ(plain, tok->model().encode("a [MASK] b"));
  // Decode as the slow tokenizer: special tokens kept apart, clean-up of spaces before punctuation.
  const auto enc = tok->encode_for_model("Hello world").ids;
  EXPECT_EQ(tok->decode(enc), "[CLS] Hello world[SEP]");
  EXPECT_EQ(tok->decode(enc, /*skip_special_tokens=*/true), "Hello world");
  EXPECT_EQ(tok->decode(tok->encode("How can I kill a Python process?"), true), "How can I kill a Python process?");
  // SPMTokenizer.decode puts a space before a special token only, and SentencePiece drops the leading "▁" of each
  // run it decodes: transformers 4.36 gives "a[MASK]b" here.
  EXPECT_EQ(tok->decode(tok->encode("a [MASK] b")), "a[MASK]b");
  EXPECT_NE(error_of([&] { tok->decode({801}); }).find("801"), std::string::npos);
  EXPECT_NE(error_of([&] { tok->decode({-1}); }).find("-1"), std::string::npos);
}

TEST(UnigramFiles, DoLowerCaseFromTokenizerConfig) {
  const auto dir = test::temp_dir("unigram_lower");
  fs::copy_file(test::fixture("deberta/spm.model"), dir / "spm.model");
  auto config = test::load_json(test::fixture("deberta/tokenizer_config.json"));
  config["do_lower_case"] = true;
  write_file(dir / "tokenizer_config.json", config.dump());
  const auto lower = DebertaV2Tokenizer::from_dir(dir);
  const auto base = DebertaV2Tokenizer::from_dir(test::fixture("deberta"));
  EXPECT_EQ(lower->encode("HELLO World [MASK] ÀÉÎ ΣΑΣ ПРИВЕТ"), base->encode("hello world [MASK] àéî σασ привет"));
  EXPECT_EQ(unicode_lower("İ"), "i\xCC\x87");
  fs::remove_all(dir);
}
