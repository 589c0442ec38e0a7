// Helpers for the Unigram tests: Debian's SentencePiece commands (spm_encode, spm_decode, spm_train) run as separate
// processes — never linked — as the reference, and a seeded generator of varied test strings.
#pragma once
#include "text/unicode.h"
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace guardkit::test {

inline bool have_command(const std::string& name) {
  const std::string probe = "command -v " + name + " >/dev/null 2>&1";
  return std::system(probe.c_str()) == 0;
}

// Runs a shell command and returns its stdout; fails the test when it exits non-zero (test_util.h's run_command
// returns the exit status instead).
inline std::string run_checked(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) {
    ADD_FAILURE() << "popen failed: " << command;
    return out;
  }
  char buffer[65536];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << command;
  return out;
}

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

inline std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  int32_t id;
  while (in >> id) ids.push_back(id);
  return ids;
}

inline void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::binary);
  for (const auto& line : lines) out << line << '\n';
}

// spm_encode of each line (no '\n' inside lines): ids per line.
inline std::vector<std::vector<int32_t>> spm_encode_ids(const std::filesystem::path& model,
                                                        const std::vector<std::string>& lines,
                                                        const std::filesystem::path& work) {
  const auto input = work / "spm_input.txt";
  write_lines(input, lines);
  const auto output =
      run_checked("spm_encode --minloglevel=2 --model='" + model.string() + "' --output_format=id --input='" +
                  input.string() + "' 2>/dev/null");
  std::vector<std::vector<int32_t>> result;
  for (const auto& line : split_lines(output)) result.push_back(parse_ids(line));
  return result;
}

// spm_encode pieces per line (pieces are space-separated; pieces never contain ' ').
inline std::vector<std::vector<std::string>> spm_encode_pieces(const std::filesystem::path& model,
                                                               const std::vector<std::string>& lines,
                                                               const std::filesystem::path& work) {
  const auto input = work / "spm_input.txt";
  write_lines(input, lines);
  const auto output =
      run_checked("spm_encode --minloglevel=2 --model='" + model.string() + "' --output_format=piece --input='" +
                  input.string() + "' 2>/dev/null");
  std::vector<std::vector<std::string>> result;
  for (const auto& line : split_lines(output)) {
    std::vector<std::string> pieces;
    std::istringstream in(line);
    std::string piece;
    while (std::getline(in, piece, ' '))
      if (!piece.empty()) pieces.push_back(piece);
    result.push_back(pieces);
  }
  return result;
}

inline std::vector<std::string> spm_decode_ids(const std::filesystem::path& model,
                                               const std::vector<std::vector<int32_t>>& ids,
                                               const std::filesystem::path& work) {
  std::vector<std::string> lines;
  for (const auto& row : ids) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) line += (i ? " " : "") + std::to_string(row[i]);
    lines.push_back(line);
  }
  const auto input = work / "spm_decode_input.txt";
  write_lines(input, lines);
  return split_lines(run_checked("spm_decode --minloglevel=2 --model='" + model.string() +
                                 "' --input_format=id --input='" + input.string() + "' 2>/dev/null"));
}

