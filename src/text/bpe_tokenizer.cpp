#include "text/bpe_tokenizer.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "text/split_regex.h"
#include "text/unicode.h"
#include "text/unicode_normalization.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace {
using json = nlohmann::json;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Token text -> id, open addressing over one flat array with the strings in one arena: vocabulary lookups are the
// hottest operation of encoding, and this needs about one cache miss per lookup where std::unordered_map needs three.
class TokenTable {
 public:
  void reserve(size_t n) {
    size_t want = 16;
    while (want < n * 2) want <<= 1;
    if (want > slots_.size()) rehash(want);
  }
  // Inserts or overwrites.
  void set(std::string_view key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
    const uint64_t h = hash_of(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.value < 0) {
        if (arena_.size() + key.size() > UINT32_MAX) fail("tokenizer vocabulary text exceeds 4 GiB");
        slot = {h, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), value};
        arena_.append(key);
        ++size_;
        return;
      }
      if (slot.hash == h && key_of(slot) == key) {
        slot.value = value;
        return;
      }
    }
  }
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash_of(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.value < 0) return -1;
      if (slot.hash == h && slot.length == key.size() && key_of(slot) == key) return slot.value;
    }
  }
  size_t size() const { return size_; }
  template <typename F>
  void for_each(F&& f) const {
    for (const Slot& slot : slots_)
      if (slot.value >= 0) f(key_of(slot), slot.value);
  }
  void clear() {
    slots_.clear();
    arena_.clear();
    size_ = 0;
    mask_ = 0;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, length = 0;
    int32_t value = -1;  // -1: empty
  };
  static uint64_t hash_of(std::string_view key) {
    const char* p = key.data();
    size_t n = key.size();
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      h = (h ^ w) * 0xff51afd7ed558ccdull;
      h ^= h >> 32;
      p += 8;
      n -= 8;
    }
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
  }
  std::string_view key_of(const Slot& slot) const { return std::string_view(arena_).substr(slot.offset, slot.length); }
  void rehash(size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const Slot& slot : old) {
      if (slot.value < 0) continue;
      size_t i = slot.hash & mask_;
      while (slots_[i].value >= 0) i = (i + 1) & mask_;
      slots_[i] = slot;
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t size_ = 0;
  size_t mask_ = 0;
};

// ----------------------------------------------------------------------------------------------------------------
// Reading tokenizer.json with errors that say where.

struct Where {
  const std::string& source;
  std::string path;
  int depth = 0;  // nesting, bounded so a hostile file cannot exhaust the stack through nested Sequences
  Where at(const std::string& key) const { return deeper(path.empty() ? key : path + "." + key); }
  Where at(size_t index) const { return deeper(path + "[" + std::to_string(index) + "]"); }
  Where deeper(std::string p) const {
    if (depth >= 64) fail("{}: {}: nested too deeply", source, path);
    return {source, std::move(p), depth + 1};
  }
  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {}: {}", source, path.empty() ? "(root)" : path, fmt::format(format, std::forward<Args>(args)...));
  }
};

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_bool(const json& obj, const char* key, bool fallback, const Where& where) {
  const json* v = member(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) where.at(key).error("expected true or false");
  return v->get<bool>();
}

std::string get_string(const json& obj, const char* key, const Where& where) {
  const json* v = member(obj, key);
  if (!v || !v->is_string()) where.at(key).error("expected a string");
  return v->get<std::string>();
}

std::optional<std::string> get_optional_string(const json& obj, const char* key, const Where& where) {
  const json* v = member(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) where.at(key).error("expected a string");
  return v->get<std::string>();
}

int64_t get_int(const json& v, const Where& where, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) where.error("expected an integer");
  int64_t value;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) where.error("{} is out of range [{}, {}]", u, lo, hi);
    value = static_cast<int64_t>(u);
  } else {
    value = v.get<int64_t>();
  }
  if (value < lo || value > hi) where.error("{} is out of range [{}, {}]", value, lo, hi);
  return value;
}

std::string type_of(const json& obj, const Where& where) {
  if (!obj.is_object()) where.error("expected an object");
  return get_string(obj, "type", where);
}

// ----------------------------------------------------------------------------------------------------------------
// GPT-2's byte <-> printable-character map used by ByteLevel.

struct ByteMap {
  struct Mapped {
    char bytes[2] = {0, 0};
    uint8_t length = 0;  // every stand-in is below U+0800, so one or two UTF-8 bytes
  };
  Mapped byte_utf8[256];
  std::unordered_map<char32_t, uint8_t> cp_to_byte;
  ByteMap() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      std::string utf8;
      unicode::append_utf8(utf8, cp);
      byte_utf8[b].length = static_cast<uint8_t>(utf8.size());
      for (size_t k = 0; k < utf8.size(); ++k) byte_utf8[b].bytes[k] = utf8[k];
      cp_to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// ----------------------------------------------------------------------------------------------------------------
// A list of text pieces in one buffer, what pre-tokenizers pass along.

struct PieceList {
  std::string buf;
  std::vector<size_t> ends;
  bool first_at_origin = false;  // piece 0 starts at offset 0 of the original text (Metaspace's prepend "first")
  void clear() {
    buf.clear();
    ends.clear();
    first_at_origin = false;
  }
  size_t size() const { return ends.size(); }
  std::string_view piece(size_t k) const {
    const size_t begin = k == 0 ? 0 : ends[k - 1];
    return std::string_view(buf).substr(begin, ends[k] - begin);
  }
  void push(std::string_view s) {
    if (s.empty()) return;
    buf.append(s);
    ends.push_back(buf.size());
  }
};

using Span = std::pair<size_t, size_t>;

// Hugging Face's SplitDelimiterBehavior applied to the matches of a pattern in `text` (tokenizers' split()).
// Returns whether the first piece it emits starts at offset 0 of `text`.
bool split_with_behavior(std::string_view text, const std::vector<Span>& found, const std::string& behavior,
                         bool invert, PieceList& out) {
  // (offsets, is_match) covering the whole text.
  std::vector<std::pair<Span, bool>> parts;
  size_t prev = 0;
  for (const auto& [b, e] : found) {
    if (prev != b) parts.push_back({{prev, b}, false});
    parts.push_back({{b, e}, true});
    prev = e;
  }
  if (prev != text.size()) parts.push_back({{prev, text.size()}, false});
  if (invert)
    for (auto& p : parts) p.second = !p.second;

  std::vector<Span> pieces;
  if (behavior == "Isolated") {
    for (const auto& p : parts) pieces.push_back(p.first);
  } else if (behavior == "Removed") {
    for (const auto& p : parts)
      if (!p.second) pieces.push_back(p.first);
  } else if (behavior == "MergedWithPrevious") {
    bool previous_match = false;
    for (const auto& p : parts) {
      if (p.second && !previous_match && !pieces.empty()) pieces.back().second = p.first.second;
      else pieces.push_back(p.first);
      previous_match = p.second;
    }
  } else if (behavior == "MergedWithNext") {
    bool previous_match = false;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (it->second && !previous_match && !pieces.empty()) pieces.back().first = it->first.first;
      else pieces.push_back(it->first);
      previous_match = it->second;
    }
    std::reverse(pieces.begin(), pieces.end());
  } else {  // Contiguous
    bool previous_match = false;
    for (const auto& p : parts) {
      if (p.second && previous_match && !pieces.empty()) pieces.back().second = p.first.second;
      else pieces.push_back(p.first);
      previous_match = p.second;
    }
  }
  bool first_at_zero = false, first = true;
  for (const auto& [b, e] : pieces) {
    if (b == e) continue;
    if (first) first_at_zero = b == 0, first = false;
    out.push(text.substr(b, e - b));
  }
  return first_at_zero;
}

