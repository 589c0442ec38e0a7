// Jinja values with Python's semantics where templates can see them: str() and repr() (what {{ x }} prints for
// numbers, lists and dicts), ==, truthiness, and json.dumps for transformers' tojson.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "text/jinja.h"
#include "text/unicode.h"

namespace guardkit::text::jinja {

namespace {
// Values can only nest this deep through a namespace that holds itself; printing one must not overflow the stack.
constexpr int kMaxNesting = 256;

void check_nesting(int depth) {
  if (depth > kMaxNesting) raise("TemplateLimitError", "a value nests too deeply to print or compare (a namespace holding itself?)");
}
}  // namespace

[[noreturn]] void raise(std::string type, const std::string& message) { throw Error(std::move(type), message); }

Value Value::list(ValueList items, Kind kind) {
  Value v(kind);
  v.list_ = std::make_shared<ValueList>(std::move(items));
  return v;
}

Value Value::dict(ValueDict items, Kind kind) {
  Value v(kind);
  v.dict_ = std::make_shared<ValueDict>(std::move(items));
  return v;
}

Value Value::function(std::string name, NativeFunction call) {
  Value v(Kind::Function);
  v.function_ = std::make_shared<Function>(Function{std::move(name), std::move(call)});
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict entries;
      entries.reserve(json.size());
      for (const auto& [key, item] : json.items()) entries.emplace_back(Value(key), from_json(item));
      return dict(std::move(entries));
    }
    default: raise("TypeError", "binary JSON values cannot be template variables");
  }
}

const std::string& Value::undefined_message() const {
  static const std::string kEmpty;
  return text_ ? *text_ : kEmpty;
}

const Value* Value::find(const Value& key) const {
  for (const auto& [k, v] : *dict_)
    if (python_equal(k, key)) return &v;
  return nullptr;
}

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : *dict_)
    if (k.kind_ == Kind::String && *k.text_ == key) return &v;
  return nullptr;
}

void Value::set(const Value& key, Value value) const {
  for (auto& [k, v] : *dict_)
    if (python_equal(k, key)) {
      v = std::move(value);
      return;
    }
  dict_->emplace_back(key, std::move(value));
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool:
    case Kind::Int: return int_ != 0;
    case Kind::Float: return float_ != 0;
    case Kind::String: return !text_->empty();
    case Kind::List:
    case Kind::Tuple: return !list_->empty();
    case Kind::Dict: return !dict_->empty();
    default: return true;
  }
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Function: return "function";
  }
  return "object";
}

bool Value::same_object(const Value& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::Bool: return int_ == other.int_;
    case Kind::List:
    case Kind::Tuple: return list_ == other.list_;
    case Kind::Dict:
    case Kind::Namespace: return dict_ == other.dict_;
    case Kind::Function: return function_ == other.function_;
    default: return python_equal(*this, other);  // small ints and interned strings in CPython
  }
}

namespace {

// Python's float repr: the shortest digits that round-trip, fixed notation for exponents -4..15, else 1e+20 style.
std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
  std::string sci(buf, end);  // -d.ddde+XX
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(sci.substr(e + 1));
  if (exponent >= -4 && exponent < 16) {
    std::string out;
    if (exponent < 0) {
      out = "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return sign + out;
  }
  std::string mantissa = digits.substr(0, 1);
  if (digits.size() > 1) mantissa += "." + digits.substr(1);
  return fmt::format("{}{}e{}{:02d}", sign, mantissa, exponent < 0 ? '-' : '+', std::abs(exponent));
}

bool is_printable(char32_t cp) {
  if (cp == ' ') return true;
  const unicode::Category c = unicode::category(cp);
  return !(c == unicode::Cc || c == unicode::Cf || c == unicode::Cs || c == unicode::Co || c == unicode::Cn ||
           c == unicode::Zl || c == unicode::Zp || c == unicode::Zs);
}

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t cp = unicode::decode_utf8(s, i);
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!is_printable(cp)) {
      out += cp < 0x100 ? fmt::format("\\x{:02x}", static_cast<uint32_t>(cp))
             : cp < 0x10000 ? fmt::format("\\u{:04x}", static_cast<uint32_t>(cp))
                            : fmt::format("\\U{:08x}", static_cast<uint32_t>(cp));
    } else {
      out.append(s, start, i - start);
    }
  }
  out += quote;
  return out;
}

void append_repr(std::string& out, const Value& v, int depth);

