#include "text/spm_normalizer.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace guardkit::text {
namespace {

bool is_trail_byte(uint8_t byte) { return (byte & 0xC0) == 0x80; }
bool is_valid_codepoint(char32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

// darts-clone's double-array unit, as the bits are laid out in the file.
struct DartsUnit {
  uint32_t bits;
  bool has_leaf() const { return ((bits >> 8) & 1) == 1; }
  uint32_t value() const { return bits & ((1U << 31) - 1); }
  uint32_t label() const { return bits & ((1U << 31) | 0xFF); }
  uint32_t offset() const { return (bits >> 10) << ((bits & (1U << 9)) >> 6); }
};

}  // namespace

bool decode_utf8_char(std::string_view text, size_t* length, char32_t* codepoint) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  char32_t cp = 0xFFFD;
  size_t len = 0;
  if (n == 0) {
    *length = 0;
    return false;
  }
  if (s[0] < 0x80) {
    cp = s[0];
    len = 1;
  } else if (n >= 2 && (s[0] & 0xE0) == 0xC0) {
    const char32_t c = ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (is_trail_byte(s[1]) && c >= 0x80 && is_valid_codepoint(c)) cp = c, len = 2;
  } else if (n >= 3 && (s[0] & 0xF0) == 0xE0) {
    const char32_t c = ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    if (is_trail_byte(s[1]) && is_trail_byte(s[2]) && c >= 0x800 && is_valid_codepoint(c)) cp = c, len = 3;
  } else if (n >= 4 && (s[0] & 0xF8) == 0xF0) {
    const char32_t c = ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    if (is_trail_byte(s[1]) && is_trail_byte(s[2]) && is_trail_byte(s[3]) && c >= 0x10000 && is_valid_codepoint(c))
      cp = c, len = 4;
  }
  if (codepoint) *codepoint = cp;
  if (len == 0) {
    *length = 1;
    return false;
  }
  *length = len;
  return true;
}

PrecompiledCharsmap::PrecompiledCharsmap(std::string_view blob, const std::string& source) : source_(source) {
  if (blob.size() <= 4) fail("{}: malformed precompiled_charsmap (blob of {} bytes is too short)", source, blob.size());
  uint32_t trie_size = 0;
  for (int i = 0; i < 4; ++i) trie_size |= static_cast<uint32_t>(static_cast<uint8_t>(blob[i])) << (8 * i);
  if (trie_size > blob.size() - 4)
    fail("{}: malformed precompiled_charsmap (trie size {} exceeds the blob of {} bytes)", source, trie_size,
         blob.size());
  if (trie_size < 4) fail("{}: malformed precompiled_charsmap (empty trie)", source);
  units_.resize(trie_size / 4);  // SentencePiece also rounds the unit count down
  std::memcpy(units_.data(), blob.data() + 4, units_.size() * 4);  // little-endian host, as SentencePiece assumes  // little-endian host, as SentencePiece assumes
  normalized_.assign(blob.substr(4 + trie_size));
}

std::pair<size_t, std::string_view> PrecompiledCharsmap::longest_match(std::string_view input) const {
  // darts-clone commonPrefixSearch from the root; out-of-range ids (a corrupt trie) end the walk.
  const size_t num_units = units_.size();
  if (num_units == 0) return {0, {}};
  size_t longest_length = 0;
  uint32_t longest_value = 0;
  uint32_t id = 0;
  DartsUnit unit{units_[0]};
  id ^= unit.offset();
  for (size_t i = 0; i < input.size(); ++i) {
    const auto byte = static_cast<uint8_t>(input[i]);
    id ^= byte;
    if (id >= num_units) break;
    unit = DartsUnit{units_[id]};
    if (unit.label() != byte) break;
    id ^= unit.offset();
    if (unit.has_leaf()) {
      if (id >= num_units) break;
      longest_length = i + 1;
      longest_value = DartsUnit{units_[id]}.value();
    }
  }
  if (longest_length == 0) return {0, {}};
  if (longest_value >= normalized_.size())
    fail("{}: malformed precompiled_charsmap (replacement offset {} beyond the {} bytes of strings)", source_,
         longest_value, normalized_.size());
  const char* start = normalized_.data() + longest_value;
  const size_t length = strnlen(start, normalized_.size() - longest_value);
  return {longest_length, std::string_view(start, length)};
}

SpmNormalizer::SpmNormalizer(PrecompiledCharsmap charsmap, NormalizerOptions options,
                             std::vector<std::string> user_defined)
    : charsmap_(std::move(charsmap)), options_(options), user_defined_(std::move(user_defined)) {
  std::erase_if(user_defined_, [](const std::string& s) { return s.empty(); });
  std::sort(user_defined_.begin(), user_defined_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& symbol : user_defined_) user_defined_first_byte_[static_cast<uint8_t>(symbol[0])] = true;
}

size_t SpmNormalizer::user_defined_match(std::string_view input) const {
  if (user_defined_.empty() || !user_defined_first_byte_[static_cast<uint8_t>(input[0])]) return 0;
  for (const auto& symbol : user_defined_)  // longest first, so the first hit is the longest match
    if (input.starts_with(symbol)) return symbol.size();
  return 0;
}

std::pair<std::string_view, size_t> SpmNormalizer::normalize_prefix(std::string_view input) const {
  // User-defined symbols are never normalised.
  if (const size_t length = user_defined_match(input)) return {input.substr(0, length), length};
  if (!charsmap_.empty()) {
    auto [length, replacement] = charsmap_.longest_match(input);
    if (length > 0) return {replacement, length};
  }
  size_t length = 0;
  if (!decode_utf8_char(input, &length)) return {"\xEF\xBF\xBD", 1};  // a malformed byte becomes U+FFFD
  return {input.substr(0, length), length};
}

std::string SpmNormalizer::normalize(std::string_view input) const {
  std::string out;
  normalize(input, out);
  return out;
}

void SpmNormalizer::normalize(std::string_view input, std::string& out) const {
  out.clear();
  if (input.empty()) return;
  const std::string_view space = options_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");

  if (options_.remove_extra_whitespaces) {  // drop leading spaces (after normalisation: "\t" maps to " " too)
    while (!input.empty()) {
      const auto [replacement, consumed] = normalize_prefix(input);
      if (replacement != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return;
  out.reserve(input.size() * 3);

  if (!options_.treat_whitespace_as_suffix && options_.add_dummy_prefix) out.append(space);

  bool is_prev_space = options_.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [replacement, consumed] = normalize_prefix(input);
    while (is_prev_space && !replacement.empty() && replacement.front() == ' ') replacement.remove_prefix(1);
    if (!replacement.empty()) {
      for (const char c : replacement) {
        if (options_.escape_whitespaces && c == ' ')
          out.append(kSpaceSymbol);
        else
          out.push_back(c);
      }
      is_prev_space = replacement.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!options_.remove_extra_whitespaces) is_prev_space = false;
  }

  if (options_.remove_extra_whitespaces)
    while (out.ends_with(space)) out.resize(out.size() - space.size());

  if (options_.treat_whitespace_as_suffix && options_.add_dummy_prefix) out.append(space);
}

}  // namespace guardkit::text
