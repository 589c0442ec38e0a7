// The Jinja evaluator: walks the syntax tree with jinja2's scoping (a for-loop iteration, macro call, with or call
// block opens a scope; if does not, so a plain `set` inside a loop does not leak out of it), Python's operators,
// the attribute-then-item lookup of jinja2's getattr, and the builtin filters, tests and globals. The environment is
// transformers' ImmutableSandboxedEnvironment: lists and dicts cannot be changed (append, update, ... raise
// SecurityError), attributes starting with "_" are unreachable, and nothing touches files or the environment.
#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>

#include "text/jinja_ast.h"
#include "text/unicode.h"

namespace guardkit::text::jinja {

struct Frame {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Frame> parent;
};
using FramePtr = std::shared_ptr<Frame>;

namespace {

enum class Flow { Normal, Break, Continue };

[[noreturn]] void raise_undefined(const Value& v) { raise("UndefinedError", v.undefined_message()); }
void require_defined(const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
}

// How jinja2 names an object in "has no attribute" messages.
std::string object_name(const Value& v) { return v.is_none() ? "None" : v.type_name() + " object"; }

Value missing_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_name(obj), name));
}
Value missing_element(const Value& obj, const Value& key) {
  if (key.is_string()) return missing_attribute(obj, key.as_string());
  return Value::undefined(fmt::format("'{}' has no element {}", object_name(obj), key.repr()));
}

bool is_space(char32_t cp) { return unicode::is_whitespace(cp) || (cp >= 0x1c && cp <= 0x1f); }

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out += unicode::decode_utf8(s, i);
  return out;
}
std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) unicode::append_utf8(out, cp);
  return out;
}
size_t code_points(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return n;
}

// Python's str.strip / lstrip / rstrip: whitespace, or any of `chars`.
std::string python_strip_chars(const std::string& s, const Value& chars, bool left, bool right) {
  const std::u32string text = to_u32(s);
  const std::u32string set = chars.is_string() ? to_u32(chars.as_string()) : U"";
  auto strip_it = [&](char32_t cp) { return chars.is_string() ? set.find(cp) != std::u32string::npos : is_space(cp); };
  size_t begin = 0, end = text.size();
  if (left)
    while (begin < end && strip_it(text[begin])) ++begin;
  if (right)
    while (end > begin && strip_it(text[end - 1])) --end;
  return to_utf8(std::u32string_view(text).substr(begin, end - begin));
}

std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
// Python's str.title() for ASCII letters: upper after a non-letter, lower after a letter.
std::string ascii_title(std::string s) {
  bool after_letter = false;
  for (char& c : s) {
    const bool letter = std::isalpha(static_cast<unsigned char>(c));
    if (letter) c = static_cast<char>(after_letter ? std::tolower(c) : std::toupper(c));
    after_letter = letter || (static_cast<unsigned char>(c) >= 0x80 && after_letter);
  }
  return s;
}

// Python's str.splitlines().
std::vector<std::string> split_lines(const std::string& s, bool keep_ends = false) {
  std::vector<std::string> lines;
  const std::u32string text = to_u32(s);
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    const bool boundary = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e ||
                          c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!boundary) continue;
    size_t end = i;
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
    lines.push_back(to_utf8(std::u32string_view(text).substr(start, (keep_ends ? i + 1 : end) - start)));
    start = i + 1;
  }
  if (start < text.size()) lines.push_back(to_utf8(std::u32string_view(text).substr(start)));
  return lines;
}

std::string replace_all(const std::string& s, const std::string& old, const std::string& with, int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `with` around every code point
    const std::u32string text = to_u32(s);
    int64_t done = 0;
    for (size_t i = 0; i <= text.size(); ++i) {
      if (count < 0 || done < count) {
        out += with;
        ++done;
      }
      if (i < text.size()) unicode::append_utf8(out, text[i]);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(old, pos);
    if (at == std::string::npos) break;
    out.append(s, pos, at - pos);
    out += with;
    pos = at + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

int64_t checked_int(const Value& v, const char* what) {
  if (v.kind() == Value::Kind::Int || v.kind() == Value::Kind::Bool) return v.as_int();
  require_defined(v);
  raise("TypeError", fmt::format("{} must be an integer, not '{}'", what, v.type_name()));
}

// Python's printf-style formatting (`"%s" % x`, the format filter).
std::string percent_format(const std::string& format, const Value& args) {
  std::vector<Value> positional;
  const Value* mapping = args.is_mapping() ? &args : nullptr;
  if (args.kind() == Value::Kind::Tuple) {
    positional = args.items();
  } else if (!mapping) {
    positional.push_back(args);
  }
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) raise("ValueError", "incomplete format");
    if (format[i] == '%') {
      out += '%';
      continue;
    }
    const Value* arg = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos || !mapping) raise("TypeError", "format requires a mapping");
      arg = mapping->find(std::string_view(format).substr(i + 1, close - i - 1));
      if (!arg) raise("KeyError", Value(format.substr(i + 1, close - i - 1)).repr());
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos) flags += format[i++];
    std::string width, precision;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) width += format[i++];
    if (i < format.size() && format[i] == '.') {
      precision = ".";
      ++i;
      while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) precision += format[i++];
    }
    if (i >= format.size()) raise("ValueError", "incomplete format");
    const char conversion = format[i];
    if (!arg) {
      if (next >= positional.size()) raise("TypeError", "not enough arguments for format string");
      arg = &positional[next++];
    }
    std::string piece;
    const std::string spec = "%" + flags + width + precision;
    char buf[512];
    switch (conversion) {
      case 's': piece = arg->str(); break;
      case 'r':
      case 'a': piece = arg->repr(); break;
      case 'd':
      case 'i':
      case 'u':
        if (!arg->is_number()) raise("TypeError", fmt::format("%{} format: a real number is required, not {}", conversion, arg->type_name()));
        std::snprintf(buf, sizeof buf, (spec + "lld").c_str(), static_cast<long long>(arg->kind() == Value::Kind::Float ? std::trunc(arg->as_double()) : arg->as_int()));
        piece = buf;
        break;
      case 'x':
      case 'X':
      case 'o':
        std::snprintf(buf, sizeof buf, (spec + "ll" + conversion).c_str(), static_cast<long long>(checked_int(*arg, "format argument")));
        piece = buf;
        break;
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!arg->is_number()) raise("TypeError", fmt::format("must be real number, not {}", arg->type_name()));
        std::snprintf(buf, sizeof buf, (spec + conversion).c_str(), arg->as_double());
        piece = buf;
        break;
      case 'c':
        if (arg->is_string()) {
          piece = arg->as_string();
        } else {
          unicode::append_utf8(piece, static_cast<char32_t>(checked_int(*arg, "%c")));
        }
        break;
      default: raise("ValueError", fmt::format("unsupported format character '{}'", conversion));
    }
    if ((conversion == 's' || conversion == 'r' || conversion == 'a' || conversion == 'c') && !width.empty()) {
      const size_t w = std::stoul(width), n = code_points(piece);
      if (n < w) piece = flags.find('-') != std::string::npos ? piece + std::string(w - n, ' ') : std::string(w - n, ' ') + piece;
    }
    out += piece;
  }
  if (!mapping && next < positional.size()) raise("TypeError", "not all arguments converted during string formatting");
  return out;
}

}  // namespace

struct Interpreter {
  const RenderOptions& options;
  int depth = 0;
  int64_t iterations = 0;
  FramePtr globals;
  FramePtr root;  // the render's top-level scope
  // Mutable cells created while rendering: a namespace can hold itself (and loop.changed remembers values), so
  // they are emptied when the render ends to break reference cycles. Macros hold their defining scope weakly.
  std::vector<Value> namespaces;
  std::vector<std::shared_ptr<std::optional<ValueList>>> changed_cells;

  explicit Interpreter(const RenderOptions& o) : options(o) {}

  struct DepthGuard {
    Interpreter& in;
    explicit DepthGuard(Interpreter& i) : in(i) {
      if (++in.depth > in.options.limits.max_depth)
        raise("TemplateLimitError", fmt::format("the template nests or recurses deeper than {} levels", in.options.limits.max_depth));
    }
    ~DepthGuard() { --in.depth; }
  };

  void count_iterations(int64_t n) {
    iterations += n;
    if (iterations > options.limits.max_loop_iterations)
      raise("TemplateLimitError", fmt::format("the template runs more than {} loop iterations", options.limits.max_loop_iterations));
  }
  const std::string& checked(const std::string& s) const {
    if (s.size() > options.limits.max_output_bytes)
      raise("TemplateLimitError", fmt::format("the template output exceeds {} bytes", options.limits.max_output_bytes));
    return s;
  }
  Value checked_string(std::string s) const {
    checked(s);
    return Value(std::move(s));
  }

  // ---- lookup

  static Value lookup(const FramePtr& frame, const std::string& name) {
    for (const Frame* f = frame.get(); f; f = f->parent.get()) {
      auto it = f->vars.find(name);
      if (it != f->vars.end()) return it->second;
    }
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }

