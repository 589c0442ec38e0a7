#include "text/split_regex.h"

#include <array>
#include <bitset>
#include <deque>
#include <cstdint>

#include "text/unicode.h"
#include "util/error.h"

namespace guardkit::text {
namespace {
using unicode::decode_utf8;

// Simple case folding, as far as tokenizer patterns need it: ASCII letters plus the two non-ASCII code points that
// fold onto ASCII letters (U+017F long s, U+212A Kelvin sign), so (?i:'s) matches what Unicode engines match.
inline char32_t fold_case(char32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp == 0x17f) return 's';
  if (cp == 0x212a) return 'k';
  return cp;
}

// ---------------------------------------------------------------------------------------------------------------
// Character classes.

struct ClassItem {
  enum Kind { Range, Categories, Space, Digit, Word } kind = Range;
  char32_t lo = 0, hi = 0;
  uint32_t category_mask = 0;  // bit c set = general category c
  bool negated = false;

  bool matches(char32_t cp) const {
    bool hit = false;
    switch (kind) {
      case Range: hit = cp >= lo && cp <= hi; break;
      case Categories: hit = (category_mask >> unicode::category(cp)) & 1u; break;
      case Space: hit = unicode::is_whitespace(cp); break;
      case Digit: hit = unicode::category(cp) == unicode::Nd; break;
      case Word: {
        const auto c = unicode::category(cp);
        hit = (c >= unicode::Lu && c <= unicode::Lo) || (c >= unicode::Mn && c <= unicode::Nd) || c == unicode::Pc ||
              cp == 0x200c || cp == 0x200d;
        break;
      }
    }
    return hit != negated;
  }
};

struct CharClass {
  std::vector<ClassItem> items;
  bool negated = false;
  bool fold = false;
  std::bitset<128> ascii;  // precomputed answer for ASCII

  bool raw_matches(char32_t cp) const {
    for (const auto& item : items)
      if (item.matches(cp)) return true;
    return false;
  }
  bool slow_matches(char32_t cp) const {
    bool hit = raw_matches(cp);
    if (!hit && fold) {
      const char32_t folded = fold_case(cp);
      hit = raw_matches(folded) || (folded >= 'a' && folded <= 'z' && raw_matches(folded - 32));
      if (!hit && folded == 's') hit = raw_matches(0x17f);
      if (!hit && folded == 'k') hit = raw_matches(0x212a);
    }
    return hit != negated;
  }
  void finalize() {
    for (char32_t cp = 0; cp < 128; ++cp) ascii[cp] = slow_matches(cp);
  }
  bool matches(char32_t cp) const { return cp < 128 ? ascii[cp] : slow_matches(cp); }
};

// ---------------------------------------------------------------------------------------------------------------
// Syntax tree.

struct Node {
  enum Kind { Empty, Char, Class, Any, Concat, Alt, Repeat, Look, Bol, Eol } kind = Empty;
  char32_t cp = 0;
  bool fold = false;
  bool dot_all = false;  // Any: also matches \n
  int class_index = -1;
  std::vector<Node> children;
  int min = 0, max = -1;  // Repeat; max -1 = unbounded
  bool greedy = true;
  bool negate = false;  // Look
};

Node node_of(Node::Kind kind) {
  Node node;
  node.kind = kind;
  return node;
}

bool nullable(const Node& node) {
  switch (node.kind) {
    case Node::Empty: case Node::Look: case Node::Bol: case Node::Eol: return true;
    case Node::Char: case Node::Class: case Node::Any: return false;
    case Node::Concat:
      for (const auto& c : node.children)
        if (!nullable(c)) return false;
      return true;
    case Node::Alt:
      for (const auto& c : node.children)
        if (nullable(c)) return true;
      return false;
    case Node::Repeat: return node.min == 0 || nullable(node.children[0]);
  }
  return true;
}

struct Flags {
  bool fold = false;
  bool dot_all = false;
};

class Parser {
 public:
  Parser(std::string_view pattern, std::vector<CharClass>& classes) : p_(pattern), classes_(classes) {
    if (!unicode::is_valid_utf8(pattern)) error("the pattern is not valid UTF-8");
  }

