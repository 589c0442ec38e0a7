#include "text/prompt.h"

#include "text/tokenizer.h"
#include "util/error.h"
#include "util/printable.h"

namespace guardkit::text {

std::string RenderedPrompt::text() const {
  std::string out;
  for (const auto& segment : segments) out += segment.text;
  return out;
}

std::vector<TokenPiece> RenderedPrompt::token_pieces() const {
  std::vector<TokenPiece> pieces;
  for (const auto& segment : segments) {
    if (segment.is_special()) {
      pieces.push_back({segment.text, true});
    } else if (!segment.text.empty()) {
      if (pieces.empty() || pieces.back().special) pieces.push_back({"", false});
      pieces.back().text += segment.text;
    }
  }
  return pieces;
}

void RenderedPrompt::add(SegmentKind kind, std::string_view text) {
  if (text.empty() && kind != SegmentKind::kSpecial) return;
  if (kind != SegmentKind::kSpecial && !segments.empty() && segments.back().kind == kind) {
    segments.back().text += text;
    return;
  }
  segments.push_back({std::string(text), kind});
}

std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const RenderedPrompt& prompt) {
  std::vector<int32_t> ids;
  for (const TokenPiece& piece : prompt.token_pieces()) {
    if (piece.special) {
      auto id = tokenizer.token_to_id(piece.text);
      if (!id) fail("the tokenizer has no special token '{}' that the prompt template needs", printable(piece.text));
      ids.push_back(*id);
    } else {
      // No added token at all between the template's specials: a Qwen3 user typing "<think>" gets the characters.
      auto piece_ids = tokenizer.encode_plain(piece.text);
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    }
  }
  return ids;
}

namespace {
// Code points Python's str.isspace() accepts (bidi classes WS, B, S and category Zs).
bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
         cp == 0x3000;
}

// Decodes the UTF-8 sequence starting at text[i]; returns its length, or 0 when it is not valid UTF-8.
size_t decode_at(std::string_view text, size_t i, uint32_t& cp) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  size_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xe ? 3 : (b0 >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || i + len > text.size()) return 0;
  cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1f) : len == 3 ? (b0 & 0x0f) : (b0 & 0x07);
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  return len;
}
}  // namespace

std::string_view python_strip(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    uint32_t cp = 0;
    const size_t len = decode_at(text, begin, cp);
    if (len == 0 || !is_python_space(cp)) break;
    begin += len;
  }
  size_t end = text.size();
  while (end > begin) {
    // Step back to the start of the last code point (at most 4 bytes).
    size_t start = end - 1;
    while (start > begin && end - start < 4 && (static_cast<unsigned char>(text[start]) & 0xc0) == 0x80) --start;
    uint32_t cp = 0;
    const size_t len = decode_at(text, start, cp);
    if (len != end - start || !is_python_space(cp)) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

}  // namespace guardkit::text