  // Iterating a value as Python does: list items, dict keys, string characters; Undefined iterates as empty.
  ValueList iterate(const Value& v) {
    switch (v.kind()) {
      case Value::Kind::Undefined: return {};
      case Value::Kind::List:
      case Value::Kind::Tuple: return v.items();
      case Value::Kind::Dict: {
        ValueList keys;
        for (const auto& entry : v.entries()) keys.push_back(entry.first);
        return keys;
      }
      case Value::Kind::String: {
        ValueList chars;
        const std::string& s = v.as_string();
        for (size_t i = 0; i < s.size();) {
          const size_t start = i;
          unicode::decode_utf8(s, i);
          chars.emplace_back(s.substr(start, i - start));
        }
        return chars;
      }
      default: raise("TypeError", fmt::format("'{}' object is not iterable", v.type_name()));
    }
  }

  static Value bound(const std::string& name, NativeFunction f) { return Value::function(name, std::move(f)); }
  static Value unsafe(const Value& obj, const std::string& name) {
    const std::string message = fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, obj.type_name());
    return bound(name, [message](Interpreter&, CallArgs&) -> Value { raise("SecurityError", message); });
  }

  // jinja2's getattr: the Python attribute (a method) first, then the item.
  Value get_attribute(const Value& obj, const std::string& name) {
    require_defined(obj);
    if (!name.empty() && name[0] == '_')
      return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, obj.type_name()));
    switch (obj.kind()) {
      case Value::Kind::String: {
        Value method = string_method(obj, name);
        return method.is_undefined() ? missing_attribute(obj, name) : method;
      }
      case Value::Kind::Dict: {
        Value method = dict_method(obj, name);
        if (!method.is_undefined()) return method;
        if (const Value* item = obj.find(name)) return *item;
        return missing_attribute(obj, name);
      }
      case Value::Kind::Namespace:
        if (const Value* item = obj.find(name)) return *item;
        return missing_attribute(obj, name);
      case Value::Kind::List:
      case Value::Kind::Tuple: {
        Value method = list_method(obj, name);
        return method.is_undefined() ? missing_attribute(obj, name) : method;
      }
      default: return missing_attribute(obj, name);
    }
  }

  // jinja2's getitem: the item first, then (for a string key) the attribute.
  Value get_item(const Value& obj, const Value& key) {
    require_defined(obj);
    require_defined(key);
    switch (obj.kind()) {
      case Value::Kind::Dict:
        if (const Value* item = obj.find(key)) return *item;
        break;
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::String: {
        if (key.kind() != Value::Kind::Int && key.kind() != Value::Kind::Bool) break;
        if (obj.is_string()) {
          const std::u32string text = to_u32(obj.as_string());
          int64_t i = key.as_int();
          if (i < 0) i += static_cast<int64_t>(text.size());
          if (i < 0 || i >= static_cast<int64_t>(text.size())) return missing_element(obj, key);
          return Value(to_utf8(std::u32string(1, text[i])));
        }
        int64_t i = key.as_int();
        const int64_t n = static_cast<int64_t>(obj.items().size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return missing_element(obj, key);
        return obj.items()[i];
      }
      default: break;
    }
    if (key.is_string()) return get_attribute(obj, key.as_string());
    return missing_element(obj, key);
  }

  Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
    require_defined(obj);
    auto index = [](const Value& v, const char* what) -> std::optional<int64_t> {
      if (v.is_none() || v.is_undefined()) return std::nullopt;
      if (v.kind() != Value::Kind::Int && v.kind() != Value::Kind::Bool)
        raise("TypeError", fmt::format("slice indices must be integers or None, not {} ({})", v.type_name(), what));
      return v.as_int();
    };
    const int64_t step = index(step_v, "step").value_or(1);
    if (step == 0) raise("ValueError", "slice step cannot be zero");
    auto pick = [&](int64_t n, auto&& take) {
      auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
        if (!v) return dflt;
        int64_t i = *v < 0 ? *v + n : *v;
        if (step > 0) return std::clamp<int64_t>(i, 0, n);
        return std::clamp<int64_t>(i, -1, n - 1);
      };
      const int64_t start = clamp(index(start_v, "start"), step > 0 ? 0 : n - 1);
      const int64_t stop = clamp(index(stop_v, "stop"), step > 0 ? n : -1);
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) take(i);
    };
    if (obj.is_string()) {
      const std::u32string text = to_u32(obj.as_string());
      std::u32string out;
      pick(static_cast<int64_t>(text.size()), [&](int64_t i) { out += text[i]; });
      return Value(to_utf8(out));
    }
    if (obj.is_sequence()) {
      ValueList out;
      pick(static_cast<int64_t>(obj.items().size()), [&](int64_t i) { out.push_back(obj.items()[i]); });
      return Value::list(std::move(out), obj.kind());
    }
    raise("TypeError", fmt::format("'{}' object is not subscriptable", obj.type_name()));
  }

  // ---- Python methods of str, dict and list

  static Value arg(CallArgs& a, size_t i, std::string_view name, Value fallback = Value()) {
    if (i < a.positional.size()) return a.positional[i];
    for (auto& [k, v] : a.keyword)
      if (k == name) return v;
    return fallback;
  }

  Value string_method(const Value& self, const std::string& name) {
    const std::string s = self.as_string();
    static const char* const kNames[] = {
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "lower", "upper",
        "title", "capitalize", "replace", "find", "rfind", "index", "count", "join", "isdigit", "isalpha",
        "isalnum", "isspace", "islower", "isupper", "format", "zfill", "center", "ljust", "rjust", "removeprefix",
        "removesuffix", "swapcase", "casefold", "partition", "rpartition", "isnumeric", "isdecimal"};
    if (std::find_if(std::begin(kNames), std::end(kNames), [&](const char* n) { return name == n; }) == std::end(kNames))
      return Value();
    return bound(name, [s, name](Interpreter& in, CallArgs& a) -> Value { return in.call_string_method(s, name, a); });
  }

  Value call_string_method(const std::string& s, const std::string& name, CallArgs& a) {
    auto text_arg = [&](size_t i, const char* what) {
      Value v = arg(a, i, what);
      require_defined(v);
      if (!v.is_string()) raise("TypeError", fmt::format("{}() argument must be str, not {}", name, v.type_name()));
      return v.as_string();
    };
    if (name == "strip") return Value(python_strip_chars(s, arg(a, 0, "chars"), true, true));
    if (name == "lstrip") return Value(python_strip_chars(s, arg(a, 0, "chars"), true, false));
    if (name == "rstrip") return Value(python_strip_chars(s, arg(a, 0, "chars"), false, true));
    if (name == "split" || name == "rsplit") {
      const Value sep = arg(a, 0, "sep", Value::none());
      const Value max_v = arg(a, 1, "maxsplit", Value(-1));
      const int64_t maxsplit = checked_int(max_v, "maxsplit");
      ValueList parts;
      if (sep.is_none() || sep.is_undefined()) {  // runs of whitespace, no empty strings
        const std::u32string text = to_u32(s);
        std::vector<std::pair<size_t, size_t>> words;
        for (size_t i = 0; i < text.size();) {
          while (i < text.size() && is_space(text[i])) ++i;
          if (i >= text.size()) break;
          size_t j = i;
          while (j < text.size() && !is_space(text[j])) ++j;
          words.emplace_back(i, j);
          i = j;
        }
        if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
          if (name == "split") {
            size_t end = text.size();
            while (end > 0 && is_space(text[end - 1])) --end;
            words[maxsplit].second = end;
            words.resize(maxsplit + 1);
          } else {
            const size_t keep = words.size() - maxsplit - 1;
            size_t begin = 0;
            while (begin < text.size() && is_space(text[begin])) ++begin;
            words[keep].first = begin;
            words.erase(words.begin(), words.begin() + keep);
          }
        }
        for (auto [b, e] : words) parts.emplace_back(to_utf8(std::u32string_view(text).substr(b, e - b)));
        return Value::list(std::move(parts));
      }
      const std::string separator = text_arg(0, "sep");
      if (separator.empty()) raise("ValueError", "empty separator");
      std::vector<std::string> pieces;
      size_t pos = 0;
      while (true) {
        const size_t at = s.find(separator, pos);
        if (at == std::string::npos) break;
        pieces.push_back(s.substr(pos, at - pos));
        pos = at + separator.size();
      }
      pieces.push_back(s.substr(pos));
      if (maxsplit >= 0 && static_cast<int64_t>(pieces.size()) > maxsplit + 1) {
        auto join = [&](size_t from, size_t to) {
          std::string joined;
          for (size_t k = from; k < to; ++k) joined += (k > from ? separator : "") + pieces[k];
          return joined;
        };
        std::vector<std::string> limited;
        if (name == "split") {
          limited.assign(pieces.begin(), pieces.begin() + maxsplit);
          limited.push_back(join(maxsplit, pieces.size()));
        } else {
          const size_t head = pieces.size() - maxsplit;
          limited.push_back(join(0, head));
          limited.insert(limited.end(), pieces.begin() + head, pieces.end());
        }
        pieces = std::move(limited);
      }
      for (std::string& p : pieces) parts.emplace_back(std::move(p));
      return Value::list(std::move(parts));
    }
    if (name == "splitlines") {
      ValueList lines;
      for (std::string& line : split_lines(s, arg(a, 0, "keepends", Value(false)).truthy())) lines.emplace_back(std::move(line));
      return Value::list(std::move(lines));
    }
    if (name == "startswith" || name == "endswith") {
      const Value prefix = arg(a, 0, "prefix");
      ValueList options = prefix.kind() == Value::Kind::Tuple ? prefix.items() : ValueList{prefix};
      for (const Value& option : options) {
        require_defined(option);
        if (!option.is_string())
          raise("TypeError", fmt::format("{} first arg must be str or a tuple of str, not {}", name, option.type_name()));
        const std::string& p = option.as_string();
        if (p.size() > s.size()) continue;
        if (name == "startswith" ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0)
          return Value(true);
      }
      return Value(false);
    }
    if (name == "lower" || name == "casefold") return Value(ascii_lower(s));
    if (name == "upper") return Value(ascii_upper(s));
    if (name == "title") return Value(ascii_title(s));
    if (name == "capitalize") return Value(s.empty() ? s : ascii_upper(s.substr(0, 1)) + ascii_lower(s.substr(1)));
    if (name == "swapcase") {
      std::string out = s;
      for (char& c : out) c = std::isupper(static_cast<unsigned char>(c)) ? std::tolower(c) : std::toupper(c);
      return Value(out);
    }
    if (name == "replace") {
      const int64_t count = checked_int(arg(a, 2, "count", Value(-1)), "count");
      return checked_string(replace_all(s, text_arg(0, "old"), text_arg(1, "new"), count));
    }
    if (name == "find" || name == "rfind" || name == "index") {
      const std::string needle = text_arg(0, "sub");
      const size_t at = name == "rfind" ? s.rfind(needle) : s.find(needle);
      if (at == std::string::npos) {
        if (name == "index") raise("ValueError", "substring not found");
        return Value(-1);
      }
      return Value(static_cast<int64_t>(code_points(std::string_view(s).substr(0, at))));
    }
    if (name == "count") {
      const std::string needle = text_arg(0, "sub");
      if (needle.empty()) return Value(static_cast<int64_t>(code_points(s) + 1));
      int64_t n = 0;
      for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
      return Value(n);
    }
    if (name == "join") {
      std::string out;
      bool first = true;
      for (const Value& item : iterate(arg(a, 0, "iterable"))) {
        if (!item.is_string()) raise("TypeError", fmt::format("sequence item: expected str instance, {} found", item.type_name()));
        if (!first) out += s;
        first = false;
        out += item.as_string();
        checked(out);
      }
      return Value(out);
    }
    if (name.rfind("is", 0) == 0) {
      const std::u32string text = to_u32(s);
      if (text.empty()) return Value(false);
      bool has_cased = false;
      for (char32_t cp : text) {
        const bool digit = unicode::category(cp) == unicode::Nd;
        const bool alpha = unicode::is_letter(cp);
        bool ok = true;
        if (name == "isdigit" || name == "isdecimal") ok = digit;
        if (name == "isnumeric") ok = unicode::is_number(cp);
        if (name == "isalpha") ok = alpha;
        if (name == "isalnum") ok = alpha || unicode::is_number(cp);
        if (name == "isspace") ok = is_space(cp);
        if (name == "islower" || name == "isupper") {
          const unicode::Category c = unicode::category(cp);
          if (c == unicode::Lu || c == unicode::Ll || c == unicode::Lt) has_cased = true;
          ok = name == "islower" ? c != unicode::Lu && c != unicode::Lt : c != unicode::Ll && c != unicode::Lt;
        }
        if (!ok) return Value(false);
      }
      return Value(name == "islower" || name == "isupper" ? has_cased : true);
    }
    if (name == "format") return checked_string(brace_format(s, a));
    if (name == "zfill" || name == "center" || name == "ljust" || name == "rjust") {
      const int64_t width = checked_int(arg(a, 0, "width"), "width");
      if (width > static_cast<int64_t>(options.limits.max_output_bytes)) checked(std::string(options.limits.max_output_bytes + 1, ' '));
      const int64_t n = static_cast<int64_t>(code_points(s));
      if (width <= n) return Value(s);
      const std::string fill = name == "zfill" ? "0" : arg(a, 1, "fillchar", Value(" ")).str();
      auto repeat = [&](int64_t k) {
        std::string out;
        for (int64_t i = 0; i < k; ++i) out += fill;
        return out;
      };
      const int64_t pad = width - n;
      if (name == "ljust") return Value(s + repeat(pad));
      if (name == "rjust") return Value(repeat(pad) + s);
      if (name == "zfill") {
        if (!s.empty() && (s[0] == '-' || s[0] == '+')) return Value(s.substr(0, 1) + repeat(pad) + s.substr(1));
        return Value(repeat(pad) + s);
      }
      const int64_t left = pad / 2 + (pad & width & 1);  // CPython's centering
      return Value(repeat(left) + s + repeat(pad - left));
    }
    if (name == "removeprefix") {
      const std::string p = text_arg(0, "prefix");
      return Value(s.rfind(p, 0) == 0 ? s.substr(p.size()) : s);
    }
    if (name == "removesuffix") {
      const std::string p = text_arg(0, "suffix");
      return Value(!p.empty() && s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0
                       ? s.substr(0, s.size() - p.size()) : s);
    }
    if (name == "partition" || name == "rpartition") {
      const std::string sep = text_arg(0, "sep");
      if (sep.empty()) raise("ValueError", "empty separator");
      const size_t at = name == "partition" ? s.find(sep) : s.rfind(sep);
      if (at == std::string::npos)
        return name == "partition" ? Value::tuple({Value(s), Value(""), Value("")}) : Value::tuple({Value(""), Value(""), Value(s)});
      return Value::tuple({Value(s.substr(0, at)), Value(sep), Value(s.substr(at + sep.size()))});
    }
    raise("TypeError", "unknown string method " + name);
  }

  // Python's str.format with {}, {0}, {name}, {name.attr}/{name[key]} fields, !r/!s and {{ }} escapes. Format
  // specs support fill, alignment and width.
  std::string brace_format(const std::string& s, CallArgs& a) {
    std::string out;
    size_t auto_index = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if (c == '}' ) {
        if (i + 1 < s.size() && s[i + 1] == '}') ++i;
        else raise("ValueError", "Single '}' encountered in format string");
        out += '}';
        continue;
      }
      if (c != '{') {
        out += c;
        continue;
      }
      if (i + 1 < s.size() && s[i + 1] == '{') {
        out += '{';
        ++i;
        continue;
      }
      const size_t close = s.find('}', i);
      if (close == std::string::npos) raise("ValueError", "expected '}' before end of string");
      std::string field = s.substr(i + 1, close - i - 1);
      i = close;
      std::string spec, conversion;
      if (size_t colon = field.find(':'); colon != std::string::npos) {
        spec = field.substr(colon + 1);
        field.resize(colon);
      }
      if (size_t bang = field.find('!'); bang != std::string::npos) {
        conversion = field.substr(bang + 1);
        field.resize(bang);
      }
      size_t name_end = field.find_first_of(".[");
      const std::string head = field.substr(0, name_end);
      Value v;
      if (head.empty()) {
        if (auto_index >= a.positional.size()) raise("IndexError", "Replacement index out of range for positional args tuple");
        v = a.positional[auto_index++];
      } else if (std::all_of(head.begin(), head.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
        const size_t k = std::stoul(head);
        if (k >= a.positional.size()) raise("IndexError", "Replacement index out of range for positional args tuple");
        v = a.positional[k];
      } else {
        v = arg(a, SIZE_MAX, head);
        if (v.is_undefined()) raise("KeyError", Value(head).repr());
      }
      while (name_end != std::string::npos && name_end < field.size()) {
        if (field[name_end] == '.') {
          const size_t next = field.find_first_of(".[", name_end + 1);
          v = get_attribute(v, field.substr(name_end + 1, next - name_end - 1));
          name_end = next;
        } else {
          const size_t end = field.find(']', name_end);
          if (end == std::string::npos) raise("ValueError", "Missing ']' in format string");
          const std::string key = field.substr(name_end + 1, end - name_end - 1);
          const bool numeric = !key.empty() && std::all_of(key.begin(), key.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); });
          v = get_item(v, numeric ? Value(static_cast<int64_t>(std::stoll(key))) : Value(key));
          name_end = end + 1;
        }
      }
      std::string piece = conversion == "r" ? v.repr() : v.str();
      if (!spec.empty()) {
        char fill = ' ', align = v.is_number() ? '>' : '<';
        size_t k = 0;
        if (spec.size() >= 2 && std::string_view("<>^").find(spec[1]) != std::string_view::npos) {
          fill = spec[0];
          align = spec[1];
          k = 2;
        } else if (std::string_view("<>^").find(spec[0]) != std::string_view::npos) {
          align = spec[0];
          k = 1;
        }
        const std::string width_text = spec.substr(k);
        if (!width_text.empty() && std::all_of(width_text.begin(), width_text.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
          const size_t width = std::min<size_t>(std::stoul(width_text), options.limits.max_output_bytes);
          const size_t n = code_points(piece);
          if (n < width) {
            const size_t pad = width - n;
            if (align == '<') piece += std::string(pad, fill);
            else if (align == '>') piece = std::string(pad, fill) + piece;
            else piece = std::string(pad / 2, fill) + piece + std::string(pad - pad / 2, fill);
          }
        }
      }
      out += piece;
      checked(out);
    }
    return out;
  }

  Value dict_method(const Value& self, const std::string& name) {
    if (name == "keys" || name == "values" || name == "items") {
      return bound(name, [self, name](Interpreter&, CallArgs&) {
        ValueList out;
        for (const auto& [k, v] : self.entries())
          out.push_back(name == "keys" ? k : name == "values" ? v : Value::tuple({k, v}));
        return Value::list(std::move(out));
      });
    }
    if (name == "get") {
      return bound(name, [self](Interpreter&, CallArgs& a) {
        const Value* found = self.find(arg(a, 0, "key"));
        return found ? *found : arg(a, 1, "default", Value::none());
      });
    }
    if (name == "pop" || name == "popitem" || name == "update" || name == "setdefault" || name == "clear")
      return unsafe(self, name);
    return Value();
  }

  Value list_method(const Value& self, const std::string& name) {
    if (name == "index" || name == "count") {
      return bound(name, [self, name](Interpreter&, CallArgs& a) -> Value {
        const Value needle = arg(a, 0, "value");
        int64_t n = 0;
        for (size_t k = 0; k < self.items().size(); ++k) {
          if (!python_equal(self.items()[k], needle)) continue;
          if (name == "index") return Value(static_cast<int64_t>(k));
          ++n;
        }
        if (name == "index") raise("ValueError", fmt::format("{} is not in list", needle.repr()));
        return Value(n);
      });
    }
    if (name == "append" || name == "extend" || name == "insert" || name == "pop" || name == "remove" ||
        name == "reverse" || name == "sort" || name == "clear")
      return unsafe(self, name);
    return Value();
  }

  // ---- operators

  [[noreturn]] static void unsupported(const std::string& op, const Value& a, const Value& b) {
    raise("TypeError", fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
  }

  Value arithmetic(const std::string& op, const Value& a, const Value& b) {
    require_defined(a);
    require_defined(b);
    const bool ints = (a.kind() == Value::Kind::Int || a.kind() == Value::Kind::Bool) &&
                      (b.kind() == Value::Kind::Int || b.kind() == Value::Kind::Bool);
    auto overflow = [] { raise("OverflowError", "integer result too large for this template engine (64-bit)"); };
    if (op == "+") {
      if (ints) {
        int64_t r;
        if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) overflow();
        return Value(r);
      }
      if (a.is_number() && b.is_number()) return Value(a.as_double() + b.as_double());
      if (a.is_string() && b.is_string()) return checked_string(a.as_string() + b.as_string());
      if (a.is_sequence() && a.kind() == b.kind()) {
        ValueList items = a.items();
        items.insert(items.end(), b.items().begin(), b.items().end());
        count_iterations(static_cast<int64_t>(b.items().size()));
        return Value::list(std::move(items), a.kind());
      }
      if (a.is_string() || a.is_sequence())
        raise("TypeError", fmt::format("can only concatenate {} (not \"{}\") to {}", a.type_name(), b.type_name(), a.type_name()));
      unsupported("+", a, b);
    }
    if (op == "*") {
      if (ints) {
        int64_t r;
        if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) overflow();
        return Value(r);
      }
      if (a.is_number() && b.is_number()) return Value(a.as_double() * b.as_double());
      const Value* seq = a.is_string() || a.is_sequence() ? &a : b.is_string() || b.is_sequence() ? &b : nullptr;
      const Value* times = seq == &a ? &b : &a;
      if (seq && (times->kind() == Value::Kind::Int || times->kind() == Value::Kind::Bool)) {
        const int64_t n = std::max<int64_t>(0, times->as_int());
        if (seq->is_string()) {
          if (n > 0 && seq->as_string().size() > options.limits.max_output_bytes / static_cast<uint64_t>(n))
            checked(std::string(options.limits.max_output_bytes + 1, ' '));
          std::string out;
          for (int64_t k = 0; k < n; ++k) out += seq->as_string();
          return Value(out);
        }
        count_iterations(n * static_cast<int64_t>(seq->items().size()));
        ValueList out;
        for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq->items().begin(), seq->items().end());
        return Value::list(std::move(out), seq->kind());
      }
      if (seq) raise("TypeError", fmt::format("can't multiply sequence by non-int of type '{}'", times->type_name()));
      unsupported("*", a, b);
    }
    if (op == "%" && a.is_string()) return checked_string(percent_format(a.as_string(), b));
    if (!a.is_number() || !b.is_number()) unsupported(op, a, b);
    if (op == "-") {
      if (ints) {
        int64_t r;
        if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) overflow();
        return Value(r);
      }
      return Value(a.as_double() - b.as_double());
    }
    if (op == "/") {
      if (b.as_double() == 0) raise("ZeroDivisionError", ints ? "division by zero" : "float division by zero");
      return Value(a.as_double() / b.as_double());
    }
    if (op == "//" || op == "%") {
      if (ints) {
        if (b.as_int() == 0) raise("ZeroDivisionError", op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
        if (a.as_int() == INT64_MIN && b.as_int() == -1) overflow();
        int64_t q = a.as_int() / b.as_int(), r = a.as_int() % b.as_int();
        if (r != 0 && ((r < 0) != (b.as_int() < 0))) {
          --q;
          r += b.as_int();
        }
        return op == "//" ? Value(q) : Value(r);
      }
      if (b.as_double() == 0) raise("ZeroDivisionError", op == "//" ? "float floor division by zero" : "float modulo");
      double r = std::fmod(a.as_double(), b.as_double());
      if (r != 0 && ((r < 0) != (b.as_double() < 0))) r += b.as_double();
      if (op == "%") return Value(r);
      return Value(std::floor(a.as_double() / b.as_double()));
    }
    if (op == "**") {
      if (ints && b.as_int() >= 0) {
        int64_t result = 1, base = a.as_int();
        for (int64_t e = b.as_int(); e > 0; --e) {
          if (__builtin_mul_overflow(result, base, &result)) overflow();
          if (result == 0 || result == 1) break;
        }
        return Value(result);
      }
      if (a.as_double() == 0 && b.as_double() < 0) raise("ZeroDivisionError", "0.0 cannot be raised to a negative power");
      return Value(std::pow(a.as_double(), b.as_double()));
    }
    raise("TemplateRuntimeError", "unknown operator " + op);
  }

  // Python's <, <=, >, >= (numbers, strings, and lists/tuples element by element).
  int compare_order(const std::string& op, const Value& a, const Value& b) {
    require_defined(a);
    require_defined(b);
    if (a.is_number() && b.is_number()) {
      if (a.kind() != Value::Kind::Float && b.kind() != Value::Kind::Float) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
      return a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double();
    }
    if (a.is_string() && b.is_string()) return a.as_string().compare(b.as_string()) < 0 ? -1 : a.as_string() != b.as_string();
    if (a.is_sequence() && a.kind() == b.kind()) {
      const size_t n = std::min(a.items().size(), b.items().size());
      for (size_t k = 0; k < n; ++k)
        if (!python_equal(a.items()[k], b.items()[k])) return compare_order(op, a.items()[k], b.items()[k]);
      return a.items().size() < b.items().size() ? -1 : a.items().size() > b.items().size();
    }
    raise("TypeError", fmt::format("'{}' not supported between instances of '{}' and '{}'", op, a.type_name(), b.type_name()));
  }

  bool contains(const Value& container, const Value& item) {
    switch (container.kind()) {
      case Value::Kind::Undefined: return false;
      case Value::Kind::String:
        if (!item.is_string())
          raise("TypeError", fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
        return container.as_string().find(item.as_string()) != std::string::npos;
      case Value::Kind::List:
      case Value::Kind::Tuple:
        for (const Value& v : container.items())
          if (python_equal(v, item)) return true;
        return false;
      case Value::Kind::Dict: return container.find(item) != nullptr;
      default: raise("TypeError", fmt::format("argument of type '{}' is not iterable", container.type_name()));
    }
  }

  bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return python_equal(a, b);
    if (op == "!=") return !python_equal(a, b);
    if (op == "in") return contains(b, a);
    if (op == "notin") return !contains(b, a);
    const int c = compare_order(op, a, b);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  // ---- calls

  CallArgs eval_args(const Node& n, const FramePtr& frame, size_t first_arg) {
    CallArgs args;
    for (size_t k = first_arg; k < first_arg + n.positional; ++k) args.positional.push_back(eval(*n.kids[k], frame));
    for (size_t k = 0; k < n.names.size(); ++k)
      args.keyword.emplace_back(n.names[k], eval(*n.kids[first_arg + n.positional + k], frame));
    if (n.star_args)
      for (Value& v : iterate(eval(*n.star_args, frame))) args.positional.push_back(std::move(v));
    if (n.star_kwargs) {
      const Value kw = eval(*n.star_kwargs, frame);
      if (!kw.is_mapping()) raise("TypeError", "argument after ** must be a mapping, not " + kw.type_name());
      for (const auto& [k, v] : kw.entries()) args.keyword.emplace_back(k.str(), v);
    }
    return args;
  }

  Value call(const Value& callee, CallArgs& args) {
    if (callee.kind() == Value::Kind::Function) return callee.as_function().call(*this, args);
    if (callee.is_mapping())  // a recursive loop's `loop(children)`
      if (const Value* fn = callee.find("__call__")) return fn->as_function().call(*this, args);
    require_defined(callee);
    raise("TypeError", fmt::format("'{}' object is not callable", callee.type_name()));
  }

  // ---- expressions

  Value eval(const Node& n, const FramePtr& frame) {
    DepthGuard guard(*this);
    switch (n.kind) {
      case NodeKind::Literal: return n.value;
      case NodeKind::Name: return lookup(frame, n.name);
      case NodeKind::GetAttr: return get_attribute(eval(*n.kids[0], frame), n.name);
      case NodeKind::GetItem: {
        const Value obj = eval(*n.kids[0], frame);
        const Node& key = *n.kids[1];
        if (key.kind == NodeKind::Slice) {
          auto part = [&](size_t k) { return key.kids[k] ? eval(*key.kids[k], frame) : Value::none(); };
          return slice(obj, part(0), part(1), part(2));
        }
        return get_item(obj, eval(key, frame));
      }
      case NodeKind::Call: {
        const Value callee = eval(*n.kids[0], frame);
        CallArgs args = eval_args(n, frame, 1);
        return call(callee, args);
      }
      case NodeKind::Filter: return eval_filter(n, frame, nullptr);
      case NodeKind::Test: {
        const Value operand = eval(*n.kids[0], frame);
        CallArgs args = eval_args(n, frame, 1);
        return Value(run_test(n.name, operand, args) != n.negated);
      }
      case NodeKind::Unary: {
        const Value v = eval(*n.kids[0], frame);
        if (n.name == "not") return Value(!v.truthy());
        require_defined(v);
        if (!v.is_number()) raise("TypeError", fmt::format("bad operand type for unary {}: '{}'", n.name, v.type_name()));
        if (n.name == "+") return v.kind() == Value::Kind::Bool ? Value(v.as_int()) : v;
        if (v.kind() == Value::Kind::Float) return Value(-v.as_double());
        if (v.as_int() == INT64_MIN) raise("OverflowError", "integer result too large for this template engine (64-bit)");
        return Value(-v.as_int());
      }
      case NodeKind::Binary: {
        if (n.name == "and" || n.name == "or") {
          Value left = eval(*n.kids[0], frame);
          if (left.truthy() == (n.name == "or")) return left;
          return eval(*n.kids[1], frame);
        }
        const Value a = eval(*n.kids[0], frame);
        const Value b = eval(*n.kids[1], frame);
        if (n.name == "~") return checked_string(a.str() + b.str());
        return arithmetic(n.name, a, b);
      }
      case NodeKind::Compare: {
        Value left = eval(*n.kids[0], frame);
        for (size_t k = 0; k < n.names.size(); ++k) {
          Value right = eval(*n.kids[k + 1], frame);
          if (!compare(n.names[k], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case NodeKind::CondExpr:
        if (eval(*n.kids[0], frame).truthy()) return eval(*n.kids[1], frame);
        if (n.kids[2]) return eval(*n.kids[2], frame);
        return Value::undefined(fmt::format("the inline if-expression on line {} evaluated to false and no else "
                                            "section was defined.", n.line));
      case NodeKind::ListLit:
      case NodeKind::TupleLit: {
        ValueList items;
        for (const NodePtr& kid : n.kids) items.push_back(eval(*kid, frame));
        return Value::list(std::move(items), n.kind == NodeKind::ListLit ? Value::Kind::List : Value::Kind::Tuple);
      }
      case NodeKind::DictLit: {
        Value d = Value::dict();
        for (size_t k = 0; k + 1 < n.kids.size(); k += 2) {
          const Value key = eval(*n.kids[k], frame);
          if (key.kind() == Value::Kind::List || key.kind() == Value::Kind::Dict || key.is_undefined())
            raise("TypeError", fmt::format("unhashable type: '{}'", key.type_name()));
          d.set(key, eval(*n.kids[k + 1], frame));
        }
        return d;
      }
      default: raise("TemplateRuntimeError", "statement used as an expression");
    }
  }

  // A filter chain; `hole` is the operand of the innermost filter when its kid is null ({% filter %} bodies).
  Value eval_filter(const Node& n, const FramePtr& frame, const Value* hole) {
    Value operand;
    if (!n.kids[0]) {
      operand = hole ? *hole : Value();
    } else if (n.kids[0]->kind == NodeKind::Filter) {
      operand = eval_filter(*n.kids[0], frame, hole);
    } else {
      operand = eval(*n.kids[0], frame);
    }
    CallArgs args = eval_args(n, frame, 1);
    return run_filter(n.name, operand, args);
  }

  // ---- statements

  void write(std::string& out, std::string_view text) const {
    out += text;
    checked(out);
  }

  Flow exec_body(const Node& body, const FramePtr& frame, std::string& out) {
    for (const NodePtr& statement : body.kids) {
      const Flow flow = exec(*statement, frame, out);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

  std::string render_body(const Node& body, const FramePtr& frame) {
    std::string out;
    exec_body(body, frame, out);
    return out;
  }

  void assign(const Node& target, const Value& value, const FramePtr& frame) {
    if (target.kind == NodeKind::Name) {
      frame->vars[target.name] = value;
      return;
    }
    if (target.kind == NodeKind::GetAttr) {  // set ns.attr = value
      const Value ns = lookup(frame, target.kids[0]->name);
      if (ns.kind() != Value::Kind::Namespace) raise("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
      ns.set(Value(target.name), value);
      return;
    }
    // tuple unpacking
    ValueList items = iterate(value);
    if (items.size() < target.kids.size())
      raise("ValueError", fmt::format("not enough values to unpack (expected {}, got {})", target.kids.size(), items.size()));
    if (items.size() > target.kids.size())
      raise("ValueError", fmt::format("too many values to unpack (expected {})", target.kids.size()));
    for (size_t k = 0; k < items.size(); ++k) assign(*target.kids[k], items[k], frame);
  }

  static FramePtr child(const FramePtr& parent) {
    auto f = std::make_shared<Frame>();
    f->parent = parent;
    return f;
  }

  Flow exec(const Node& n, const FramePtr& frame, std::string& out) {
    DepthGuard guard(*this);
    switch (n.kind) {
      case NodeKind::Body: return exec_body(n, frame, out);
      case NodeKind::Text: write(out, n.name); return Flow::Normal;
      case NodeKind::Print: write(out, eval(*n.kids[0], frame).str()); return Flow::Normal;
      case NodeKind::If:
        for (size_t k = 0; k + 1 < n.kids.size(); k += 2)
          if (!n.kids[k] || eval(*n.kids[k], frame).truthy()) return exec_body(*n.kids[k + 1], frame, out);
        return Flow::Normal;
      case NodeKind::For: {
        ValueList items = iterate(eval(*n.kids[1], frame));
        run_loop(n, items, frame, out, 0);
        return Flow::Normal;
      }
      case NodeKind::Set: assign(*n.kids[0], eval(*n.kids[1], frame), frame); return Flow::Normal;
      case NodeKind::SetBlock: {
        Value text(render_body(*n.kids[1], frame));
        if (n.kids[2]) text = eval_filter(*n.kids[2], frame, &text);
        assign(*n.kids[0], text, frame);
        return Flow::Normal;
      }
      case NodeKind::Macro: frame->vars[n.name] = make_macro(n, n.name, *n.kids[0], 1, frame); return Flow::Normal;
      case NodeKind::CallBlock: {
        const Node& call_node = *n.kids[0];
        const Value callee = eval(*call_node.kids[0], frame);
        CallArgs args = eval_args(call_node, frame, 1);
        args.keyword.emplace_back("caller", make_macro(n, "caller", *n.kids[1], 2, frame));
        write(out, call(callee, args).str());
        return Flow::Normal;
      }
      case NodeKind::FilterBlock: {
        const Value text(render_body(*n.kids[1], child(frame)));
        write(out, eval_filter(*n.kids[0], frame, &text).str());
        return Flow::Normal;
      }
      case NodeKind::With: {
        FramePtr scope = child(frame);
        for (size_t k = 0; k < n.names.size(); ++k) scope->vars[n.names[k]] = eval(*n.kids[k], frame);
        return exec_body(*n.kids.back(), scope, out);
      }
      case NodeKind::Break: return Flow::Break;
      case NodeKind::Continue: return Flow::Continue;
      case NodeKind::Scoped: return exec_body(*n.kids[0], frame, out);
      default: raise("TemplateRuntimeError", "expression used as a statement");
    }
  }

  void run_loop(const Node& n, ValueList items, const FramePtr& frame, std::string& out, int depth0) {
    if (n.kids[2]) {  // {% for x in xs if cond %}: the loop variables count only the kept items
      ValueList kept;
      for (Value& item : items) {
        FramePtr scope = child(frame);
        assign(*n.kids[0], item, scope);
        if (eval(*n.kids[2], scope).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    count_iterations(static_cast<int64_t>(items.size()) + 1);
    const int64_t length = static_cast<int64_t>(items.size());
    auto last_changed = std::make_shared<std::optional<ValueList>>();
    changed_cells.push_back(last_changed);
    for (int64_t i = 0; i < length; ++i) {
      FramePtr scope = child(frame);
      assign(*n.kids[0], items[i], scope);
      Value loop = Value::dict({
          {Value("index0"), Value(i)},
          {Value("index"), Value(i + 1)},
          {Value("revindex0"), Value(length - i - 1)},
          {Value("revindex"), Value(length - i)},
          {Value("first"), Value(i == 0)},
          {Value("last"), Value(i == length - 1)},
          {Value("length"), Value(length)},
          {Value("depth0"), Value(static_cast<int64_t>(depth0))},
          {Value("depth"), Value(static_cast<int64_t>(depth0 + 1))},
          {Value("previtem"), i > 0 ? items[i - 1] : Value::undefined("there is no previous item")},
          {Value("nextitem"), i + 1 < length ? items[i + 1] : Value::undefined("there is no next item")},
      });
      loop.set(Value("cycle"), bound("cycle", [i](Interpreter&, CallArgs& a) -> Value {
                 if (a.positional.empty()) raise("TypeError", "no items for cycling given");
                 return a.positional[i % a.positional.size()];
               }));
      loop.set(Value("changed"), bound("changed", [last_changed](Interpreter&, CallArgs& a) {
                 if (*last_changed && last_changed->value().size() == a.positional.size() &&
                     std::equal(a.positional.begin(), a.positional.end(), last_changed->value().begin(), python_equal))
                   return Value(false);
                 *last_changed = a.positional;
                 return Value(true);
               }));
      if (n.recursive) {
        const Node* node = &n;
        std::weak_ptr<Frame> weak_outer = frame;
        loop.set(Value("__call__"), bound("loop", [node, weak_outer, depth0](Interpreter& in, CallArgs& a) {
                   std::string text;
                   FramePtr outer = weak_outer.lock();
                   in.run_loop(*node, in.iterate(arg(a, 0, "iterable")), outer ? outer : in.root, text, depth0 + 1);
                   return Value(text);
                 }));
      }
      scope->vars["loop"] = loop;
      if (exec_body(*n.kids[3], scope, out) == Flow::Break) break;
    }
    if (length == 0 && n.kids[4]) exec_body(*n.kids[4], child(frame), out);
  }

  static bool references(const Node& n, const std::string& name) {
    if (n.kind == NodeKind::Name && n.name == name) return true;
    for (const NodePtr& kid : n.kids)
      if (kid && references(*kid, name)) return true;
    return (n.star_args && references(*n.star_args, name)) || (n.star_kwargs && references(*n.star_kwargs, name));
  }

  // A macro (or a call block's caller): parameters n.names with default kids from `first_default`.
  Value make_macro(const Node& n, const std::string& name, const Node& body, size_t first_default, const FramePtr& closure) {
    const Node* def = &n;
    const Node* body_ptr = &body;
    const bool takes_varargs = references(body, "varargs");
    const bool takes_kwargs = references(body, "kwargs");
    std::weak_ptr<Frame> weak_closure = closure;  // the scope holds the macro: a strong pointer would be a cycle
    return bound(name, [=](Interpreter& in, CallArgs& a) {
      DepthGuard guard(in);
      FramePtr defining_scope = weak_closure.lock();
      FramePtr scope = child(defining_scope ? defining_scope : in.root);
      const std::vector<std::string>& params = def->names;
      if (a.positional.size() > params.size() && !takes_varargs)
        raise("TypeError", fmt::format("macro '{}' takes not more than {} argument(s)", name, params.size()));
      ValueList extra;
      for (size_t k = 0; k < a.positional.size(); ++k) {
        if (k < params.size()) {
          scope->vars[params[k]] = a.positional[k];
        } else {
          extra.push_back(a.positional[k]);
        }
      }
      Value kwargs = Value::dict();
      for (auto& [key, value] : a.keyword) {
        const auto it = std::find(params.begin(), params.end(), key);
        if (it != params.end()) {
          if (static_cast<size_t>(it - params.begin()) < a.positional.size())
            raise("TypeError", fmt::format("macro '{}' got multiple values for argument '{}'", name, key));
          scope->vars[key] = value;
        } else if (key == "caller") {
          scope->vars["caller"] = value;
        } else if (takes_kwargs) {
          kwargs.set(Value(key), value);
        } else {
          raise("TypeError", fmt::format("macro '{}' takes no keyword argument '{}'", name, key));
        }
      }
      for (size_t k = 0; k < params.size(); ++k) {
        if (scope->vars.count(params[k])) continue;
        const Node* dflt = def->kids[first_default + k].get();
        scope->vars[params[k]] = dflt ? in.eval(*dflt, scope) : Value::undefined(fmt::format("parameter '{}' was not provided", params[k]));
      }
      scope->vars["varargs"] = Value::tuple(std::move(extra));
      scope->vars["kwargs"] = kwargs;
      return Value(in.render_body(*body_ptr, scope));
    });
  }

  // ---- filters, tests and globals (below)
  Value run_filter(const std::string& name, const Value& v, CallArgs& a);
  bool run_test(const std::string& name, const Value& v, CallArgs& a);
  Value attribute_path(const Value& item, const Value& path);
  std::vector<Value> sorted(ValueList items, bool case_sensitive, const Value& attribute, bool reverse);
  void install_globals();
};

namespace {

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* const kFilters[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
    "float", "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map",
    "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort",
    "string", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "wordcount", "pprint", "slice",
    "striptags", "groupby"};
const char* const kTests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "filter",
    "float", "ge", ">=", "gt", ">", "greaterthan", "in", "integer", "iterable", "le", "<=", "lower", "lt", "<",
    "lessthan", "mapping", "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string", "test", "true",
    "undefined", "upper"};

template <size_t N>
bool listed(const char* const (&names)[N], std::string_view name) {
  return std::find_if(std::begin(names), std::end(names), [&](const char* n) { return name == n; }) != std::end(names);
}

}  // namespace

bool has_filter(std::string_view name) { return listed(kFilters, name); }
bool has_test(std::string_view name) { return listed(kTests, name); }

// `item.a.b` / `item.0` as jinja2's attribute= arguments read it (getitem on each dotted part).
Value Interpreter::attribute_path(const Value& item, const Value& path) {
  if (path.kind() == Value::Kind::Int) return get_item(item, path);
  Value v = item;
  const std::string text = path.str();
  size_t start = 0;
  while (true) {
    const size_t dot = text.find('.', start);
    const std::string part = text.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    if (v.is_undefined()) return v;
    v = get_item(v, numeric ? Value(static_cast<int64_t>(std::stoll(part))) : Value(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

std::vector<Value> Interpreter::sorted(ValueList items, bool case_sensitive, const Value& attribute, bool reverse) {
  auto key = [&](const Value& item) {
    Value k = attribute.is_undefined() || attribute.is_none() ? item : attribute_path(item, attribute);
    if (!case_sensitive && k.is_string()) return Value(ascii_lower(k.as_string()));
    return k;
  };
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) keyed.emplace_back(key(item), std::move(item));
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? compare_order("<", y.first, x.first) < 0 : compare_order("<", x.first, y.first) < 0;
  });
  ValueList out;
  for (auto& [k, item] : keyed) out.push_back(std::move(item));
  return out;
}

Value Interpreter::run_filter(const std::string& name, const Value& v, CallArgs& a) {
  auto need = [&](size_t i, const char* pname) {
    Value x = arg(a, i, pname);
    if (x.is_undefined() && i >= a.positional.size()) raise("TypeError", fmt::format("{}() missing required argument '{}'", name, pname));
    return x;
  };
  auto text = [&] { return v.str(); };
  if (name == "safe" || name == "string") return Value(text());
  if (name == "e" || name == "escape" || name == "forceescape") return Value(html_escape(text()));
  if (name == "lower") return Value(ascii_lower(text()));
  if (name == "upper") return Value(ascii_upper(text()));
  if (name == "title") return Value(ascii_title(text()));
  if (name == "capitalize") {
    const std::string s = text();
    return Value(s.empty() ? s : ascii_upper(s.substr(0, 1)) + ascii_lower(s.substr(1)));
  }
  if (name == "trim") return Value(python_strip_chars(text(), arg(a, 0, "chars"), true, true));
  if (name == "striptags") {
    std::string out;
    bool in_tag = false;
    for (char c : text()) {
      if (c == '<') in_tag = true;
      else if (c == '>') in_tag = false;
      else if (!in_tag) out += c;
    }
    CallArgs none;
    CallArgs words{{call_string_method(out, "split", none)}, {}};
    return Value(call_string_method(" ", "join", words));
  }
  if (name == "replace") {
    const Value count = arg(a, 2, "count", Value::none());
    return checked_string(replace_all(text(), need(0, "old").str(), need(1, "new").str(), count.is_none() ? -1 : checked_int(count, "count")));
  }
  if (name == "length" || name == "count") {
    switch (v.kind()) {
      case Value::Kind::Undefined: return Value(0);
      case Value::Kind::String: return Value(static_cast<int64_t>(code_points(v.as_string())));
      case Value::Kind::List:
      case Value::Kind::Tuple: return Value(static_cast<int64_t>(v.items().size()));
      case Value::Kind::Dict:
      case Value::Kind::Namespace: return Value(static_cast<int64_t>(v.entries().size()));
      default: raise("TypeError", fmt::format("object of type '{}' has no len()", v.type_name()));
    }
  }
  if (name == "default" || name == "d") {
    const bool boolean = arg(a, 1, "boolean", Value(false)).truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return arg(a, 0, "default_value", Value(""));
    return v;
  }
  if (name == "tojson") {
    JsonStyle style;
    style.ensure_ascii = arg(a, 0, "ensure_ascii", Value(false)).truthy();
    const Value indent = arg(a, 1, "indent", Value::none());
    if (indent.is_string()) {
      style.indent = indent.as_string();
    } else if (!indent.is_none() && !indent.is_undefined()) {
      style.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(checked_int(indent, "indent"), 0, 64)), ' ');
    }
    if (style.indent) style.item_separator = ",";
    const Value separators = arg(a, 2, "separators", Value::none());
    if (separators.is_sequence()) {
      if (separators.items().size() != 2) raise("ValueError", "separators must be an (item_separator, key_separator) pair");
      style.item_separator = separators.items()[0].str();
      style.key_separator = separators.items()[1].str();
    }
    style.sort_keys = arg(a, 3, "sort_keys", Value(false)).truthy();
    if (v.is_undefined()) raise("TypeError", "Object of type Undefined is not JSON serializable");
    return checked_string(python_json_dumps(v, style));
  }
  if (name == "join") {
    const Value separator = arg(a, 0, "d", Value(""));
    const Value attribute = arg(a, 1, "attribute", Value::none());
    std::string out;
    bool first = true;
    for (const Value& item : iterate(v)) {
      if (!first) out += separator.str();
      first = false;
      out += (attribute.is_none() ? item : attribute_path(item, attribute)).str();
      checked(out);
    }
    return Value(out);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::list();
    if (!v.is_mapping()) raise("TypeError", "Can only get item pairs from a mapping.");
    ValueList out;
    for (const auto& [k, item] : v.entries()) out.push_back(Value::tuple({k, item}));
    return Value::list(std::move(out));
  }
  if (name == "list") return Value::list(iterate(v));
  if (name == "first" || name == "last") {
    ValueList items = iterate(v);
    if (items.empty()) return Value::undefined(fmt::format("No {} item, sequence was empty.", name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string s = to_u32(v.as_string());
      std::reverse(s.begin(), s.end());
      return Value(to_utf8(s));
    }
    ValueList items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
  }
  if (name == "sort") {
    return Value::list(sorted(iterate(v), arg(a, 1, "case_sensitive", Value(false)).truthy(), arg(a, 2, "attribute"),
                              arg(a, 0, "reverse", Value(false)).truthy()));
  }
  if (name == "dictsort") {
    if (!v.is_mapping()) raise("TypeError", "dictsort: can only sort a mapping");
    const bool by_value = arg(a, 1, "by", Value("key")).str() == "value";
    ValueList pairs;
    for (const auto& [k, item] : v.entries()) pairs.push_back(Value::tuple({k, item}));
    return Value::list(sorted(std::move(pairs), arg(a, 0, "case_sensitive", Value(false)).truthy(), Value(by_value ? 1 : 0),
                              arg(a, 2, "reverse", Value(false)).truthy()));
  }
  if (name == "unique") {
    const bool case_sensitive = arg(a, 0, "case_sensitive", Value(false)).truthy();
    const Value attribute = arg(a, 1, "attribute", Value::none());
    ValueList out, seen;
    for (const Value& item : iterate(v)) {
      Value k = attribute.is_none() ? item : attribute_path(item, attribute);
      if (!case_sensitive && k.is_string()) k = Value(ascii_lower(k.as_string()));
      if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return python_equal(s, k); })) continue;
      seen.push_back(k);
      out.push_back(item);
    }
    return Value::list(std::move(out));
  }
  if (name == "min" || name == "max") {
    ValueList items = sorted(iterate(v), arg(a, 0, "case_sensitive", Value(false)).truthy(), arg(a, 1, "attribute"), false);
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    return name == "min" ? items.front() : items.back();
  }
  if (name == "sum") {
    const Value attribute = arg(a, 0, "attribute", Value::none());
    Value total = arg(a, 1, "start", Value(0));
    for (const Value& item : iterate(v)) total = arithmetic("+", total, attribute.is_none() ? item : attribute_path(item, attribute));
    return total;
  }
  if (name == "abs") {
    require_defined(v);
    if (!v.is_number()) raise("TypeError", fmt::format("bad operand type for abs(): '{}'", v.type_name()));
    if (v.kind() == Value::Kind::Float) return Value(std::fabs(v.as_double()));
    return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  if (name == "int") {
    const Value fallback = arg(a, 0, "default", Value(0));
    if (v.kind() == Value::Kind::Int || v.kind() == Value::Kind::Bool) return Value(v.as_int());
    if (v.kind() == Value::Kind::Float) return std::isfinite(v.as_double()) ? Value(static_cast<int64_t>(v.as_double())) : fallback;
    if (v.is_string()) {
      const std::string s = python_strip_chars(v.as_string(), Value(), true, true);
      const int base = static_cast<int>(checked_int(arg(a, 1, "base", Value(10)), "base"));
      char* end = nullptr;
      errno = 0;
      const long long parsed = std::strtoll(s.c_str(), &end, base);
      if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value(static_cast<int64_t>(parsed));
      const double f = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(f)) return Value(static_cast<int64_t>(f));
    }
    return fallback;
  }
  if (name == "float") {
    const Value fallback = arg(a, 0, "default", Value(0.0));
    if (v.is_number()) return Value(v.as_double());
    if (v.is_string()) {
      const std::string s = python_strip_chars(v.as_string(), Value(), true, true);
      char* end = nullptr;
      const double f = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) return Value(f);
    }
    return fallback;
  }
  if (name == "round") {
    require_defined(v);
    if (!v.is_number()) raise("TypeError", fmt::format("type {} doesn't define __round__ method", v.type_name()));
    const int64_t precision = std::clamp<int64_t>(checked_int(arg(a, 0, "precision", Value(0)), "precision"), -300, 300);
    const std::string method = arg(a, 1, "method", Value("common")).str();
    const double x = v.as_double(), scale = std::pow(10.0, static_cast<double>(precision));
    if (method == "floor") return Value(std::floor(x * scale) / scale);
    if (method == "ceil") return Value(std::ceil(x * scale) / scale);
    if (method != "common") raise("FilterArgumentError", "method must be common, ceil or floor");
    if (precision >= 0) return Value(std::strtod(fmt::format("{:.{}f}", x, precision).c_str(), nullptr));
    return Value(std::nearbyint(x * scale) / scale);
  }
  if (name == "center") {
    CallArgs width{{arg(a, 0, "width", Value(80))}, {}};
    return call_string_method(text(), "center", width);
  }
  if (name == "indent") {
    const Value width = arg(a, 0, "width", Value(4));
    const std::string indention = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(std::clamp<int64_t>(checked_int(width, "width"), 0, 1024)), ' ');
    const bool first = arg(a, 1, "first", Value(false)).truthy();
    const bool blank = arg(a, 2, "blank", Value(false)).truthy();
    std::vector<std::string> lines = split_lines(text() + "\n");
    std::string out;
    for (size_t k = 0; k < lines.size(); ++k) {
      if (k > 0) out += '\n';
      if (k > 0 && (blank || !lines[k].empty())) out += indention;
      out += lines[k];
      checked(out);
    }
    if (first) out = indention + out;
    return Value(out);
  }
  if (name == "truncate") {
    const std::u32string s = to_u32(text());
    const int64_t length = checked_int(arg(a, 0, "length", Value(255)), "length");
    const bool killwords = arg(a, 1, "killwords", Value(false)).truthy();
    const std::string end = arg(a, 2, "end", Value("...")).str();
    const Value leeway_v = arg(a, 3, "leeway", Value::none());
    const int64_t leeway = leeway_v.is_none() ? 5 : checked_int(leeway_v, "leeway");
    const int64_t end_len = static_cast<int64_t>(code_points(end));
    if (length < end_len) raise("AssertionError", fmt::format("expected length >= {}, got {}", end_len, length));
    if (leeway < 0) raise("AssertionError", fmt::format("expected leeway >= 0, got {}", leeway));
    if (static_cast<int64_t>(s.size()) <= length + leeway) return Value(to_utf8(s));
    std::u32string cut = s.substr(0, static_cast<size_t>(length - end_len));
    if (!killwords) {
      const size_t space = cut.rfind(U' ');
      if (space != std::u32string::npos) cut.resize(space);
    }
    return Value(to_utf8(cut) + end);
  }
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    for (char32_t cp : to_u32(text())) {
      const bool word = unicode::is_letter(cp) || unicode::is_number(cp) || cp == '_' || unicode::is_mark(cp);
      if (word && !in_word) ++words;
      in_word = word;
    }
    return Value(words);
  }
  if (name == "format") {
    if (!a.keyword.empty() && !a.positional.empty()) raise("FilterArgumentError", "can't handle positional and keyword arguments at the same time");
    if (!a.keyword.empty()) {
      Value mapping = Value::dict();
      for (auto& [k, item] : a.keyword) mapping.set(Value(k), item);
      return checked_string(percent_format(text(), mapping));
    }
    return checked_string(percent_format(text(), Value::tuple(a.positional)));
  }
  if (name == "pprint") return Value(v.repr());
  if (name == "attr") {
    const Value attr = need(0, "name");
    return get_attribute(v, attr.str());
  }
  if (name == "batch" || name == "slice") {
    const int64_t n = checked_int(need(0, name == "batch" ? "linecount" : "slices"), "count");
    if (n <= 0) raise("ValueError", "the batch / slice size must be positive");
    const Value fill = arg(a, 1, "fill_with", Value::none());
    ValueList items = iterate(v), out;
    if (name == "batch") {
      for (size_t k = 0; k < items.size(); k += n) {
        ValueList row(items.begin() + k, items.begin() + std::min<size_t>(items.size(), k + n));
        if (!fill.is_none()) while (static_cast<int64_t>(row.size()) < n) row.push_back(fill);
        out.push_back(Value::list(std::move(row)));
      }
    } else {
      const size_t per = items.size() / n, extra = items.size() % n;
      size_t offset = 0;
      for (int64_t k = 0; k < n; ++k) {
        const size_t size = per + (static_cast<size_t>(k) < extra);
        ValueList row(items.begin() + offset, items.begin() + offset + size);
        offset += size;
        if (!fill.is_none() && static_cast<size_t>(k) >= extra && extra) row.push_back(fill);
        out.push_back(Value::list(std::move(row)));
      }
    }
    return Value::list(std::move(out));
  }
  if (name == "groupby") {
    const Value attribute = need(0, "attribute");
    ValueList items = sorted(iterate(v), arg(a, 2, "case_sensitive", Value(false)).truthy(), attribute, false);
    ValueList groups;
    for (const Value& item : items) {
      const Value key = attribute_path(item, attribute);
      if (groups.empty() || !python_equal(groups.back().items()[0], key))
        groups.push_back(Value::tuple({key, Value::list()}));
      groups.back().items()[1].items().push_back(item);
    }
    return Value::list(std::move(groups));
  }
  if (name == "map") {
    ValueList out;
    const Value attribute = arg(a, SIZE_MAX, "attribute");
    if (!attribute.is_undefined()) {
      const Value fallback = arg(a, SIZE_MAX, "default");
      for (const Value& item : iterate(v)) {
        Value x = attribute_path(item, attribute);
        out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
      }
      return Value::list(std::move(out));
    }
    if (a.positional.empty()) raise("FilterArgumentError", "map requires a filter name or attribute=");
    const std::string filter = a.positional[0].str();
    if (!has_filter(filter)) raise("TemplateRuntimeError", fmt::format("No filter named '{}'.", filter));
    CallArgs rest{ValueList(a.positional.begin() + 1, a.positional.end()), a.keyword};
    for (const Value& item : iterate(v)) out.push_back(run_filter(filter, item, rest));
    return Value::list(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attribute = name.size() > 6;
    const bool keep_when = name[0] == 's';
    const size_t test_at = by_attribute ? 1 : 0;
    const Value attribute = by_attribute ? need(0, "attr") : Value();
    std::string test;
    if (a.positional.size() > test_at) {
      test = a.positional[test_at].str();
      if (!has_test(test)) raise("TemplateRuntimeError", fmt::format("No test named '{}'.", test));
    }
    CallArgs test_args{ValueList(a.positional.begin() + std::min(a.positional.size(), test_at + 1), a.positional.end()), {}};
    ValueList out;
    for (const Value& item : iterate(v)) {
      const Value x = by_attribute ? attribute_path(item, attribute) : item;
      const bool passed = test.empty() ? x.truthy() : run_test(test, x, test_args);
      if (passed == keep_when) out.push_back(item);
    }
    return Value::list(std::move(out));
  }
  raise("TemplateRuntimeError", fmt::format("No filter named '{}'.", name));
}

bool Interpreter::run_test(const std::string& name, const Value& v, CallArgs& a) {
  const Value other = arg(a, 0, "value");
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind() == K::Bool;
  if (name == "false") return v.kind() == K::Bool && !v.as_bool();
  if (name == "true") return v.kind() == K::Bool && v.as_bool();
  if (name == "integer") return v.kind() == K::Int;
  if (name == "float") return v.kind() == K::Float;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_mapping();
  if (name == "sequence") return v.is_string() || v.is_sequence() || v.is_mapping() || v.is_undefined();
  if (name == "iterable") return v.is_string() || v.is_sequence() || v.is_mapping() || v.is_undefined();
  if (name == "callable") return v.kind() == K::Function || (v.is_mapping() && v.find("__call__"));
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    CallArgs none;
    return call_string_method(v.str(), name == "lower" ? "islower" : "isupper", none).truthy();
  }
  if (name == "eq" || name == "equalto" || name == "==") return python_equal(v, other);
  if (name == "ne" || name == "!=") return !python_equal(v, other);
  if (name == "lt" || name == "lessthan" || name == "<") return compare("<", v, other);
  if (name == "le" || name == "<=") return compare("<=", v, other);
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(">", v, other);
  if (name == "ge" || name == ">=") return compare(">=", v, other);
  if (name == "in") return contains(other, v);
  if (name == "sameas") return v.same_object(other);
  if (name == "even" || name == "odd" || name == "divisibleby") {
    const int64_t divisor = name == "divisibleby" ? checked_int(other, "divisor") : 2;
    if (divisor == 0) raise("ZeroDivisionError", "integer division or modulo by zero");
    const Value rest = arithmetic("%", v, Value(divisor));
    const bool zero = rest.as_double() == 0;
    return name == "odd" ? !zero : zero;
  }
  if (name == "filter") return has_filter(v.str());
  if (name == "test") return has_test(v.str());
  raise("TemplateRuntimeError", fmt::format("No test named '{}'.", name));
}

void Interpreter::install_globals() {
  globals = std::make_shared<Frame>();
  auto& g = globals->vars;
  g["raise_exception"] = bound("raise_exception", [](Interpreter&, CallArgs& a) -> Value {
    raise("TemplateError", arg(a, 0, "message", Value("")).str());
  });
  g["strftime_now"] = bound("strftime_now", [](Interpreter& in, CallArgs& a) {
    const std::string format = arg(a, 0, "format", Value("")).str();
    if (format.size() > 256) raise("ValueError", "strftime_now: the format is longer than 256 characters");
    std::tm now{};
    if (in.options.now) {
      now = *in.options.now;
    } else {
      const std::time_t t = std::time(nullptr);
      localtime_r(&t, &now);
    }
    char buf[4096];
    const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &now);
    return Value(std::string(buf, n));
  });
  g["range"] = bound("range", [](Interpreter& in, CallArgs& a) {
    int64_t start = 0, stop, step = 1;
    if (a.positional.size() == 1) {
      stop = checked_int(a.positional[0], "range() argument");
    } else if (a.positional.size() == 2 || a.positional.size() == 3) {
      start = checked_int(a.positional[0], "range() argument");
      stop = checked_int(a.positional[1], "range() argument");
      if (a.positional.size() == 3) step = checked_int(a.positional[2], "range() argument");
    } else {
      raise("TypeError", fmt::format("range expected at most 3 arguments, got {}", a.positional.size()));
    }
    if (step == 0) raise("ValueError", "range() arg 3 must not be zero");
    const long double count = step > 0 ? std::ceil(static_cast<long double>(stop - static_cast<long double>(start)) / step)
                                       : std::ceil(static_cast<long double>(start - static_cast<long double>(stop)) / -step);
    // jinja2's sandbox refuses ranges over MAX_RANGE items.
    if (count > 100000) raise("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    if (count > 0) in.count_iterations(static_cast<int64_t>(count));
    ValueList out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
    return Value::list(std::move(out));
  });
  g["dict"] = bound("dict", [](Interpreter& in, CallArgs& a) {
    Value d = Value::dict();
    if (!a.positional.empty()) {
      const Value& source = a.positional[0];
      if (source.is_mapping()) {
        for (const auto& [k, v] : source.entries()) d.set(k, v);
      } else {
        for (const Value& pair : in.iterate(source)) {
          ValueList kv = in.iterate(pair);
          if (kv.size() != 2) raise("ValueError", "dictionary update sequence element has the wrong length; 2 is required");
          d.set(kv[0], kv[1]);
        }
      }
    }
    for (auto& [k, v] : a.keyword) d.set(Value(k), v);
    return d;
  });
  g["namespace"] = bound("namespace", [](Interpreter& in, CallArgs& a) {
    Value ns = Value::dict({}, Value::Kind::Namespace);
    in.namespaces.push_back(ns);
    if (!a.positional.empty() && a.positional[0].is_mapping())
      for (const auto& [k, v] : a.positional[0].entries()) ns.set(k, v);
    for (auto& [k, v] : a.keyword) ns.set(Value(k), v);
    return ns;
  });
  g["joiner"] = bound("joiner", [](Interpreter&, CallArgs& a) {
    const std::string separator = arg(a, 0, "sep", Value(", ")).str();
    auto used = std::make_shared<bool>(false);
    return bound("joiner", [separator, used](Interpreter&, CallArgs&) {
      if (!*used) {
        *used = true;
        return Value("");
      }
      return Value(separator);
    });
  });
}

Template::Template(std::string_view source) : root_(std::make_unique<TemplateNode>()) {
  root_->body = parse_template(source);
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Value& variables, const RenderOptions& options) const {
  Interpreter in(options);
  in.install_globals();
  in.root = Interpreter::child(in.globals);
  if (variables.is_mapping())
    for (const auto& [k, v] : variables.entries()) in.root->vars[k.str()] = v;
  struct BreakCycles {
    Interpreter& in;
    ~BreakCycles() {
      for (Value& ns : in.namespaces) ns.entries().clear();
      for (auto& cell : in.changed_cells) cell->reset();
    }
  } break_cycles{in};
  std::string out;
  in.exec_body(*root_->body, in.root, out);
  return out;
}

}  // namespace guardkit::text::jinja