  Node parse() {
    Flags flags;
    Node node = parse_alternation(flags);
    if (i_ < p_.size()) error("unbalanced ')'");
    return node;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("regex /{}/: {} (at offset {})", std::string(p_), what, i_);
  }
  bool at_end() const { return i_ >= p_.size(); }
  char32_t peek() const {
    size_t j = i_;
    return decode_utf8(p_, j);
  }
  char32_t next() { return decode_utf8(p_, i_); }
  bool accept(char c) {
    if (!at_end() && p_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }

  Node parse_alternation(Flags& flags) {
    Node alt = node_of(Node::Alt);
    alt.children.push_back(parse_concat(flags));
    while (accept('|')) alt.children.push_back(parse_concat(flags));
    if (alt.children.size() == 1) return std::move(alt.children[0]);
    return alt;
  }

  Node parse_concat(Flags& flags) {
    Node concat = node_of(Node::Concat);
    while (!at_end() && p_[i_] != '|' && p_[i_] != ')') {
      // An inline flag group "(?i)" changes the flags for the rest of the enclosing group.
      if (p_.substr(i_, 2) == "(?" && parse_inline_flags(flags)) continue;
      Node atom = parse_atom(flags);
      concat.children.push_back(parse_quantifier(std::move(atom)));
    }
    if (concat.children.size() == 1) return std::move(concat.children[0]);
    return concat;
  }

  // Parses "(?flags)" at i_ when it is one; returns false (consuming nothing) for other "(?" groups.
  bool parse_inline_flags(Flags& flags) {
    size_t j = i_ + 2;
    while (j < p_.size() && std::string_view("imsxuU-").find(p_[j]) != std::string_view::npos) ++j;
    if (j >= p_.size() || p_[j] != ')' || j == i_ + 2) return false;
    apply_flags(p_.substr(i_ + 2, j - i_ - 2), flags);
    i_ = j + 1;
    return true;
  }

  void apply_flags(std::string_view letters, Flags& flags) {
    bool on = true;
    for (char c : letters) {
      switch (c) {
        case '-': on = false; break;
        case 'i': flags.fold = on; break;
        case 's': flags.dot_all = on; break;
        case 'u': break;  // Unicode mode is always on
        default: error(std::string("unsupported regex flag '") + c + "'");
      }
    }
  }

  Node parse_quantifier(Node atom) {
    while (!at_end()) {
      int min, max;
      const char c = p_[i_];
      if (c == '*') {
        min = 0, max = -1, ++i_;
      } else if (c == '+') {
        min = 1, max = -1, ++i_;
      } else if (c == '?') {
        min = 0, max = 1, ++i_;
      } else if (c == '{') {
        const size_t save = i_;
        if (!parse_braces(min, max)) {
          i_ = save;  // a literal '{'
          return atom;
        }
      } else {
        return atom;
      }
      if (atom.kind == Node::Look || atom.kind == Node::Bol || atom.kind == Node::Eol) error("quantifier on an assertion");
      Node repeat = node_of(Node::Repeat);
      repeat.min = min;
      repeat.max = max;
      if (accept('?')) repeat.greedy = false;
      else if (!at_end() && p_[i_] == '+') error("possessive quantifiers are not supported");
      if (max < 0 && nullable(atom)) error("unbounded repetition of something that can match empty text");
      if (max > 1000 || min > 1000) error("repetition count above 1000");
      repeat.children.push_back(std::move(atom));
      atom = std::move(repeat);
    }
    return atom;
  }

  bool parse_braces(int& min, int& max) {
    ++i_;  // '{'
    auto number = [&](int& out) {
      const size_t start = i_;
      long value = 0;
      while (!at_end() && p_[i_] >= '0' && p_[i_] <= '9') {
        value = value * 10 + (p_[i_] - '0');
        if (value > 100000) value = 100000;
        ++i_;
      }
      out = static_cast<int>(value);
      return i_ > start;
    };
    if (!number(min)) return false;
    if (accept('}')) {
      max = min;
      return true;
    }
    if (!accept(',')) return false;
    if (accept('}')) {
      max = -1;
      return true;
    }
    if (!number(max) || !accept('}')) return false;
    if (max < min) error("repetition {n,m} with m < n");
    return true;
  }

  Node parse_atom(Flags& flags) {
    const char c = p_[i_];
    if (c == '(') return parse_group(flags);
    if (c == '[') return parse_class(flags);
    if (c == '*' || c == '+' || c == '?') error("quantifier without anything to repeat");
    if (c == '.') {
      ++i_;
      Node any = node_of(Node::Any);
      any.dot_all = flags.dot_all;
      return any;
    }
    if (c == '^') {
      ++i_;
      return node_of(Node::Bol);
    }
    if (c == '$') {
      ++i_;
      return node_of(Node::Eol);
    }
    if (c == '\\') {
      ++i_;
      if (at_end()) error("pattern ends with a backslash");
      const char e = p_[i_];
      if (e == 'A') {
        ++i_;
        return node_of(Node::Bol);
      }
      if (e == 'z') {
        ++i_;
        return node_of(Node::Eol);
      }
      ClassItem item;
      char32_t literal;
      if (parse_escape(item, literal)) return class_node({item}, false, flags);
      return char_node(literal, flags);
    }
    return char_node(next(), flags);
  }

  Node char_node(char32_t cp, const Flags& flags) {
    Node node = node_of(Node::Char);
    node.fold = flags.fold;
    node.cp = flags.fold ? fold_case(cp) : cp;
    return node;
  }

  Node class_node(std::vector<ClassItem> items, bool negated, const Flags& flags) {
    CharClass cls;
    cls.items = std::move(items);
    cls.negated = negated;
    cls.fold = flags.fold;
    cls.finalize();
    classes_.push_back(std::move(cls));
    Node node = node_of(Node::Class);
    node.class_index = static_cast<int>(classes_.size() - 1);
    return node;
  }

  Node parse_group(Flags& outer) {
    ++i_;  // '('
    // Nesting is bounded: parsing, compiling and lookahead all recurse once per level.
    if (++depth_ > 100) error("groups nested more than 100 deep");
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    Flags flags = outer;
    Node inner;
    if (accept('?')) {
      if (at_end()) error("unterminated group");
      const char c = p_[i_];
      if (c == ':') {
        ++i_;
        inner = parse_alternation(flags);
      } else if (c == '=' || c == '!') {
        ++i_;
        Node look = node_of(Node::Look);
        look.negate = c == '!';
        look.children.push_back(parse_alternation(flags));
        inner = std::move(look);
      } else if (c == '<' || c == 'P') {
        if (p_.substr(i_, 2) == "<=" || p_.substr(i_, 2) == "<!") error("lookbehind is not supported");
        // Named group: (?<name>...) or (?P<name>...); the name does not matter here.
        const size_t close = p_.find('>', i_);
        if (close == std::string_view::npos) error("unterminated group name");
        i_ = close + 1;
        inner = parse_alternation(flags);
      } else {
        size_t j = i_;
        while (j < p_.size() && p_[j] != ':' && p_[j] != ')') ++j;
        if (j >= p_.size() || p_[j] != ':') error("unsupported group syntax");
        apply_flags(p_.substr(i_, j - i_), flags);
        i_ = j + 1;
        inner = parse_alternation(flags);
      }
    } else {
      inner = parse_alternation(flags);
    }
    if (!accept(')')) error("missing ')'");
    return inner;
  }

  // Parses the escape after a backslash (i_ is on the escaped character). Returns true with `item` set for a class
  // escape (\s, \p{L}, ...), false with `literal` set for a single character.
  bool parse_escape(ClassItem& item, char32_t& literal) {
    const char32_t e = next();
    switch (e) {
      case 's': case 'S': item.kind = ClassItem::Space; item.negated = e == 'S'; return true;
      case 'd': case 'D': item.kind = ClassItem::Digit; item.negated = e == 'D'; return true;
      case 'w': case 'W': item.kind = ClassItem::Word; item.negated = e == 'W'; return true;
      case 'p': case 'P': {
        item.kind = ClassItem::Categories;
        item.negated = e == 'P';
        std::string name;
        if (accept('{')) {
          const size_t close = p_.find('}', i_);
          if (close == std::string_view::npos) error("unterminated \\p{...}");
          name = std::string(p_.substr(i_, close - i_));
          i_ = close + 1;
          if (!name.empty() && name[0] == '^') {
            item.negated = !item.negated;
            name.erase(0, 1);
          }
        } else {
          if (at_end()) error("\\p without a property");
          name = std::string(1, static_cast<char>(next()));
        }
        item.category_mask = category_mask(name);
        return true;
      }
      case 'n': literal = '\n'; return false;
      case 'r': literal = '\r'; return false;
      case 't': literal = '\t'; return false;
      case 'f': literal = '\f'; return false;
      case 'v': literal = '\v'; return false;
      case 'a': literal = 0x07; return false;
      case 'e': literal = 0x1b; return false;
      case '0': literal = 0; return false;
      case 'x': case 'u': {
        std::string digits;
        if (e == 'x' && accept('{')) {
          const size_t close = p_.find('}', i_);
          if (close == std::string_view::npos) error("unterminated \\x{...}");
          digits = std::string(p_.substr(i_, close - i_));
          i_ = close + 1;
        } else {
          const size_t count = e == 'x' ? 2 : 4;
          if (i_ + count > p_.size()) error("truncated hex escape");
          digits = std::string(p_.substr(i_, count));
          i_ += count;
        }
        if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
          error("bad hex escape");
        literal = static_cast<char32_t>(std::stoul(digits, nullptr, 16));
        if (literal >= 0x110000 || (literal >= 0xd800 && literal <= 0xdfff)) error("hex escape is not a Unicode scalar");
        return false;
      }
      default:
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
          error(std::string("unsupported escape \\") + static_cast<char>(e));
        literal = e;  // escaped punctuation or any other character stands for itself
        return false;
    }
  }

  uint32_t category_mask(const std::string& name) {
    using namespace unicode;
    auto bits = [](std::initializer_list<Category> cats) {
      uint32_t mask = 0;
      for (auto c : cats) mask |= 1u << c;
      return mask;
    };
    static const std::pair<const char*, uint32_t> kNames[] = {
        {"L", bits({Lu, Ll, Lt, Lm, Lo})}, {"Letter", bits({Lu, Ll, Lt, Lm, Lo})},
        {"LC", bits({Lu, Ll, Lt})}, {"L&", bits({Lu, Ll, Lt})},
        {"Lu", bits({Lu})}, {"Ll", bits({Ll})}, {"Lt", bits({Lt})}, {"Lm", bits({Lm})}, {"Lo", bits({Lo})},
        {"M", bits({Mn, Mc, Me})}, {"Mark", bits({Mn, Mc, Me})},
        {"Mn", bits({Mn})}, {"Mc", bits({Mc})}, {"Me", bits({Me})},
        {"N", bits({Nd, Nl, No})}, {"Number", bits({Nd, Nl, No})},
        {"Nd", bits({Nd})}, {"Nl", bits({Nl})}, {"No", bits({No})},
        {"P", bits({Pc, Pd, Ps, Pe, Pi, Pf, Po})}, {"Punctuation", bits({Pc, Pd, Ps, Pe, Pi, Pf, Po})},
        {"Pc", bits({Pc})}, {"Pd", bits({Pd})}, {"Ps", bits({Ps})}, {"Pe", bits({Pe})}, {"Pi", bits({Pi})},
        {"Pf", bits({Pf})}, {"Po", bits({Po})},
        {"S", bits({Sm, Sc, Sk, So})}, {"Symbol", bits({Sm, Sc, Sk, So})},
        {"Sm", bits({Sm})}, {"Sc", bits({Sc})}, {"Sk", bits({Sk})}, {"So", bits({So})},
        {"Z", bits({Zs, Zl, Zp})}, {"Separator", bits({Zs, Zl, Zp})},
        {"Zs", bits({Zs})}, {"Zl", bits({Zl})}, {"Zp", bits({Zp})},
        {"C", bits({Cc, Cf, Cs, Co, Cn})}, {"Other", bits({Cc, Cf, Cs, Co, Cn})},
        {"Cc", bits({Cc})}, {"Cf", bits({Cf})}, {"Cs", bits({Cs})}, {"Co", bits({Co})}, {"Cn", bits({Cn})},
    };
    for (const auto& [n, mask] : kNames)
      if (name == n) return mask;
    error("unsupported Unicode property \\p{" + name + "} (general categories only)");
  }

  Node parse_class(const Flags& flags) {
    ++i_;  // '['
    const bool negated = accept('^');
    std::vector<ClassItem> items;
    bool first = true;
    while (true) {
      if (at_end()) error("unterminated character class");
      if (p_[i_] == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      if (p_[i_] == '[') error("nested classes and POSIX classes are not supported");
      if (p_.substr(i_, 2) == "&&" || p_.substr(i_, 2) == "--" || p_.substr(i_, 2) == "~~")
        error("class set operations are not supported");
      char32_t lo;
      if (p_[i_] == '\\') {
        ++i_;
        if (at_end()) error("pattern ends with a backslash");
        ClassItem item;
        if (parse_escape(item, lo)) {
          items.push_back(item);
          continue;
        }
      } else {
        lo = next();
      }
      char32_t hi = lo;
      if (i_ + 1 < p_.size() && p_[i_] == '-' && p_[i_ + 1] != ']') {
        ++i_;
        if (p_[i_] == '\\') {
          ++i_;
          if (at_end()) error("pattern ends with a backslash");
          ClassItem item;
          if (parse_escape(item, hi)) error("class escape used as a range end");
        } else {
          hi = next();
        }
        if (hi < lo) error("character range out of order");
      }
      ClassItem range;
      range.lo = lo;
      range.hi = hi;
      items.push_back(range);
    }
    return class_node(std::move(items), negated, flags);
  }

  std::string_view p_;
  size_t i_ = 0;
  int depth_ = 0;
  std::vector<CharClass>& classes_;
};

// ---------------------------------------------------------------------------------------------------------------
// Program: a backtracking VM (as in Russ Cox's re1 "backtrack"), with an explicit stack so long inputs cannot
// overflow the C++ stack.

struct Inst {
  enum Op : uint8_t { Char, Class, Any, Split, Jmp, Look, Bol, Eol, Match } op;
  bool fold = false;
  bool flag = false;  // Any: dot_all; Look: negate
  char32_t cp = 0;
  int x = 0, y = 0;  // Split: preferred x, then y; Jmp: x; Look: sub-program x, continue at y; Class: index x
};

constexpr size_t kMaxProgram = 200000;

}  // namespace

struct SplitRegex::Program {
  std::vector<Inst> code;
  std::vector<CharClass> classes;