bool valid_behavior(const std::string& b) {
  return b == "Isolated" || b == "Removed" || b == "MergedWithPrevious" || b == "MergedWithNext" || b == "Contiguous";
}

// A Split/Replace pattern: {"Regex": "..."} or {"String": "..."}.
struct Pattern {
  std::optional<SplitRegex> regex;
  std::string literal;

  static Pattern parse(const json& spec, const Where& where) {
    Pattern p;
    if (!spec.is_object()) where.error("expected {{\"Regex\": ...}} or {{\"String\": ...}}");
    if (const json* r = member(spec, "Regex")) {
      if (!r->is_string()) where.at("Regex").error("expected a string");
      try {
        p.regex.emplace(r->get<std::string>());
      } catch (const Error& e) {
        where.at("Regex").error("{}", e.what());
      }
    } else if (const json* s = member(spec, "String")) {
      if (!s->is_string()) where.at("String").error("expected a string");
      p.literal = s->get<std::string>();
    } else {
      where.error("expected {{\"Regex\": ...}} or {{\"String\": ...}}");
    }
    return p;
  }

  void find_all(std::string_view text, std::vector<Span>& out) const {
    if (regex) {
      regex->find_all(text, out);
      return;
    }
    if (literal.empty()) return;
    for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos + literal.size()))
      out.emplace_back(pos, pos + literal.size());
  }
};

// ----------------------------------------------------------------------------------------------------------------
// Normalizers.

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;
};

struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> steps;
  void apply(std::string& text) const override {
    for (const auto& s : steps) s->apply(text);
  }
};

struct PrependNormalizer : Normalizer {
  std::string prefix;
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix);
  }
};

struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  void apply(std::string& text) const override {
    std::vector<Span> found;
    pattern.find_all(text, found);
    if (found.empty()) return;
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : found) {
      out.append(text, prev, b - prev);
      out.append(content);
      prev = e;
    }
    out.append(text, prev, std::string::npos);
    text = std::move(out);
  }
};

struct UnicodeNormalizer : Normalizer {
  unicode::NormalizationForm form;
  explicit UnicodeNormalizer(unicode::NormalizationForm f) : form(f) {}
  void apply(std::string& text) const override { text = unicode::normalize(text, form); }
};

struct StripNormalizer : Normalizer {
  bool left = true, right = true;
  void apply(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left) {
      while (begin < end) {
        size_t next = begin;
        if (!unicode::is_whitespace(unicode::decode_utf8(text, next))) break;
        begin = next;
      }
    }
    if (right) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<uint8_t>(text[start]) & 0xc0) == 0x80) --start;
        size_t tmp = start;
        if (!unicode::is_whitespace(unicode::decode_utf8(text, tmp))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }
};

std::unique_ptr<Normalizer> parse_normalizer(const json& spec, const Where& where) {
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    const json* list = member(spec, "normalizers");
    if (!list || !list->is_array()) where.at("normalizers").error("expected an array");
    for (size_t k = 0; k < list->size(); ++k) seq->steps.push_back(parse_normalizer((*list)[k], where.at("normalizers").at(k)));
    return seq;
  }
  if (type == "Prepend") {
    auto p = std::make_unique<PrependNormalizer>();
    p->prefix = get_string(spec, "prepend", where);
    return p;
  }
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceNormalizer>();
    const json* pattern = member(spec, "pattern");
    if (!pattern) where.at("pattern").error("missing");
    r->pattern = Pattern::parse(*pattern, where.at("pattern"));
    r->content = get_string(spec, "content", where);
    return r;
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::NFKD);
  if (type == "Strip") {
    auto strip = std::make_unique<StripNormalizer>();
    strip->left = get_bool(spec, "strip_left", true, where);
    strip->right = get_bool(spec, "strip_right", true, where);
    return strip;
  }
  where.error("normalizer type \"{}\" is not supported (Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD are)",
              type);
}

// ----------------------------------------------------------------------------------------------------------------
// Pre-tokenizers: each turns a list of pieces into a finer list.

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(const PieceList& in, PieceList& out) const = 0;
};

struct SequencePreTokenizer : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void apply(const PieceList& in, PieceList& out) const override {
    if (steps.empty()) {
      out = in;
      return;
    }
    PieceList a, b;
    const PieceList* src = &in;
    for (size_t k = 0; k < steps.size(); ++k) {
      PieceList& dst = k + 1 == steps.size() ? out : (src == &a ? b : a);
      dst.clear();
      steps[k]->apply(*src, dst);
      src = &dst;
    }
  }
};

struct SplitPreTokenizer : PreTokenizer {
  Pattern pattern;
  std::string behavior;
  bool invert = false;
  void apply(const PieceList& in, PieceList& out) const override {
    std::vector<Span> found;
    for (size_t k = 0; k < in.size(); ++k) {
      const std::string_view piece = in.piece(k);
      found.clear();
      pattern.find_all(piece, found);
      const bool at_zero = split_with_behavior(piece, found, behavior, invert, out);
      if (k == 0) out.first_at_origin = in.first_at_origin && at_zero;
    }
  }
};