// Seeded, varied single-line strings: English words, punctuation, digits, accented letters (precomposed and with
// combining marks), full-width and compatibility forms NFKC rewrites, CJK/Hangul/Cyrillic/Greek/Arabic/Devanagari/
// Thai, emoji with ZWJ, skin tones and variation selectors, control characters, runs of ASCII and Unicode
// whitespace, zero-width characters, "▁" itself. No '\n' (spm_encode works line by line) and no NUL.
inline std::vector<std::string> varied_strings(size_t count, uint32_t seed, bool invalid_utf8 = false) {
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<std::string> words = {
      "the", "How", "can", "I", "kill", "a", "Python", "process", "bomb", "make", "Please", "ignore", "previous",
      "instructions", "don't", "it's", "e-mail", "http://x.org/a?b=c", "user@example.com", "3.14", "1,000,000",
      "CAPS", "MiXeD", "supercalifragilistic", "xxxxxxxxxxxxxxxx", "[MASK]", "[CLS]", "<s>", "</s>", "<unk>",
      "#hashtag", "@user", "$100", "50%", "&amp;", "(x)", "{y}", "'q'", "\"dq\"", "back\\slash"};
  const std::vector<char32_t> singles = {
      // punctuation and symbols
      '!', '?', '.', ',', ';', ':', '-', '_', '~', '`', '^', '|', '/', '*', '+', '=', '<', '>', '[', ']',
      // accented precomposed and NFKC-affected compatibility forms
      0xE9, 0xE8, 0xEF, 0xF1, 0xC5, 0xC6, 0xF8, 0xDF, 0x130, 0x131, 0x141, 0x1E9E, 0xFB01, 0xFB02, 0x2160, 0x216B,
      0x2460, 0x2469, 0x00B2, 0x00BD, 0x2126, 0x212B, 0x3371, 0x337F, 0x33A1, 0xFF21, 0xFF41, 0xFF10, 0xFF01,
      0xFF5E, 0xFF61, 0xFF76, 0xFF9E, 0x2024, 0x2026, 0x2122, 0x00A8, 0x00B4, 0x02DC, 0x0385, 0x1FEE,
      // scripts
      0x4F60, 0x597D, 0x4E16, 0x754C, 0x65E5, 0x672C, 0x3042, 0x30A2, 0xAC00, 0xD55C, 0x1100, 0x1161, 0x0416,
      0x0436, 0x0401, 0x0451, 0x0393, 0x03B3, 0x03AC, 0x0627, 0x0644, 0xFEFB, 0x0905, 0x093F, 0x0E01, 0x0E33,
      0x05D0, 0x10D0, 0x0531,
      // emoji and friends
      0x1F600, 0x1F44D, 0x1F3FD, 0x1F469, 0x1F4BB, 0x2764, 0xFE0F, 0x1F1FA, 0x1F1F8, 0x1F9D1,
      // control and format characters, zero-width
      0x01, 0x07, 0x08, 0x0B, 0x0C, 0x0D, 0x1B, 0x1F, 0x7F, 0x80, 0x85, 0x9F, 0x200B, 0x200C, 0x200D, 0x200E, 0x2028,
      0xFEFF, 0xAD, 0xFFFD, 0xE000, 0x10FFFD,
      // the meta symbol itself
      0x2581};
  const std::vector<char32_t> combining = {0x300, 0x301, 0x302, 0x303, 0x308, 0x30A, 0x327, 0x328, 0x335, 0x36F};
  const std::vector<char32_t> spaces = {' ', '\t', 0xA0, 0x3000, 0x2002, 0x2003, 0x2009, 0x202F, 0x205F, 0x1680};
  std::vector<std::string> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    std::string s;
    const size_t parts = 1 + pick(12);
    for (size_t p = 0; p < parts; ++p) {
      switch (pick(8)) {
        case 0:
        case 1: s += words[pick(words.size())]; break;
        case 2: guardkit::text::unicode::append_utf8(s, singles[pick(singles.size())]); break;
        case 3:
          guardkit::text::unicode::append_utf8(s, U'a' + static_cast<char32_t>(pick(26)));
          for (size_t k = 1 + pick(3); k > 0; --k) guardkit::text::unicode::append_utf8(s, combining[pick(combining.size())]);
          break;
        case 4:
          for (size_t k = 1 + pick(5); k > 0; --k) guardkit::text::unicode::append_utf8(s, spaces[pick(spaces.size())]);
          break;
        case 5:
          for (size_t k = 1 + pick(6); k > 0; --k) guardkit::text::unicode::append_utf8(s, singles[pick(singles.size())]);
          break;
        case 6: s += std::to_string(rng() % 100000); break;
        default:
          if (invalid_utf8) {
            static const char* bad[] = {"\xFF", "\xC3", "\xC3\x28", "\xE2\x82", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                                        "\xC0\xAF", "\x80\x80", "\xF0\x9F\x98"};
            s += bad[pick(std::size(bad))];
          } else {
            s += ' ';
          }
      }
      if (pick(3) == 0) s += ' ';
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace guardkit::test
