// Jinja lexer and parser: source text → tokens → syntax tree (jinja_ast.h). The grammar and precedence follow
// jinja2's parser.py (condexpr → or → and → not → compare → + - → ~ → * / // % → ** → unary → postfix → filters and
// tests); whitespace control follows its lexer with trim_blocks and lstrip_blocks on, as transformers sets them.
#include <algorithm>
#include <cstring>

#include "text/jinja_ast.h"
#include "text/unicode.h"

namespace guardkit::text::jinja {

namespace {

constexpr int kMaxParseDepth = 300;  // nesting of untrusted templates, bounded so the recursion cannot overflow

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type;
  std::string text;  // Data text, name, operator, decoded string literal
  Value number;
  int line;
};

[[noreturn]] void syntax_error(int line, const std::string& message) {
  raise("TemplateSyntaxError", fmt::format("{} (line {})", message, line));
}

// Python's \s and str.isspace() for one code point.
bool is_python_space(char32_t cp) { return unicode::is_whitespace(cp) || (cp >= 0x1c && cp <= 0x1f); }

// Length of `text` without its trailing whitespace (Python's rstrip()).
size_t rstripped_length(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xc0) == 0x80) --start;
    size_t i = start;
    if (!is_python_space(unicode::decode_utf8(text, i))) break;
    end = start;
  }
  return end;
}

bool all_space(std::string_view text) {
  if (text.empty()) return false;
  for (size_t i = 0; i < text.size();)
    if (!is_python_space(unicode::decode_utf8(text, i))) return false;
  return true;
}