struct ByteLevelPreTokenizer : PreTokenizer {
  bool add_prefix_space = true;
  std::optional<SplitRegex> gpt2;  // set when use_regex
  void apply(const PieceList& in, PieceList& out) const override {
    const ByteMap& map = byte_map();
    std::vector<Span> found;
    std::string with_space;
    out.first_at_origin = in.first_at_origin;
    for (size_t k = 0; k < in.size(); ++k) {
      std::string_view piece = in.piece(k);
      if (add_prefix_space && piece[0] != ' ') {
        with_space.assign(" ");
        with_space.append(piece);
        piece = with_space;
      }
      found.clear();
      if (gpt2) gpt2->find_all(piece, found);
      else found.emplace_back(0, piece.size());
      // gpt2 matches every position (no gaps), so the matches are the Isolated split.
      // Each byte becomes one or two UTF-8 bytes of its stand-in character: reserve the worst case, then write.
      size_t at = out.buf.size();
      out.buf.resize(at + 2 * piece.size());
      char* dst = out.buf.data();
      for (const auto& [b, e] : found) {
        for (size_t i = b; i < e; ++i) {
          const auto& mapped = map.byte_utf8[static_cast<uint8_t>(piece[i])];
          dst[at] = mapped.bytes[0];
          dst[at + 1] = mapped.bytes[1];
          at += mapped.length;
        }
        out.ends.push_back(at);
      }
      out.buf.resize(at);
    }
  }
};

struct DigitsPreTokenizer : PreTokenizer {
  bool individual = false;
  void apply(const PieceList& in, PieceList& out) const override {
    std::vector<Span> found;
    for (size_t k = 0; k < in.size(); ++k) {
      const std::string_view piece = in.piece(k);
      found.clear();
      for (size_t i = 0; i < piece.size(); ++i)
        if (piece[i] >= '0' && piece[i] <= '9') found.emplace_back(i, i + 1);
      split_with_behavior(piece, found, individual ? "Isolated" : "Contiguous", false, out);
    }
    out.first_at_origin = in.first_at_origin;
  }
};

struct WhitespaceSplitPreTokenizer : PreTokenizer {
  void apply(const PieceList& in, PieceList& out) const override {
    if (in.size() > 0) {
      size_t next = 0;
      out.first_at_origin = in.first_at_origin && !unicode::is_whitespace(unicode::decode_utf8(in.piece(0), next));
    }
    for (size_t k = 0; k < in.size(); ++k) {
      const std::string_view piece = in.piece(k);
      size_t start = 0;
      for (size_t i = 0; i < piece.size();) {
        size_t next = i;
        const char32_t cp = unicode::decode_utf8(piece, next);
        if (unicode::is_whitespace(cp)) {
          out.push(piece.substr(start, i - start));
          start = next;
        }
        i = next;
      }
      out.push(piece.substr(start));
    }
  }
};

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  size_t prev = 0;
  for (size_t pos = text.find(from); pos != std::string_view::npos; pos = text.find(from, pos + from.size())) {
    out.append(text.substr(prev, pos - prev));
    out.append(to);
    prev = pos + from.size();
  }
  out.append(text.substr(prev));
  return out;
}

enum class PrependScheme { Always, First, Never };

// "replacement" (one character) and "prepend_scheme", or the older "add_prefix_space", of Metaspace components.
void parse_metaspace(const json& spec, const Where& where, std::string& replacement, PrependScheme& scheme) {
  replacement = get_string(spec, "replacement", where);
  size_t i = 0;
  if (replacement.empty() || !unicode::is_valid_utf8(replacement) || (unicode::decode_utf8(replacement, i), i) != replacement.size())
    where.at("replacement").error("expected exactly one character");
  scheme = get_bool(spec, "add_prefix_space", true, where) ? PrependScheme::Always : PrependScheme::Never;
  if (auto p = get_optional_string(spec, "prepend_scheme", where)) {
    if (*p == "always") scheme = PrependScheme::Always;
    else if (*p == "first") scheme = PrependScheme::First;
    else if (*p == "never") scheme = PrependScheme::Never;
    else where.at("prepend_scheme").error("unknown prepend_scheme \"{}\"", *p);
  }
}

// SentencePiece-style words: spaces become the replacement character ("▁"), which may also start the text.
struct MetaspacePreTokenizer : PreTokenizer {
  std::string replacement;
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;
  void apply(const PieceList& in, PieceList& out) const override {
    std::vector<Span> found;
    out.first_at_origin = in.first_at_origin;
    for (size_t k = 0; k < in.size(); ++k) {
      std::string text = replace_all(in.piece(k), " ", replacement);
      const bool prepend = scheme == PrependScheme::Always || (scheme == PrependScheme::First && k == 0 && in.first_at_origin);
      if (prepend && text.compare(0, replacement.size(), replacement) != 0) text.insert(0, replacement);
      if (!split) {
        out.push(text);
        continue;
      }
      found.clear();
      for (size_t pos = text.find(replacement); pos != std::string::npos; pos = text.find(replacement, pos + replacement.size()))
        found.emplace_back(pos, pos + replacement.size());
      split_with_behavior(text, found, "MergedWithNext", false, out);
    }
  }
};

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& spec, const Where& where, bool& has_byte_level) {
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    const json* list = member(spec, "pretokenizers");
    if (!list || !list->is_array()) where.at("pretokenizers").error("expected an array");
    for (size_t k = 0; k < list->size(); ++k)
      seq->steps.push_back(parse_pre_tokenizer((*list)[k], where.at("pretokenizers").at(k), has_byte_level));
    return seq;
  }
  if (type == "Split") {
    auto split = std::make_unique<SplitPreTokenizer>();
    const json* pattern = member(spec, "pattern");
    if (!pattern) where.at("pattern").error("missing");
    split->pattern = Pattern::parse(*pattern, where.at("pattern"));
    split->behavior = get_string(spec, "behavior", where);
    if (!valid_behavior(split->behavior)) where.at("behavior").error("unknown split behavior \"{}\"", split->behavior);
    split->invert = get_bool(spec, "invert", false, where);
    return split;
  }
  if (type == "ByteLevel") {
    has_byte_level = true;
    auto bl = std::make_unique<ByteLevelPreTokenizer>();
    bl->add_prefix_space = get_bool(spec, "add_prefix_space", true, where);
    if (get_bool(spec, "use_regex", true, where)) bl->gpt2.emplace(kGpt2SplitPattern);
    return bl;
  }
  if (type == "Digits") {
    auto d = std::make_unique<DigitsPreTokenizer>();
    d->individual = get_bool(spec, "individual_digits", false, where);
    return d;
  }
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePreTokenizer>();
    parse_metaspace(spec, where, m->replacement, m->scheme);
    m->split = get_bool(spec, "split", true, where);
    return m;
  }
  where.error("pre-tokenizer type \"{}\" is not supported (Sequence, Split, ByteLevel, Metaspace, Digits and "
              "WhitespaceSplit are)", type);
}