  int emit(Inst inst) {
    if (code.size() >= kMaxProgram) fail("regex too large after expanding its repetitions");
    code.push_back(inst);
    return static_cast<int>(code.size() - 1);
  }

  void compile(const Node& node) {
    switch (node.kind) {
      case Node::Empty: return;
      case Node::Char: emit({Inst::Char, node.fold, false, node.cp}); return;
      case Node::Class: emit({Inst::Class, false, false, 0, node.class_index}); return;
      case Node::Any: emit({Inst::Any, false, node.dot_all}); return;
      case Node::Bol: emit({Inst::Bol}); return;
      case Node::Eol: emit({Inst::Eol}); return;
      case Node::Concat:
        for (const auto& c : node.children) compile(c);
        return;
      case Node::Alt: {
        // split L1, next; L1: a; jmp end; next: split L2, next2; ...
        std::vector<int> jumps;
        for (size_t k = 0; k < node.children.size(); ++k) {
          if (k + 1 < node.children.size()) {
            const int split = emit({Inst::Split});
            code[split].x = split + 1;
            compile(node.children[k]);
            jumps.push_back(emit({Inst::Jmp}));
            code[split].y = static_cast<int>(code.size());
          } else {
            compile(node.children[k]);
          }
        }
        for (int j : jumps) code[j].x = static_cast<int>(code.size());
        return;
      }
      case Node::Look: {
        const int look = emit({Inst::Look, false, node.negate});
        code[look].x = look + 1;
        compile(node.children[0]);
        emit({Inst::Match});
        code[look].y = static_cast<int>(code.size());
        return;
      }
      case Node::Repeat: {
        const Node& body = node.children[0];
        for (int k = 0; k < node.min; ++k) compile(body);
        if (node.max < 0) {
          // loop: split body, out; body; jmp loop
          const int split = emit({Inst::Split});
          compile(body);
          const int jmp = emit({Inst::Jmp});
          code[jmp].x = split;
          set_split(split, split + 1, static_cast<int>(code.size()), node.greedy);
        } else {
          std::vector<int> splits;
          for (int k = node.min; k < node.max; ++k) {
            splits.push_back(emit({Inst::Split}));
            compile(body);
          }
          for (int s : splits) set_split(s, s + 1, static_cast<int>(code.size()), node.greedy);
        }
        return;
      }
    }
  }