size_t skip_space(std::string_view s, size_t pos) {
  while (pos < s.size()) {
    size_t next = pos;
    if (!is_python_space(unicode::decode_utf8(s, next))) break;
    pos = next;
  }
  return pos;
}

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  explicit Lexer(std::string_view raw_source) {
    if (!unicode::is_valid_utf8(raw_source)) raise("TemplateSyntaxError", "the template is not valid UTF-8");
    // jinja2 normalizes \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
    src_.reserve(raw_source.size());
    for (size_t i = 0; i < raw_source.size(); ++i) {
      if (raw_source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < raw_source.size() && raw_source[i + 1] == '\n') ++i;
      } else {
        src_ += raw_source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = find_tag_start(pos_);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos_));
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      emit_data(strip_before_tag(src_.substr(pos_, tag - pos_), kind, sign));
      pos_ = tag + 2 + (sign ? 1 : 0);
      line_starting_ = false;
      if (kind == '#') {
        lex_comment();
      } else if (kind == '%' && at_raw()) {
        lex_raw();
      } else {
        tokens_.push_back({kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", {}, line_at(tag)});
        lex_tag(kind == '{');
      }
    }
    tokens_.push_back({Tok::Eof, "", {}, line_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  int line_at(size_t pos) {
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  size_t find_tag_start(size_t from) const {
    for (size_t p = src_.find('{', from); p != std::string::npos; p = src_.find('{', p + 1))
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) return p;
    return std::string::npos;
  }

  // `{%-` strips all whitespace before the tag; lstrip_blocks strips spaces from the line start up to a block or
  // comment tag (not a {{ }}), unless the tag says `+`.
  std::string strip_before_tag(std::string text, char kind, char sign) const {
    if (sign == '-') return text.substr(0, rstripped_length(text));
    if (sign != '+' && kind != '{') {
      const size_t line_start = text.rfind('\n') + 1;  // npos + 1 == 0
      if ((line_start > 0 || line_starting_) && all_space(std::string_view(text).substr(line_start)))
        return text.substr(0, line_start);
    }
    return text;
  }

  void emit_data(std::string text) {
    if (!text.empty()) tokens_.push_back({Tok::Data, std::move(text), {}, line_at(pos_)});
  }

  // After a block or comment end: `-` eats the following whitespace, trim_blocks one newline, `+` nothing.
  void finish_block_end(size_t after, char sign, bool trim_newline) {
    pos_ = after;
    if (sign == '-') {
      pos_ = skip_space(src_, pos_);
    } else if (sign != '+' && trim_newline && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
    line_starting_ = pos_ > after && src_[pos_ - 1] == '\n';
  }

  void lex_comment() {
    const int line = line_at(pos_);
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) syntax_error(line, "Missing end of comment tag");
    const char sign = end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : 0;
    finish_block_end(end + 2, sign, true);
  }

  // Matches `-%}`, `+%}` or `%}` at p; returns the position after it and the sign, or npos.
  size_t block_end_at(size_t p, char& sign) const {
    sign = 0;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return std::string::npos;
  }

  bool at_raw() const {
    size_t p = skip_space(src_, pos_);
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3]))) return false;
    char sign;
    return block_end_at(skip_space(src_, p + 3), sign) != std::string::npos && sign != '+';
  }

  void lex_raw() {
    const int line = line_at(pos_);
    char sign;
    size_t after = block_end_at(skip_space(src_, skip_space(src_, pos_) + 3), sign);
    finish_block_end(after, sign, false);  // jinja2 does not trim the newline after {% raw %}
    for (size_t tag = src_.find("{%", pos_); tag != std::string::npos; tag = src_.find("{%", tag + 1)) {
      size_t p = tag + 2;
      const char open_sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (open_sign) ++p;
      p = skip_space(src_, p);
      if (src_.compare(p, 6, "endraw") != 0) continue;
      char close_sign;
      const size_t end = block_end_at(skip_space(src_, p + 6), close_sign);
      if (end == std::string::npos) continue;
      line_starting_ = false;
      emit_data(strip_before_tag(src_.substr(pos_, tag - pos_), '%', open_sign));
      finish_block_end(end, close_sign, true);
      return;
    }
    syntax_error(line, "Missing end of raw directive");
  }

  void lex_tag(bool variable) {
    const int start_line = line_at(pos_);
    int depth = 0;  // open brackets: a }} or %} inside them does not end the tag
    while (true) {
      pos_ = skip_space(src_, pos_);
      if (pos_ >= src_.size())
        syntax_error(start_line, variable ? "unexpected end of template, expected 'end of print statement'"
                                          : "unexpected end of template, expected 'end of statement block'");
      const int line = line_at(pos_);
      if (depth == 0) {
        if (variable) {
          const bool minus = src_.compare(pos_, 3, "-}}") == 0;
          if (minus || src_.compare(pos_, 2, "}}") == 0) {
            tokens_.push_back({Tok::VarEnd, "", {}, line});
            pos_ += minus ? 3 : 2;
            if (minus) pos_ = skip_space(src_, pos_);
            line_starting_ = false;
            return;
          }
        } else {
          char sign;
          const size_t after = block_end_at(pos_, sign);
          if (after != std::string::npos) {
            tokens_.push_back({Tok::BlockEnd, "", {}, line});
            finish_block_end(after, sign, true);
            return;
          }
        }
      }
      const char c = src_[pos_];
      if (is_name_start(c)) {
        size_t end = pos_;
        while (end < src_.size() && is_name_char(src_[end])) ++end;
        tokens_.push_back({Tok::Name, src_.substr(pos_, end - pos_), {}, line});
        pos_ = end;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number(line);
      } else if (c == '\'' || c == '"') {
        lex_string(line);
      } else {
        static const char* const kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                                 "~",  "<",  ">",  "=",  "(",  ")",  "[", "]", "{", "}", ",",
                                                 ".",  ":",  "|"};
        const char* found = nullptr;
        for (const char* op : kOperators)
          if (src_.compare(pos_, std::strlen(op), op) == 0) {
            found = op;
            break;
          }
        if (!found) syntax_error(line, fmt::format("unexpected char {} at {}", Value(std::string(1, c)).repr(), pos_));
        const std::string op = found;
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) syntax_error(line, fmt::format("unexpected '{}'", op));
          --depth;
        }
        tokens_.push_back({Tok::Op, op, {}, line});
        pos_ += op.size();
      }
    }
  }

  void lex_number(int line) {
    size_t end = pos_;
    auto digits = [&] {
      while (end < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[end])) ||
                                   (src_[end] == '_' && end + 1 < src_.size() &&
                                    std::isdigit(static_cast<unsigned char>(src_[end + 1])))))
        ++end;
    };
    digits();
    bool is_float = false;
    // `x.0` after a dot is an attribute index, not a float (jinja2's (?<!\.) lookbehind).
    const bool after_dot = pos_ > 0 && src_[pos_ - 1] == '.';
    if (!after_dot && end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      is_float = true;
      ++end;
      digits();
    }
    if (!after_dot && end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t e = end + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
        is_float = true;
        end = e;
        digits();
      }
    }
    std::string text;
    for (size_t i = pos_; i < end; ++i)
      if (src_[i] != '_') text += src_[i];
    Token token{is_float ? Tok::Float : Tok::Int, text, {}, line};
    if (is_float) {
      token.number = Value(std::strtod(text.c_str(), nullptr));
    } else {
      errno = 0;
      const long long v = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) syntax_error(line, "integer literal too large: " + text);
      token.number = Value(static_cast<int64_t>(v));
    }
    tokens_.push_back(std::move(token));
    pos_ = end;
  }

  // A Python string literal's escapes (jinja2 decodes them with "unicode-escape").
  void lex_string(int line) {
    const char quote = src_[pos_];
    std::string out;
    size_t p = pos_ + 1;
    auto hex = [&](size_t count) -> char32_t {
      if (p + count > src_.size()) syntax_error(line, "truncated \\x / \\u escape in a string literal");
      char32_t cp = 0;
      for (size_t k = 0; k < count; ++k) {
        const char h = src_[p + k];
        if (!std::isxdigit(static_cast<unsigned char>(h))) syntax_error(line, "invalid \\x / \\u escape in a string literal");
        cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      p += count;
      return cp;
    };
    while (true) {
      if (p >= src_.size()) syntax_error(line, "unexpected end of template inside a string literal");
      const char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (++p >= src_.size()) syntax_error(line, "unexpected end of template inside a string literal");
      const char e = src_[p++];
      switch (e) {
        case '\n': break;  // line continuation
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': unicode::append_utf8(out, hex(2)); break;
        case 'u': unicode::append_utf8(out, hex(4)); break;
        case 'U': {
          const char32_t cp = hex(8);
          if (cp > 0x10ffff) syntax_error(line, "\\U escape out of range in a string literal");
          unicode::append_utf8(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = e - '0';
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k) cp = cp * 8 + (src_[p++] - '0');
            unicode::append_utf8(out, cp);
          } else {
            out += '\\';  // Python keeps unknown escapes as written
            --p;
          }
      }
    }
    // Surrogate code points from \u escapes are not valid UTF-8 text; refuse them rather than emit broken bytes.
    if (!unicode::is_valid_utf8(out)) syntax_error(line, "string literal with a surrogate \\u escape");
    tokens_.push_back({Tok::String, std::move(out), {}, line});
    pos_ = p + 1;
  }

  std::string src_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
  size_t line_pos_ = 0;
  int line_ = 1;
};