// ----------------------------------------------------------------------------------------------------------------
// Decoders: Hugging Face decoders map a list of token strings to a list of strings that are then concatenated.

// Rust's String::from_utf8_lossy.
std::string lossy_utf8(std::string_view bytes) {
  return unicode::is_valid_utf8(bytes) ? std::string(bytes) : unicode::make_valid_utf8(bytes);
}

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> steps;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps) s->apply(tokens);
  }
};

struct ByteLevelDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    const ByteMap& map = byte_map();
    std::string bytes;
    for (const auto& token : tokens) {
      // A token with a character outside the byte alphabet goes through as its own UTF-8 (as tokenizers does).
      const size_t mark = bytes.size();
      bool all_mapped = true;
      for (size_t i = 0; i < token.size();) {
        const char32_t cp = unicode::decode_utf8(token, i);
        auto it = map.cp_to_byte.find(cp);
        if (it == map.cp_to_byte.end()) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(it->second));
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes.append(token);
      }
    }
    tokens.assign(1, lossy_utf8(bytes));
  }
};

struct ReplaceDecoder : Decoder {
  std::string from, to;
  void apply(std::vector<std::string>& tokens) const override {
    if (from.empty()) return;
    for (auto& t : tokens) {
      std::string out;
      size_t prev = 0;
      for (size_t pos = t.find(from); pos != std::string::npos; pos = t.find(from, pos + from.size())) {
        out.append(t, prev, pos - prev);
        out.append(to);
        prev = pos + from.size();
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }
};

struct FuseDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

struct StripDecoder : Decoder {
  std::string content;
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    if (content.empty()) return;
    for (auto& t : tokens) {
      size_t s = 0;
      for (size_t k = 0; k < start && t.compare(s, content.size(), content) == 0; ++k) s += content.size();
      size_t e = t.size();
      for (size_t k = 0; k < stop && e >= s + content.size() && t.compare(e - content.size(), content.size(), content) == 0; ++k)
        e -= content.size();
      t = t.substr(s, e - s);
    }
  }
};

struct ByteFallbackDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (unicode::is_valid_utf8(pending)) out.push_back(pending);
      else
        for (size_t k = 0; k < pending_count; ++k) out.push_back("\xef\xbf\xbd");
      pending.clear();
      pending_count = 0;
    };
    for (const auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        pending.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        ++pending_count;
      } else {
        flush();
        out.push_back(t);
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement;
  PrependScheme scheme = PrependScheme::Always;
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)  // in the first token the replacement is dropped, as tokenizers does
      tokens[i] = replace_all(tokens[i], replacement, i == 0 && scheme != PrependScheme::Never ? "" : " ");
  }
};

std::unique_ptr<Decoder> parse_decoder(const json& spec, const Where& where) {
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    const json* list = member(spec, "decoders");
    if (!list || !list->is_array()) where.at("decoders").error("expected an array");
    for (size_t k = 0; k < list->size(); ++k) seq->steps.push_back(parse_decoder((*list)[k], where.at("decoders").at(k)));
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    parse_metaspace(spec, where, m->replacement, m->scheme);
    return m;
  }
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceDecoder>();
    const json* pattern = member(spec, "pattern");
    if (!pattern || !pattern->is_object() || !member(*pattern, "String"))
      where.at("pattern").error("only {{\"String\": ...}} patterns are supported in the Replace decoder");
    r->from = get_string(*pattern, "String", where.at("pattern"));
    r->to = get_string(spec, "content", where);
    return r;
  }
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    s->content = get_string(spec, "content", where);
    s->start = static_cast<size_t>(get_int(member(spec, "start") ? spec["start"] : json(0), where.at("start"), 0, 1 << 20));
    s->stop = static_cast<size_t>(get_int(member(spec, "stop") ? spec["stop"] : json(0), where.at("stop"), 0, 1 << 20));
    return s;
  }
  where.error("decoder type \"{}\" is not supported (Sequence, ByteLevel, Metaspace, Replace, Strip, Fuse, ByteFallback "
              "are)", type);
}

// ----------------------------------------------------------------------------------------------------------------
// Added tokens: found in the text before anything else (leftmost, then longest), as tokenizers' AddedVocabulary.

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

struct Segment {
  std::string_view text;
  int32_t id = -1;  // >= 0: an added token
};

inline bool is_word_char(char32_t cp) { return unicode::is_letter(cp) || unicode::is_number(cp) || cp == '_'; }