void append_str(std::string& out, const Value& v, int depth) {
  check_nesting(depth);
  switch (v.kind()) {
    case Value::Kind::Undefined: return;
    case Value::Kind::None: out += "None"; return;
    case Value::Kind::Bool: out += v.as_bool() ? "True" : "False"; return;
    case Value::Kind::Int: out += std::to_string(v.as_int()); return;
    case Value::Kind::Float: out += float_repr(v.as_double()); return;
    case Value::Kind::String: out += v.as_string(); return;
    case Value::Kind::List:
    case Value::Kind::Tuple: {
      const bool tuple = v.kind() == Value::Kind::Tuple;
      out += tuple ? '(' : '[';
      for (size_t k = 0; k < v.items().size(); ++k) {
        if (k) out += ", ";
        append_repr(out, v.items()[k], depth + 1);
      }
      if (tuple && v.items().size() == 1) out += ',';
      out += tuple ? ')' : ']';
      return;
    }
    case Value::Kind::Dict:
    case Value::Kind::Namespace: {
      if (v.kind() == Value::Kind::Namespace) out += "<Namespace ";
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.entries()) {
        if (!first) out += ", ";
        first = false;
        append_repr(out, key, depth + 1);
        out += ": ";
        append_repr(out, item, depth + 1);
      }
      out += '}';
      if (v.kind() == Value::Kind::Namespace) out += '>';
      return;
    }
    case Value::Kind::Function: out += fmt::format("<Macro '{}'>", v.as_function().name); return;
  }
}

void append_repr(std::string& out, const Value& v, int depth) {
  if (v.is_string()) {
    out += string_repr(v.as_string());
  } else if (v.is_undefined()) {
    out += "Undefined";
  } else {
    append_str(out, v, depth);
  }
}

bool equal(const Value& a, const Value& b, int depth) {
  check_nesting(depth);
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() != K::Float && b.kind() != K::Float) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::Undefined:
    case K::None: return true;
    case K::String: return a.as_string() == b.as_string();
    case K::List:
    case K::Tuple: {
      if (a.items().size() != b.items().size()) return false;
      for (size_t k = 0; k < a.items().size(); ++k)
        if (!equal(a.items()[k], b.items()[k], depth + 1)) return false;
      return true;
    }
    case K::Dict: {
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& [key, item] : a.entries()) {
        const Value* other = b.find(key);
        if (!other || !equal(item, *other, depth + 1)) return false;
      }
      return true;
    }
    default: return a.same_object(b);
  }
}

void append_json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t cp = unicode::decode_utf8(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
        } else if (ensure_ascii && cp > 0x7e) {
          if (cp >= 0x10000) {
            const uint32_t v = cp - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
          } else {
            out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
          }
        } else {
          out.append(s, start, i - start);
        }
    }
  }
  out += '"';
}

std::string json_key(const Value& key) {
  switch (key.kind()) {
    case Value::Kind::String: return key.as_string();
    case Value::Kind::Bool: return key.as_bool() ? "true" : "false";
    case Value::Kind::None: return "null";
    case Value::Kind::Int:
    case Value::Kind::Float: return key.str();
    default: raise("TypeError", fmt::format("keys must be str, int, float, bool or None, not {}", key.type_name()));
  }
}

void append_json(std::string& out, const Value& v, const JsonStyle& style, int level) {
  check_nesting(level);
  auto newline = [&](int at) {
    if (!style.indent) return;
    out += '\n';
    for (int k = 0; k < at; ++k) out += *style.indent;
  };
  switch (v.kind()) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.as_int()); return;
    case Value::Kind::Float: {
      const double f = v.as_double();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : float_repr(f);
      return;
    }
    case Value::Kind::String: append_json_string(out, v.as_string(), style.ensure_ascii); return;
    case Value::Kind::List:
    case Value::Kind::Tuple: {
      if (v.items().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.items().size(); ++k) {
        if (k) out += style.item_separator;
        newline(level + 1);
        append_json(out, v.items()[k], style, level + 1);
      }
      newline(level);
      out += ']';
      return;
    }
    case Value::Kind::Dict: {
      if (v.entries().empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [key, item] : v.entries()) entries.emplace_back(json_key(key), &item);
      if (style.sort_keys)
        std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t k = 0; k < entries.size(); ++k) {
        if (k) out += style.item_separator;
        newline(level + 1);
        append_json_string(out, entries[k].first, style.ensure_ascii);
        out += style.key_separator;
        append_json(out, *entries[k].second, style, level + 1);
      }
      newline(level);
      out += '}';
      return;
    }
    default:
      raise("TypeError", fmt::format("Object of type {} is not JSON serializable",
                                     v.kind() == Value::Kind::Function ? "Macro" : v.type_name()));
  }
}

}  // namespace

std::string Value::str() const {
  if (kind_ == Kind::String) return *text_;
  std::string out;
  append_str(out, *this, 0);
  return out;
}

std::string Value::repr() const {
  std::string out;
  append_repr(out, *this, 0);
  return out;
}

bool python_equal(const Value& a, const Value& b) { return equal(a, b, 0); }

std::string python_json_dumps(const Value& value, const JsonStyle& style) {
  std::string out;
  append_json(out, value, style, 0);
  return out;
}

}  // namespace guardkit::text::jinja