  void set_split(int at, int body, int out, bool greedy) {
    code[at].x = greedy ? body : out;
    code[at].y = greedy ? out : body;
  }

  struct Thread {
    int pc;
    size_t pos;
  };

  // Runs the program from `pc` anchored at `pos`; on a match sets `end` and returns true.
  bool run(int pc0, std::string_view text, size_t pos0, size_t& end, size_t& budget,
           std::deque<std::vector<Thread>>& stacks, size_t depth) const {
    if (stacks.size() <= depth) stacks.resize(depth + 1);
    auto& stack = stacks[depth];
    stack.clear();
    stack.push_back({pc0, pos0});
    const size_t n = text.size();
    while (!stack.empty()) {
      Thread t = stack.back();
      stack.pop_back();
      int pc = t.pc;
      size_t pos = t.pos;
      while (true) {
        if (budget == 0) fail("regex /{}/: too much backtracking on this input", pattern_for_errors);
        --budget;
        const Inst& inst = code[pc];
        bool ok = true;
        switch (inst.op) {
          case Inst::Char: {
            if (pos >= n) { ok = false; break; }
            size_t p = pos;
            char32_t cp = decode_utf8(text, p);
            if (inst.fold) cp = fold_case(cp);
            ok = cp == inst.cp;
            pos = p;
            ++pc;
            break;
          }
          case Inst::Class: {
            if (pos >= n) { ok = false; break; }
            size_t p = pos;
            ok = classes[inst.x].matches(decode_utf8(text, p));
            pos = p;
            ++pc;
            break;
          }
          case Inst::Any: {
            if (pos >= n) { ok = false; break; }
            size_t p = pos;
            ok = decode_utf8(text, p) != '\n' || inst.flag;
            pos = p;
            ++pc;
            break;
          }
          case Inst::Split: stack.push_back({inst.y, pos}); pc = inst.x; break;
          case Inst::Jmp: pc = inst.x; break;
          case Inst::Look: {
            size_t ignored;
            const bool hit = run(inst.x, text, pos, ignored, budget, stacks, depth + 1);
            ok = hit != inst.flag;
            pc = inst.y;
            break;
          }
          case Inst::Bol: ok = pos == 0; ++pc; break;
          case Inst::Eol: ok = pos == n; ++pc; break;
          case Inst::Match: end = pos; return true;
        }
        if (!ok) break;
      }
    }
    return false;
  }