class AddedTokenMatcher {
 public:
  // `contents[k]` is what to look for (the token content, normalized for normalized tokens).
  void add(std::string content, const AddedToken* token) {
    if (content.empty()) return;
    entries_.push_back({std::move(content), token});
  }
  void finish() {
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const Entry& a, const Entry& b) { return a.content.size() > b.content.size(); });
    for (size_t k = 0; k < entries_.size(); ++k) by_first_byte_[static_cast<uint8_t>(entries_[k].content[0])].push_back(k);
  }
  bool empty() const { return entries_.empty(); }

  // Splits `text` into added-token segments and the text between them. With skip_special, special tokens are not
  // looked for (their text stays ordinary text).
  void split(std::string_view text, bool skip_special, std::vector<Segment>& out) const {
    size_t prev_end = 0;  // end of the last emitted segment
    size_t pos = 0;
    while (pos < text.size()) {
      const auto& candidates = by_first_byte_[static_cast<uint8_t>(text[pos])];
      const Entry* hit = nullptr;
      for (size_t k : candidates) {
        const Entry& e = entries_[k];
        if (skip_special && e.token->special) continue;
        if (text.compare(pos, e.content.size(), e.content) == 0) {
          hit = &e;  // longest first
          break;
        }
      }
      if (!hit) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + hit->content.size();
      const AddedToken& tok = *hit->token;
      if (tok.single_word && !(boundary_before(text, start) && boundary_after(text, stop))) {
        ++pos;
        continue;
      }
      if (tok.lstrip) {
        while (start > prev_end) {
          size_t back = start - 1;
          while (back > prev_end && (static_cast<uint8_t>(text[back]) & 0xc0) == 0x80) --back;
          size_t tmp = back;
          if (!unicode::is_whitespace(unicode::decode_utf8(text, tmp))) break;
          start = back;
        }
      }
      if (tok.rstrip) {
        while (stop < text.size()) {
          size_t tmp = stop;
          if (!unicode::is_whitespace(unicode::decode_utf8(text, tmp))) break;
          stop = tmp;
        }
      }
      if (start > prev_end) out.push_back({text.substr(prev_end, start - prev_end), -1});
      out.push_back({text.substr(start, stop - start), tok.id});
      prev_end = stop;
      pos = stop;
    }
    if (prev_end < text.size()) out.push_back({text.substr(prev_end), -1});
  }

 private:
  static bool boundary_before(std::string_view text, size_t at) {
    if (at == 0) return true;
    size_t back = at - 1;
    while (back > 0 && (static_cast<uint8_t>(text[back]) & 0xc0) == 0x80) --back;
    return !is_word_char(unicode::decode_utf8(text, back));
  }
  static bool boundary_after(std::string_view text, size_t at) {
    if (at >= text.size()) return true;
    return !is_word_char(unicode::decode_utf8(text, at));
  }
  struct Entry {
    std::string content;
    const AddedToken* token;
  };
  std::vector<Entry> entries_;
  std::vector<size_t> by_first_byte_[256];
};

// ----------------------------------------------------------------------------------------------------------------
// The BPE model.

struct BpeModel {
  TokenTable vocab;
  std::vector<std::string> id_to_token;  // by id; "" where the vocabulary has a hole
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  std::unordered_map<uint64_t, Merge> merges;
  std::unordered_map<char32_t, int32_t> char_ids;  // single-character tokens
  std::optional<int32_t> unk_id;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  int32_t byte_ids[256];       // <0xXX> tokens for byte_fallback, -1 when absent

  static constexpr size_t kCacheCapacity = 200000;
  static constexpr size_t kCacheMaxWordBytes = 256;  // longer words are rare and would fill memory (as tokenizers)
  mutable std::mutex cache_mutex;
  mutable TokenTable cache;                // word -> entry index
  mutable std::vector<std::pair<uint32_t, uint32_t>> cache_entries;  // (offset, count) in cache_ids
  mutable std::vector<int32_t> cache_ids;

  static uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  std::optional<int32_t> find(std::string_view token) const {
    const int32_t id = vocab.find(token);
    if (id < 0) return std::nullopt;
    return id;
  }