std::string describe(const Token& t) {
  switch (t.type) {
    case Tok::Data: return "template data";
    case Tok::VarBegin: return "begin of print statement";
    case Tok::VarEnd: return "end of print statement";
    case Tok::BlockBegin: return "begin of statement block";
    case Tok::BlockEnd: return "end of statement block";
    case Tok::Eof: return "end of template";
    case Tok::String: return "string";
    case Tok::Int: return "integer";
    case Tok::Float: return "float";
    default: return t.text;
  }
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  NodePtr parse() {
    NodePtr body = parse_body({});
    if (cur().type != Tok::Eof) fail(fmt::format("unexpected '{}'", describe(cur())));
    return body;
  }

 private:
  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t ahead = 1) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  void advance() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  [[noreturn]] void fail(const std::string& message) const { syntax_error(cur().line, message); }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Tok::Name && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(fmt::format("expected token '{}', got '{}'", op, describe(cur())));
  }
  void expect_block_end() {
    if (cur().type != Tok::BlockEnd) fail(fmt::format("expected token 'end of statement block', got '{}'", describe(cur())));
    advance();
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail(fmt::format("expected name, got '{}'", describe(cur())));
    std::string name = cur().text;
    advance();
    return name;
  }
  NodePtr node(NodeKind kind) const { return std::make_unique<Node>(kind, cur().line); }

  struct DepthGuard {
    int& depth;
    DepthGuard(int& d, const Parser& p) : depth(d) {
      if (++depth > kMaxParseDepth) p.fail("the template nests too deeply");
    }
    ~DepthGuard() { --depth; }
  };

  // Statements up to a block tag whose first name is one of `end_names` (left current, at that name).
  NodePtr parse_body(const std::vector<std::string>& end_names, const std::string& innermost = "") {
    DepthGuard guard(depth_, *this);
    NodePtr body = node(NodeKind::Body);
    while (true) {
      const Token& token = cur();
      if (token.type == Tok::Eof) {
        if (!end_names.empty()) fail(expected_tags("Unexpected end of template.", end_names, innermost));
        return body;
      }
      if (token.type == Tok::Data) {
        NodePtr text = node(NodeKind::Text);
        text->name = token.text;
        body->kids.push_back(std::move(text));
        advance();
      } else if (token.type == Tok::VarBegin) {
        advance();
        NodePtr print = node(NodeKind::Print);
        print->kids.push_back(parse_tuple(true));
        if (cur().type != Tok::VarEnd) fail(fmt::format("expected token 'end of print statement', got '{}'", describe(cur())));
        advance();
        body->kids.push_back(std::move(print));
      } else if (token.type == Tok::BlockBegin) {
        advance();
        if (cur().type != Tok::Name) fail("tag name expected");
        if (std::find(end_names.begin(), end_names.end(), cur().text) != end_names.end()) return body;
        body->kids.push_back(parse_statement(end_names, innermost));
      } else {
        fail(fmt::format("unexpected '{}'", describe(token)));
      }
    }
  }

  static std::string expected_tags(const std::string& head, const std::vector<std::string>& names,
                                   const std::string& innermost) {
    std::string list;
    for (size_t k = 0; k < names.size(); ++k) list += (k ? " or '" : "'") + names[k] + "'";
    return fmt::format("{} Jinja was looking for the following tags: {}. The innermost block that needs to be "
                       "closed is '{}'.", head, list, innermost);
  }

  // Consumes `{% endname %}` after parse_body stopped at it.
  void end_tag() {
    advance();
    expect_block_end();
  }

  NodePtr parse_statement(const std::vector<std::string>& outer_end, const std::string& outer_innermost) {
    const std::string tag = cur().text;
    if (tag == "if") return parse_if();
    if (tag == "for") return parse_for();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "call") return parse_call_block();
    if (tag == "filter") return parse_filter_block();
    if (tag == "with") return parse_with();
    if (tag == "block" || tag == "generation") return parse_scoped(tag);
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail(fmt::format("'{}' outside of a loop", tag));
      NodePtr n = node(tag == "break" ? NodeKind::Break : NodeKind::Continue);
      advance();
      expect_block_end();
      return n;
    }
    if (tag == "include" || tag == "import" || tag == "from" || tag == "extends")
      raise("SecurityError", fmt::format("'{}' is not supported: chat templates cannot read other templates", tag));
    const std::string head = fmt::format("Encountered unknown tag '{}'.", tag);
    if (outer_end.empty()) fail(head);
    fail(expected_tags(head, outer_end, outer_innermost));
  }

  NodePtr parse_if() {
    NodePtr n = node(NodeKind::If);
    advance();
    while (true) {
      n->kids.push_back(parse_tuple(false));
      expect_block_end();
      n->kids.push_back(parse_body({"elif", "else", "endif"}, "if"));
      if (skip_name("elif")) continue;
      if (skip_name("else")) {
        expect_block_end();
        n->kids.push_back(nullptr);
        n->kids.push_back(parse_body({"endif"}, "if"));
      }
      end_tag();
      return n;
    }
  }

  NodePtr parse_for() {
    NodePtr n = node(NodeKind::For);
    advance();
    n->kids.push_back(parse_assign_target(false));
    if (!skip_name("in")) fail(fmt::format("expected token 'in', got '{}'", describe(cur())));
    n->kids.push_back(parse_tuple(false, {"recursive"}));
    n->kids.push_back(skip_name("if") ? parse_expression(true) : nullptr);
    n->recursive = skip_name("recursive");
    expect_block_end();
    ++loop_depth_;
    n->kids.push_back(parse_body({"endfor", "else"}, "for"));
    --loop_depth_;
    if (skip_name("else")) {
      expect_block_end();
      n->kids.push_back(parse_body({"endfor"}, "for"));
    } else {
      n->kids.push_back(nullptr);
    }
    end_tag();
    return n;
  }

  // A name, a tuple of names, or (for set) namespace.attribute.
  NodePtr parse_assign_target(bool with_namespace) {
    if (with_namespace && cur().type == Tok::Name && peek().type == Tok::Op && peek().text == ".") {
      NodePtr n = node(NodeKind::GetAttr);
      NodePtr base = node(NodeKind::Name);
      base->name = expect_name();
      advance();  // .
      n->name = expect_name();
      n->kids.push_back(std::move(base));
      return n;
    }
    NodePtr target = parse_tuple_of(&Parser::parse_primary, {"in"}, false);
    auto check = [&](const Node& t) {
      if (t.kind != NodeKind::Name) fail("can't assign to '" + std::string(t.kind == NodeKind::Literal ? "const" : "expression") + "'");
    };
    if (target->kind == NodeKind::TupleLit) {
      for (const NodePtr& kid : target->kids) check(*kid);
    } else {
      check(*target);
    }
    return target;
  }

  NodePtr parse_set() {
    advance();
    NodePtr target = parse_assign_target(true);
    if (skip_op("=")) {
      NodePtr n = node(NodeKind::Set);
      n->kids.push_back(std::move(target));
      n->kids.push_back(parse_tuple(true));
      expect_block_end();
      return n;
    }
    NodePtr n = node(NodeKind::SetBlock);
    if (target->kind != NodeKind::Name) fail("a block set assigns to a single name");
    NodePtr filter = is_op("|") ? parse_filters(nullptr) : nullptr;
    expect_block_end();
    n->kids.push_back(std::move(target));
    n->kids.push_back(parse_body({"endset"}, "set"));
    n->kids.push_back(std::move(filter));
    end_tag();
    return n;
  }

  // (a, b=default, ...) into names / default kids.
  void parse_signature(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.names.empty()) expect_op(",");
      if (is_op(")")) break;
      n.names.push_back(expect_name());
      n.kids.push_back(skip_op("=") ? parse_expression(true) : nullptr);
    }
    expect_op(")");
  }

  NodePtr parse_macro() {
    NodePtr n = node(NodeKind::Macro);
    advance();
    n->name = expect_name();
    n->kids.push_back(nullptr);  // body, filled below
    parse_signature(*n);
    expect_block_end();
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    n->kids[0] = parse_body({"endmacro"}, "macro");
    loop_depth_ = saved_loop_depth;
    end_tag();
    return n;
  }

  NodePtr parse_call_block() {
    NodePtr n = node(NodeKind::CallBlock);
    advance();
    NodePtr holder = node(NodeKind::CallBlock);  // collects the caller's parameters
    if (is_op("(")) parse_signature(*holder);
    NodePtr call = parse_expression(true);
    if (call->kind != NodeKind::Call) fail("expected call");
    expect_block_end();
    n->kids.push_back(std::move(call));
    n->kids.push_back(parse_body({"endcall"}, "call"));
    for (NodePtr& d : holder->kids) n->kids.push_back(std::move(d));
    n->names = std::move(holder->names);
    end_tag();
    return n;
  }

  NodePtr parse_filter_block() {
    NodePtr n = node(NodeKind::FilterBlock);
    advance();
    n->kids.push_back(parse_filters(nullptr, true));
    expect_block_end();
    n->kids.push_back(parse_body({"endfilter"}, "filter"));
    end_tag();
    return n;
  }

  NodePtr parse_with() {
    NodePtr n = node(NodeKind::With);
    advance();
    while (cur().type != Tok::BlockEnd) {
      if (!n->names.empty()) expect_op(",");
      n->names.push_back(expect_name());
      expect_op("=");
      n->kids.push_back(parse_expression(true));
    }
    expect_block_end();
    n->kids.push_back(parse_body({"endwith"}, "with"));
    end_tag();
    return n;
  }

  NodePtr parse_scoped(const std::string& tag) {
    NodePtr n = node(NodeKind::Scoped);
    advance();
    if (tag == "block") {
      n->name = expect_name();
      while (skip_name("scoped") || skip_name("required")) {
      }
    }
    expect_block_end();
    n->kids.push_back(parse_body({"end" + tag}, tag));
    advance();
    if (tag == "block" && cur().type == Tok::Name) advance();  // {% endblock name %}
    expect_block_end();
    return n;
  }

  // ---- expressions

  // Comma-separated expressions: a tuple if there is a comma, else the single expression.
  NodePtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end = {}) {
    return parse_tuple_of(with_condexpr ? &Parser::parse_expression_full : &Parser::parse_expression_plain,
                          extra_end, false);
  }
  NodePtr parse_expression_full() { return parse_expression(true); }
  NodePtr parse_expression_plain() { return parse_expression(false); }

  bool at_tuple_end(const std::vector<std::string>& extra_end) const {
    if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || cur().type == Tok::Eof) return true;
    if (cur().type == Tok::Op && cur().text == ")") return true;
    return cur().type == Tok::Name && std::find(extra_end.begin(), extra_end.end(), cur().text) != extra_end.end();
  }

  NodePtr parse_tuple_of(NodePtr (Parser::*parse_one)(), const std::vector<std::string>& extra_end,
                         bool explicit_parentheses) {
    const int line = cur().line;
    std::vector<NodePtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (at_tuple_end(extra_end)) break;
      items.push_back((this->*parse_one)());
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) fail(fmt::format("Expected an expression, got '{}'", describe(cur())));
    }
    auto n = std::make_unique<Node>(NodeKind::TupleLit, line);
    n->kids = std::move(items);
    return n;
  }

  NodePtr parse_expression(bool with_condexpr) {
    DepthGuard guard(depth_, *this);
    if (!with_condexpr) return parse_or();
    NodePtr expr = parse_or();
    while (is_name("if")) {
      NodePtr n = node(NodeKind::CondExpr);
      advance();
      NodePtr cond = parse_or();
      NodePtr otherwise = skip_name("else") ? parse_expression(true) : nullptr;
      n->kids.push_back(std::move(cond));
      n->kids.push_back(std::move(expr));
      n->kids.push_back(std::move(otherwise));
      expr = std::move(n);
    }
    return expr;
  }

  NodePtr binary(const std::string& op, NodePtr a, NodePtr b) {
    auto n = std::make_unique<Node>(NodeKind::Binary, a->line);
    n->name = op;
    n->kids.push_back(std::move(a));
    n->kids.push_back(std::move(b));
    return n;
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (skip_name("or")) left = binary("or", std::move(left), parse_and());
    return left;
  }
  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (skip_name("and")) left = binary("and", std::move(left), parse_not());
    return left;
  }
  NodePtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(depth_, *this);
      NodePtr n = node(NodeKind::Unary);
      advance();
      n->name = "not";
      n->kids.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }
  NodePtr parse_compare() {
    NodePtr first = parse_math1();
    NodePtr n;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!n) {
        n = node(NodeKind::Compare);
        n->kids.push_back(std::move(first));
      }
      n->names.push_back(op);
      n->kids.push_back(parse_math1());
    }
    return n ? std::move(n) : std::move(first);
  }
  NodePtr parse_math1() {
    NodePtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = cur().text;
      advance();
      left = binary(op, std::move(left), parse_concat());
    }
    return left;
  }
  NodePtr parse_concat() {
    NodePtr left = parse_math2();
    while (skip_op("~")) left = binary("~", std::move(left), parse_math2());
    return left;
  }
  NodePtr parse_math2() {
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = cur().text;
      advance();
      left = binary(op, std::move(left), parse_pow());
    }
    return left;
  }
  NodePtr parse_pow() {
    NodePtr left = parse_unary(true);
    while (skip_op("**")) left = binary("**", std::move(left), parse_unary(true));
    return left;
  }
  NodePtr parse_unary(bool with_filter) {
    DepthGuard guard(depth_, *this);
    NodePtr n;
    if (is_op("-") || is_op("+")) {
      n = node(NodeKind::Unary);
      n->name = cur().text;
      advance();
      n->kids.push_back(parse_unary(false));
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  NodePtr parse_primary() {
    DepthGuard guard(depth_, *this);
    const Token& token = cur();
    NodePtr n;
    if (token.type == Tok::Name) {
      const std::string& w = token.text;
      if (w == "true" || w == "True" || w == "false" || w == "False") {
        n = node(NodeKind::Literal);
        n->value = Value(w == "true" || w == "True");
      } else if (w == "none" || w == "None") {
        n = node(NodeKind::Literal);
        n->value = Value::none();
      } else {
        n = node(NodeKind::Name);
        n->name = w;
      }
      advance();
    } else if (token.type == Tok::String) {
      n = node(NodeKind::Literal);
      std::string text;
      while (cur().type == Tok::String) {  // adjacent literals concatenate, as in Python
        text += cur().text;
        advance();
      }
      n->value = Value(std::move(text));
    } else if (token.type == Tok::Int || token.type == Tok::Float) {
      n = node(NodeKind::Literal);
      n->value = token.number;
      advance();
    } else if (is_op("(")) {
      advance();
      n = parse_tuple_of(&Parser::parse_expression_full, {}, true);
      expect_op(")");
    } else if (is_op("[")) {
      n = node(NodeKind::ListLit);
      advance();
      while (!is_op("]")) {
        if (!n->kids.empty()) expect_op(",");
        if (is_op("]")) break;
        n->kids.push_back(parse_expression(true));
      }
      expect_op("]");
    } else if (is_op("{")) {
      n = node(NodeKind::DictLit);
      advance();
      while (!is_op("}")) {
        if (!n->kids.empty()) expect_op(",");
        if (is_op("}")) break;
        n->kids.push_back(parse_expression(true));
        expect_op(":");
        n->kids.push_back(parse_expression(true));
      }
      expect_op("}");
    } else {
      fail(fmt::format("unexpected '{}'", describe(token)));
    }
    return n;
  }

  NodePtr parse_postfix(NodePtr n) {
    while (true) {
      if (is_op(".")) {
        advance();
        if (cur().type == Tok::Name) {
          NodePtr attr = node(NodeKind::GetAttr);
          attr->name = cur().text;
          attr->kids.push_back(std::move(n));
          n = std::move(attr);
          advance();
        } else if (cur().type == Tok::Int) {
          NodePtr item = node(NodeKind::GetItem);
          NodePtr key = node(NodeKind::Literal);
          key->value = cur().number;
          item->kids.push_back(std::move(n));
          item->kids.push_back(std::move(key));
          n = std::move(item);
          advance();
        } else {
          fail("expected name or number");
        }
      } else if (is_op("[")) {
        n = parse_subscript(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodePtr parse_subscript(NodePtr target) {
    NodePtr item = node(NodeKind::GetItem);
    advance();  // [
    std::vector<NodePtr> keys;
    while (!is_op("]")) {
      if (!keys.empty()) expect_op(",");
      if (is_op("]")) break;
      keys.push_back(parse_subscribed());
    }
    expect_op("]");
    if (keys.empty()) fail("expected subscript expression");
    item->kids.push_back(std::move(target));
    if (keys.size() == 1) {
      item->kids.push_back(std::move(keys[0]));
    } else {
      NodePtr tuple = node(NodeKind::TupleLit);
      tuple->kids = std::move(keys);
      item->kids.push_back(std::move(tuple));
    }
    return item;
  }

  NodePtr parse_subscribed() {
    NodePtr first;
    if (!is_op(":")) {
      first = parse_expression(true);
      if (!is_op(":")) return first;
    }
    NodePtr slice = node(NodeKind::Slice);
    advance();  // :
    slice->kids.push_back(std::move(first));
    slice->kids.push_back(is_op("]") || is_op(",") || is_op(":") ? nullptr : parse_expression(true));
    if (skip_op(":")) {
      slice->kids.push_back(is_op("]") || is_op(",") ? nullptr : parse_expression(true));
    } else {
      slice->kids.push_back(nullptr);
    }
    return slice;
  }

  // (args) into n's kids (after kids[0]), keyword names and star arguments.
  void parse_call_args(Node& n) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (skip_op("**")) {
        n.star_kwargs = parse_expression(true);
      } else if (skip_op("*")) {
        n.star_args = parse_expression(true);
      } else if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        n.names.push_back(cur().text);
        advance();
        advance();
        n.kids.push_back(parse_expression(true));
      } else {
        if (!n.names.empty()) fail("positional argument follows keyword argument");
        n.kids.push_back(parse_expression(true));
        ++n.positional;
      }
    }
    expect_op(")");
  }

  NodePtr parse_call(NodePtr callee) {
    DepthGuard guard(depth_, *this);
    NodePtr n = node(NodeKind::Call);
    n->kids.push_back(std::move(callee));
    parse_call_args(*n);
    return n;
  }

  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek().type == Tok::Name) {
      advance();
      name += '.';
      name += expect_name();
    }
    return name;
  }

  // `| f(args) | g ...` applied to `operand` (null in filter blocks).
  NodePtr parse_filters(NodePtr operand, bool start_inline = false) {
    NodePtr n = std::move(operand);
    while (start_inline || is_op("|")) {
      if (!start_inline) advance();
      start_inline = false;
      NodePtr filter = node(NodeKind::Filter);
      filter->name = parse_dotted_name();
      if (!has_filter(filter->name)) raise("TemplateAssertionError", fmt::format("No filter named '{}'.", filter->name));
      filter->kids.push_back(std::move(n));
      if (is_op("(")) parse_call_args(*filter);
      n = std::move(filter);
    }
    return n;
  }

  NodePtr parse_filter_expr(NodePtr n) {
    while (true) {
      if (is_op("|")) {
        n = parse_filters(std::move(n));
      } else if (is_name("is")) {
        n = parse_test(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodePtr parse_test(NodePtr operand) {
    NodePtr test = node(NodeKind::Test);
    advance();  // is
    test->negated = skip_name("not");
    test->name = parse_dotted_name();
    if (!has_test(test->name)) raise("TemplateAssertionError", fmt::format("No test named '{}'.", test->name));
    test->kids.push_back(std::move(operand));
    if (is_op("(")) {
      parse_call_args(*test);
    } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                cur().type == Tok::Float || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      test->kids.push_back(parse_postfix(parse_primary()));
      test->positional = 1;
    }
    return test;
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

NodePtr parse_template(std::string_view source) { return Parser(Lexer(source).run()).parse(); }

}  // namespace guardkit::text::jinja