  std::string pattern_for_errors;
};

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Hand-written matchers for the two ubiquitous patterns. Each returns the end of the match that starts at i (both
// patterns match at every position, so there are never gaps).

enum : uint8_t { kL = 1, kN = 2, kS = 4 };

inline uint8_t char_flags(char32_t cp) {
  if (cp < 128) {
    static const auto table = [] {
      std::array<uint8_t, 128> t{};
      for (char32_t c = 0; c < 128; ++c)
        t[c] = (unicode::is_letter(c) ? kL : 0) | (unicode::is_number(c) ? kN : 0) | (unicode::is_whitespace(c) ? kS : 0);
      return t;
    }();
    return table[cp];
  }
  return (unicode::is_letter(cp) ? kL : 0) | (unicode::is_number(cp) ? kN : 0) | (unicode::is_whitespace(cp) ? kS : 0);
}

inline char32_t peek(std::string_view s, size_t i, size_t& next) {
  next = i;
  return decode_utf8(s, next);
}

// End of the run of characters from i whose flags intersect `want` (or, with `invert`, do not).
inline size_t run_of(std::string_view s, size_t i, uint8_t want, bool invert) {
  while (i < s.size()) {
    size_t next;
    const bool in = (char_flags(peek(s, i, next)) & want) != 0;
    if (in == invert) break;
    i = next;
  }
  return i;
}

inline size_t run_of_crlf(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == '\r' || s[i] == '\n')) ++i;
  return i;
}

// The whitespace alternatives shared by both patterns; with_newline_rule adds Llama 3's \s*[\r\n]+.
inline size_t match_whitespace(std::string_view s, size_t i, bool with_newline_rule) {
  size_t j = i, last_start = i, after_last_newline = std::string_view::npos;
  while (j < s.size()) {
    size_t next;
    const char32_t c = peek(s, j, next);
    if (!unicode::is_whitespace(c)) break;
    if (c == '\r' || c == '\n') after_last_newline = next;
    last_start = j;
    j = next;
  }
  if (with_newline_rule && after_last_newline != std::string_view::npos) return after_last_newline;  // \s*[\r\n]+
  if (j == s.size()) return j;        // \s+(?!\S) at the end of the text
  if (last_start > i) return last_start;  // \s+(?!\S): leave the last space to the word that follows
  return j;                           // \s+
}

size_t match_llama3(std::string_view s, size_t i) {
  const size_t n = s.size();
  size_t i1;
  const char32_t c0 = peek(s, i, i1);
  const uint8_t f0 = char_flags(c0);
  if (c0 == '\'' && i1 < n) {  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    size_t i2;
    const char32_t c1 = fold_case(peek(s, i1, i2));
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i2;
    if (i2 < n && (c1 == 'r' || c1 == 'v' || c1 == 'l')) {
      size_t i3;
      const char32_t c2 = fold_case(peek(s, i2, i3));
      if ((c1 == 'l' && c2 == 'l') || (c1 != 'l' && c2 == 'e')) return i3;
    }
  }
  if (f0 & kL) return run_of(s, i1, kL, false);  // \p{L}+ (the optional prefix cannot take a letter)
  if (!(f0 & kN) && c0 != '\r' && c0 != '\n' && i1 < n) {  // [^\r\n\p{L}\p{N}]\p{L}+
    size_t i2;
    if (char_flags(peek(s, i1, i2)) & kL) return run_of(s, i2, kL, false);
  }
  if (f0 & kN) {  // \p{N}{1,3}
    size_t j = i1;
    for (int k = 1; k < 3 && j < n; ++k) {
      size_t next;
      if (!(char_flags(peek(s, j, next)) & kN)) break;
      j = next;
    }
    return j;
  }
  if (c0 == ' ' && i1 < n) {  // ' '[^\s\p{L}\p{N}]+[\r\n]*
    size_t i2;
    if (!(char_flags(peek(s, i1, i2)) & (kL | kN | kS))) return run_of_crlf(s, run_of(s, i2, kL | kN | kS, true));
  }
  if (!(f0 & (kL | kN | kS))) return run_of_crlf(s, run_of(s, i1, kL | kN | kS, true));  // [^\s\p{L}\p{N}]+[\r\n]*
  return match_whitespace(s, i, true);
}

size_t match_gpt2(std::string_view s, size_t i) {
  const size_t n = s.size();
  size_t i1;
  const char32_t c0 = peek(s, i, i1);
  const uint8_t f0 = char_flags(c0);
  if (c0 == '\'' && i1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d
    const char c1 = s[i1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i1 + 1;
    if (i1 + 1 < n) {
      const char c2 = s[i1 + 1];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i1 + 2;
    }
  }
  if (c0 == ' ' && i1 < n) {  // ' ?' followed by letters, numbers or other symbols
    size_t i2;
    const uint8_t f1 = char_flags(peek(s, i1, i2));
    if (f1 & kL) return run_of(s, i2, kL, false);
    if (f1 & kN) return run_of(s, i2, kN, false);
    if (!(f1 & kS)) return run_of(s, i2, kL | kN | kS, true);
  }
  if (f0 & kL) return run_of(s, i1, kL, false);
  if (f0 & kN) return run_of(s, i1, kN, false);
  if (!(f0 & kS)) return run_of(s, i1, kL | kN | kS, true);
  return match_whitespace(s, i, false);
}

}  // namespace

SplitRegex::SplitRegex(std::string_view pattern, bool allow_fast_path) : pattern_(pattern) {
  // Always compile, so a pattern is validated the same way whichever path runs it.
  program_ = std::make_unique<Program>();
  program_->pattern_for_errors = pattern_;
  Parser parser(pattern, program_->classes);
  Node root = parser.parse();
  program_->compile(root);
  program_->emit({Inst::Match});
  if (allow_fast_path) {
    if (pattern == kLlama3SplitPattern) fast_ = FastPath::Llama3;
    else if (pattern == kGpt2SplitPattern) fast_ = FastPath::Gpt2;
  }
}

SplitRegex::~SplitRegex() = default;
SplitRegex::SplitRegex(SplitRegex&&) noexcept = default;
SplitRegex& SplitRegex::operator=(SplitRegex&&) noexcept = default;

void SplitRegex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const {
  const size_t n = text.size();
  if (fast_ != FastPath::None) {
    for (size_t i = 0; i < n;) {
      const size_t end = fast_ == FastPath::Llama3 ? match_llama3(text, i) : match_gpt2(text, i);
      matches.emplace_back(i, end);
      i = end;
    }
    return;
  }
  size_t budget = 10'000'000 + 2000 * n;
  std::deque<std::vector<Program::Thread>> stacks;  // a deque: growing it keeps references to the outer stacks valid
  for (size_t i = 0; i < n;) {
    size_t end;
    if (program_->run(0, text, i, end, budget, stacks, 0) && end > i) {
      matches.emplace_back(i, end);
      i = end;
    } else {
      const size_t len = unicode::valid_utf8_length(text, i);
      i += len ? len : 1;
    }
  }
}

}  // namespace guardkit::text