  void tokenize(std::string_view word, std::vector<int32_t>& out) const {
    if (ignore_merges) {
      const int32_t id = vocab.find(word);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    if (word.size() <= kCacheMaxWordBytes) {
      std::lock_guard<std::mutex> lock(cache_mutex);
      const int32_t entry = cache.find(word);
      if (entry >= 0) {
        const auto [offset, count] = cache_entries[entry];
        out.insert(out.end(), cache_ids.begin() + offset, cache_ids.begin() + offset + count);
        return;
      }
    }
    std::vector<int32_t> ids = merge_word(word);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (word.size() <= kCacheMaxWordBytes && cache.size() < kCacheCapacity && cache.find(word) < 0) {
      cache.set(word, static_cast<int32_t>(cache_entries.size()));
      cache_entries.emplace_back(static_cast<uint32_t>(cache_ids.size()), static_cast<uint32_t>(ids.size()));
      cache_ids.insert(cache_ids.end(), ids.begin(), ids.end());
    }
  }

  // The initial symbols of a word (one per character, with unknown-character handling), then merges by rank.
  std::vector<int32_t> merge_word(std::string_view word) const {
    std::vector<int32_t> symbols;
    int32_t pending_unk = -1;  // an [UNK] waiting to be fused with the next one
    const bool plain = prefix.empty() && suffix.empty();
    std::string scratch;
    for (size_t i = 0; i < word.size();) {
      const size_t start = i;
      const char32_t cp = unicode::decode_utf8(word, i);
      std::optional<int32_t> id;
      if (plain) {
        auto it = char_ids.find(cp);
        if (it != char_ids.end()) id = it->second;
      } else {
        scratch.clear();
        if (start > 0) scratch += prefix;
        scratch.append(word.substr(start, i - start));
        if (i == word.size()) scratch += suffix;
        id = find(scratch);
      }
      if (id) {
        if (pending_unk >= 0) symbols.push_back(pending_unk), pending_unk = -1;
        symbols.push_back(*id);
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (size_t b = start; b < i; ++b) all = all && byte_ids[static_cast<uint8_t>(word[b])] >= 0;
        if (all) {
          if (pending_unk >= 0) symbols.push_back(pending_unk), pending_unk = -1;
          for (size_t b = start; b < i; ++b) symbols.push_back(byte_ids[static_cast<uint8_t>(word[b])]);
          continue;
        }
      }
      if (unk_id) {
        if (pending_unk >= 0 && !fuse_unk) symbols.push_back(pending_unk);
        pending_unk = *unk_id;
      }
      // Without an unk token the character is dropped, as tokenizers does.
    }
    if (pending_unk >= 0) symbols.push_back(pending_unk);
    apply_merges(symbols);
    return symbols;
  }

  void apply_merges(std::vector<int32_t>& ids) const {
    const int n = static_cast<int>(ids.size());
    if (n < 2) return;
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (int k = 0; k < n; ++k) prev[k] = k - 1, next[k] = k + 1 < n ? k + 1 : -1;
    // (rank, left position): lowest rank first, leftmost among equal ranks.
    using Entry = std::pair<int32_t, int>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto push_pair = [&](int left) {
      if (left < 0 || next[left] < 0) return;
      auto it = merges.find(pair_key(ids[left], ids[next[left]]));
      if (it != merges.end()) heap.push({it->second.rank, left});
    };
    for (int k = 0; k + 1 < n; ++k) push_pair(k);
    while (!heap.empty()) {
      const auto [rank, left] = heap.top();
      heap.pop();
      if (!alive[left] || next[left] < 0) continue;
      const int right = next[left];
      auto it = merges.find(pair_key(ids[left], ids[right]));
      if (it == merges.end() || it->second.rank != rank) continue;  // stale entry
      ids[left] = it->second.new_id;
      alive[right] = false;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      push_pair(prev[left]);
      push_pair(left);
    }
    std::vector<int32_t> merged;
    for (int k = 0; k >= 0; k = next[k]) merged.push_back(ids[k]);
    ids = std::move(merged);
  }
};

// ----------------------------------------------------------------------------------------------------------------
// Post-processing: the template that puts special tokens around one or two sequences.

struct TemplatePiece {
  bool is_sequence = false;
  int sequence = 0;  // 0 = A, 1 = B
  std::vector<int32_t> ids;
  int32_t type_id = 0;
};

struct Template {
  std::vector<TemplatePiece> single, pair;
  static Template plain() {
    Template t;
    t.single = {{true, 0, {}, 0}};
    t.pair = {{true, 0, {}, 0}, {true, 1, {}, 1}};
    return t;
  }
  static size_t added(const std::vector<TemplatePiece>& pieces) {
    size_t n = 0;
    for (const auto& p : pieces) n += p.ids.size();
    return n;
  }
};

std::vector<TemplatePiece> parse_template_pieces(const json& list, const json& specials, const Where& where) {
  if (!list.is_array()) where.error("expected an array");
  std::vector<TemplatePiece> pieces;
  for (size_t k = 0; k < list.size(); ++k) {
    const Where w = where.at(k);
    const json& item = list[k];
    TemplatePiece piece;
    if (const json* seq = member(item, "Sequence")) {
      piece.is_sequence = true;
      const std::string which = get_string(*seq, "id", w.at("Sequence"));
      if (which != "A" && which != "B") w.at("Sequence").error("id must be \"A\" or \"B\", not \"{}\"", which);
      piece.sequence = which == "A" ? 0 : 1;
      piece.type_id = static_cast<int32_t>(get_int(member(*seq, "type_id") ? (*seq)["type_id"] : json(0), w, 0, 1 << 20));
    } else if (const json* sp = member(item, "SpecialToken")) {
      const std::string name = get_string(*sp, "id", w.at("SpecialToken"));
      const json* entry = member(specials, name.c_str());
      if (!entry) w.error("special token \"{}\" is not in the template's special_tokens", name);
      const json* ids = member(*entry, "ids");
      if (!ids || !ids->is_array()) w.error("special token \"{}\" has no ids", name);
      for (const auto& id : *ids) piece.ids.push_back(static_cast<int32_t>(get_int(id, w, 0, INT32_MAX)));
      piece.type_id = static_cast<int32_t>(get_int(member(*sp, "type_id") ? (*sp)["type_id"] : json(0), w, 0, 1 << 20));
    } else {
      w.error("expected {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}");
    }
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

void parse_post_processor(const json& spec, const Where& where, std::optional<Template>& out) {
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    const json* list = member(spec, "processors");
    if (!list || !list->is_array()) where.at("processors").error("expected an array");
    for (size_t k = 0; k < list->size(); ++k) parse_post_processor((*list)[k], where.at("processors").at(k), out);
    return;
  }
  if (type == "ByteLevel") return;  // only adjusts offsets, which guardkit does not report
  if (type == "TemplateProcessing") {
    if (out) where.error("more than one template post-processor");
    const json* specials = member(spec, "special_tokens");
    const json empty = json::object();
    if (specials && !specials->is_object()) where.at("special_tokens").error("expected an object");
    Template t;
    const json* single = member(spec, "single");
    const json* pair = member(spec, "pair");
    if (!single) where.at("single").error("missing");
    t.single = parse_template_pieces(*single, specials ? *specials : empty, where.at("single"));
    t.pair = pair ? parse_template_pieces(*pair, specials ? *specials : empty, where.at("pair")) : Template::plain().pair;
    out = std::move(t);
    return;
  }
  where.error("post-processor type \"{}\" is not supported (Sequence, TemplateProcessing, ByteLevel are)", type);
}

std::optional<std::string> config_token(const json& config, const char* key, const Where& where) {
  const json* v = member(config, key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) return get_string(*v, "content", where.at(key));
  where.at(key).error("expected a string or an object with \"content\"");
}

// transformers' clean_up_tokenization.
std::string clean_up_tokenization(std::string text) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    size_t prev = 0;
    for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + from.size())) {
      out.append(text, prev, pos - prev);
      out.append(to);
      prev = pos + from.size();
    }
    out.append(text, prev, std::string::npos);
    text = std::move(out);
  }
  return text;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  std::string source;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Decoder> decoder;
  BpeModel model;
  std::vector<std::unique_ptr<AddedToken>> added;
  StringMap<int32_t> added_by_content;
  std::unordered_map<int32_t, const AddedToken*> added_by_id;
  std::unordered_set<int32_t> special_ids;
  AddedTokenMatcher raw_matcher, normalized_matcher;
  Template post = Template::plain();
  bool clean_up_spaces = true;
  std::optional<int32_t> bos, eos, pad;
  size_t size = 0;

  // `match_added` false: no added token is looked for at all, not even the non-special ones (`parse_special` is
  // then ignored).
  void encode_text(std::string_view text, bool parse_special, bool match_added, std::vector<int32_t>& ids) const {
    std::vector<Segment> raw;
    if (match_added) raw_matcher.split(text, !parse_special, raw);
    else raw.push_back({text, -1});
    const char* const origin = text.data();
    std::vector<Segment> normalized_segments;
    PieceList in, out;
    for (const Segment& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      std::string normalized_text;
      std::string_view text_view = seg.text;
      if (normalizer) {
        normalized_text.assign(seg.text);
        normalizer->apply(normalized_text);
        text_view = normalized_text;
      }
      normalized_segments.clear();
      if (normalized_matcher.empty() || !match_added) normalized_segments.push_back({text_view, -1});
      else normalized_matcher.split(text_view, !parse_special, normalized_segments);
      for (const Segment& piece : normalized_segments) {
        if (piece.id >= 0) {
          ids.push_back(piece.id);
          continue;
        }
        if (piece.text.empty()) continue;
        in.clear();
        in.push(piece.text);
        in.first_at_origin = seg.text.data() == origin && piece.text.data() == text_view.data();
        const PieceList* words = &in;
        if (pre_tokenizer) {
          out.clear();
          pre_tokenizer->apply(in, out);
          words = &out;
        }
        for (size_t k = 0; k < words->size(); ++k) model.tokenize(words->piece(k), ids);
      }
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special, bool match_added = true) const {
    std::vector<int32_t> ids;
    if (unicode::is_valid_utf8(text)) {
      encode_text(text, parse_special, match_added, ids);
    } else {
      // Bytes that are not UTF-8 are read as U+FFFD, as Python's errors="replace" would hand them to tokenizers.
      const std::string valid = unicode::make_valid_utf8(text);
      encode_text(valid, parse_special, match_added, ids);
    }
    return ids;
  }
};

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  const std::string source = tokenizer_json.string();
  json root;
  try {
    root = json::parse(read_file(tokenizer_json));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", source, e.what());
  }
  const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  json config;
  bool has_config = false;
  if (std::filesystem::exists(config_path)) {
    try {
      config = json::parse(read_file(config_path));
    } catch (const json::exception& e) {
      fail("{}: not valid JSON ({})", config_path.string(), e.what());
    }
    if (!config.is_object()) fail("{}: expected a JSON object", config_path.string());
    has_config = true;
  }
  return from_json(root, has_config ? &config : nullptr, source);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(const json& root, const json* config, const std::string& source) {
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  const Where top{impl->source, "", 0};
  if (!root.is_object()) top.error("expected a JSON object (a Hugging Face tokenizer.json)");

  // --- model
  const json* model = member(root, "model");
  if (!model || !model->is_object()) top.at("model").error("missing the \"model\" object");
  const Where wm = top.at("model");
  if (const json* type = member(*model, "type")) {
    if (!type->is_string() || type->get<std::string>() != "BPE")
      wm.at("type").error("model type {} is not BPE", type->dump());
  }
  BpeModel& bpe = impl->model;
  const json* vocab = member(*model, "vocab");
  if (!vocab || !vocab->is_object()) wm.at("vocab").error("expected an object mapping tokens to ids");
  int32_t max_id = -1;
  bpe.vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const json& value = it.value();
    const int32_t id = value.is_number_unsigned() && value.get<uint64_t>() <= (1u << 24)
                           ? static_cast<int32_t>(value.get<uint64_t>())
                           : static_cast<int32_t>(get_int(value, wm.at("vocab").at(it.key()), 0, (1 << 24)));
    if (!unicode::is_valid_utf8(it.key())) wm.at("vocab").error("a token is not valid UTF-8");
    bpe.vocab.set(it.key(), id);
    max_id = std::max(max_id, id);
  }
  bpe.id_to_token.assign(static_cast<size_t>(max_id + 1), "");
  bpe.vocab.for_each([&](std::string_view token, int32_t id) {
    bpe.id_to_token[id] = token;
    size_t i = 0;
    if (!token.empty()) {
      const char32_t cp = unicode::decode_utf8(token, i);
      if (i == token.size()) bpe.char_ids[cp] = id;
    }
  });
  if (const json* d = member(*model, "dropout")) {
    if (!d->is_number()) wm.at("dropout").error("expected a number or null");
    if (d->get<double>() != 0.0) wm.at("dropout").error("BPE dropout is not supported (it makes encoding random)");
  }
  bpe.fuse_unk = get_bool(*model, "fuse_unk", false, wm);
  bpe.byte_fallback = get_bool(*model, "byte_fallback", false, wm);
  bpe.ignore_merges = get_bool(*model, "ignore_merges", false, wm);
  bpe.prefix = get_optional_string(*model, "continuing_subword_prefix", wm).value_or("");
  bpe.suffix = get_optional_string(*model, "end_of_word_suffix", wm).value_or("");
  if (auto unk = get_optional_string(*model, "unk_token", wm)) {
    bpe.unk_id = bpe.find(*unk);
    if (!bpe.unk_id) wm.at("unk_token").error("unk_token \"{}\" is not in the vocabulary", *unk);
  }
  for (int b = 0; b < 256; ++b) {
    const std::string name = fmt::format("<0x{:02X}>", b);
    bpe.byte_ids[b] = bpe.find(name).value_or(-1);
  }
  const json* merges = member(*model, "merges");
  if (!merges || !merges->is_array()) wm.at("merges").error("expected an array");
  bpe.merges.reserve(merges->size());
  for (size_t k = 0; k < merges->size(); ++k) {
    const json& m = (*merges)[k];
    const Where w = wm.at("merges").at(k);
    std::string a, b;
    if (m.is_string()) {
      const std::string line = m.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        w.error("merge \"{}\" is not two tokens separated by one space", line);
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      w.error("expected \"a b\" or [\"a\", \"b\"]");
    }
    const auto ia = bpe.find(a), ib = bpe.find(b);
    if (!ia) w.error("merge token \"{}\" is not in the vocabulary", a);
    if (!ib) w.error("merge token \"{}\" is not in the vocabulary", b);
    const size_t cut = std::min(bpe.prefix.size(), b.size());
    const std::string merged = a + b.substr(cut);
    const auto im = bpe.find(merged);
    if (!im) w.error("merged token \"{}\" is not in the vocabulary", merged);
    bpe.merges[BpeModel::pair_key(*ia, *ib)] = {static_cast<int32_t>(k), *im};
  }

  // --- normalizer, pre-tokenizer, decoder, post-processor
  if (const json* n = member(root, "normalizer")) impl->normalizer = parse_normalizer(*n, top.at("normalizer"));
  bool has_byte_level = false;
  if (const json* p = member(root, "pre_tokenizer")) impl->pre_tokenizer = parse_pre_tokenizer(*p, top.at("pre_tokenizer"), has_byte_level);
  if (const json* d = member(root, "decoder")) impl->decoder = parse_decoder(*d, top.at("decoder"));
  std::optional<Template> post;
  if (const json* p = member(root, "post_processor")) parse_post_processor(*p, top.at("post_processor"), post);
  if (post) impl->post = std::move(*post);

  // --- added tokens
  size_t model_size = bpe.vocab.size();
  size_t added_outside_model = 0;
  if (const json* list = member(root, "added_tokens")) {
    if (!list->is_array()) top.at("added_tokens").error("expected an array");
    for (size_t k = 0; k < list->size(); ++k) {
      const json& t = (*list)[k];
      const Where w = top.at("added_tokens").at(k);
      if (!t.is_object()) w.error("expected an object");
      auto tok = std::make_unique<AddedToken>();
      const json* id = member(t, "id");
      if (!id) w.at("id").error("missing");
      tok->id = static_cast<int32_t>(get_int(*id, w.at("id"), 0, (1 << 24)));
      tok->content = get_string(t, "content", w);
      if (tok->content.empty()) w.at("content").error("empty token");
      if (!unicode::is_valid_utf8(tok->content)) w.at("content").error("not valid UTF-8");
      tok->single_word = get_bool(t, "single_word", false, w);
      tok->lstrip = get_bool(t, "lstrip", false, w);
      tok->rstrip = get_bool(t, "rstrip", false, w);
      tok->special = get_bool(t, "special", false, w);
      tok->normalized = get_bool(t, "normalized", !tok->special, w);
      if (tok->special) impl->special_ids.insert(tok->id);
      if (static_cast<size_t>(tok->id) >= bpe.id_to_token.size() || bpe.id_to_token[tok->id].empty()) ++added_outside_model;
      impl->added_by_content[tok->content] = tok->id;
      impl->added_by_id[tok->id] = tok.get();
      impl->added.push_back(std::move(tok));
    }
  }
  for (const auto& tok : impl->added) {
    if (tok->normalized && impl->normalizer) {
      std::string content = tok->content;
      impl->normalizer->apply(content);
      impl->normalized_matcher.add(std::move(content), tok.get());
    } else {
      impl->raw_matcher.add(tok->content, tok.get());
    }
  }
  impl->raw_matcher.finish();
  impl->normalized_matcher.finish();
  impl->size = model_size + added_outside_model;
  (void)has_byte_level;

  // --- tokenizer_config.json
  auto lookup = [&](const std::string& token) -> std::optional<int32_t> {
    auto it = impl->added_by_content.find(token);
    if (it != impl->added_by_content.end()) return it->second;
    return bpe.find(token);
  };
  if (config) {
    const std::string config_source = (std::filesystem::path(source).parent_path() / "tokenizer_config.json").string();
    const Where wc{config_source, "", 0};
    impl->clean_up_spaces = get_bool(*config, "clean_up_tokenization_spaces", true, wc);
    if (auto t = config_token(*config, "bos_token", wc)) impl->bos = lookup(*t);
    if (auto t = config_token(*config, "eos_token", wc)) impl->eos = lookup(*t);
    if (auto t = config_token(*config, "pad_token", wc)) impl->pad = lookup(*t);
  }
  if (!impl->pad) {
    if (const json* padding = member(root, "padding"))
      if (const json* id = member(*padding, "pad_id")) impl->pad = static_cast<int32_t>(get_int(*id, top.at("padding.pad_id"), 0, INT32_MAX));
  }
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  return impl_->encode(text, parse_special);
}

std::vector<int32_t> BpeTokenizer::encode_plain(std::string_view text) const {
  return impl_->encode(text, /*parse_special=*/false, /*match_added=*/false);
}

Encoding BpeTokenizer::encode_for_model(std::string_view text, std::optional<std::string_view> text_pair,
                                        size_t max_length, Truncation truncation, bool parse_special) const {
  std::vector<int32_t> a = encode(text, parse_special);
  std::vector<int32_t> b;
  if (text_pair) b = encode(*text_pair, parse_special);
  const auto& pieces = text_pair ? impl_->post.pair : impl_->post.single;
  if (max_length > 0 && truncation != Truncation::None) {
    const size_t added = Template::added(pieces);
    if (max_length < added)
      fail("max_length {} is smaller than the {} special tokens the template adds", max_length, added);
    const size_t budget = max_length - added;
    const size_t total = a.size() + b.size();
    if (total > budget) {
      if (truncation == Truncation::LongestFirst) {
        if (!text_pair) {
          a.resize(budget);
        } else {
          // tokenizers' LongestFirst: keep the shorter one whole when the longer can take the cut alone.
          size_t n1 = a.size(), n2 = b.size();
          const bool swap = n1 > n2;
          if (swap) std::swap(n1, n2);
          n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
          if (n1 + n2 > budget) {
            n1 = budget / 2;
            n2 = n1 + budget % 2;
          }
          if (swap) std::swap(n1, n2);
          a.resize(std::min(a.size(), n1));
          b.resize(std::min(b.size(), n2));
        }
      } else {
        std::vector<int32_t>* target = truncation == Truncation::OnlyFirst ? &a : (text_pair ? &b : nullptr);
        if (!target) fail("truncation only_second needs a text pair");
        const size_t to_remove = total - budget;
        if (target->size() <= to_remove)
          fail("truncation: the sequence to truncate is too short to fit max_length {}", max_length);
        target->resize(target->size() - to_remove);
      }
    }
  }
  Encoding enc;
  for (const auto& piece : pieces) {
    const std::vector<int32_t>& ids = piece.is_sequence ? (piece.sequence == 0 ? a : b) : piece.ids;
    enc.ids.insert(enc.ids.end(), ids.begin(), ids.end());
    enc.type_ids.insert(enc.type_ids.end(), ids.size(), piece.type_id);
  }
  enc.attention_mask.assign(enc.ids.size(), 1);
  return enc;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode(ids, skip_special_tokens, impl_->clean_up_spaces);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens, bool clean_up) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && impl_->special_ids.count(id)) continue;
    std::string token = id_to_token(id);
    if (token.empty()) continue;  // ids without a token are skipped, as tokenizers does
    tokens.push_back(std::move(token));
  }
  std::string text;
  if (impl_->decoder) {
    impl_->decoder->apply(tokens);
    for (const auto& t : tokens) text += t;
  } else {
    for (size_t k = 0; k < tokens.size(); ++k) text += (k ? " " : "") + tokens[k];
  }
  return clean_up ? clean_up_tokenization(std::move(text)) : text;
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model.find(token);
}

std::string BpeTokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return it->second->content;
  if (id < 0 || static_cast<size_t>(id) >= impl_->model.id_to_token.size()) return "";
  return impl_->model.id_to_token[id];
}

size_t BpeTokenizer::vocab_size() const { return impl_->size; }
std::optional<int32_t> BpeTokenizer::pad_id() const { return impl_->pad; }
std::optional<int32_t> BpeTokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> BpeTokenizer::eos_id() const { return impl_->eos; }
bool BpeTokenizer::is_special(int32_t id) const { return impl_->special_ids.count(id) > 0; }

}  // namespace guardkit::text
