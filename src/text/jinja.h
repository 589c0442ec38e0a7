// A Jinja2 template engine of our own, for the chat templates that Hugging Face checkpoints ship in
// tokenizer_config.json. Hand-written because no Debian package offers a C++ Jinja engine, and because the result has
// to equal transformers' apply_chat_template byte for byte: jinja2's ImmutableSandboxedEnvironment with trim_blocks,
// lstrip_blocks, loopcontrols and the {% generation %} tag, Python's str()/repr() of values, json.dumps for tojson.
//
// Pipeline: lexer (jinja_parser.cpp: text and tag tokens, whitespace control) → parser (AST in jinja_ast.h) →
// evaluator (jinja_render.cpp: scopes, statements, filters, tests, Python methods) over Value (jinja_value.cpp).
//
// Templates are untrusted input: nesting depth, loop iterations and output size are bounded (RenderLimits), nothing
// reads files or the environment, and every failure is a jinja::Error with Jinja's error type and message, never a
// crash. A template's raise_exception("...") surfaces as type "TemplateError" with exactly that message.
#pragma once
#include <ctime>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace guardkit::text::jinja {

// type(): Jinja's / Python's exception class name ("TemplateError", "UndefinedError", "TypeError",
// "TemplateSyntaxError", "TemplateAssertionError", "SecurityError", "TemplateRuntimeError", "ValueError", ...) or
// "TemplateLimitError" when a RenderLimits bound was hit. what() is the bare message (as Python's str(exception)).
class Error : public guardkit::Error {
 public:
  Error(std::string type, const std::string& message) : guardkit::Error(message), type_(std::move(type)) {}
  const std::string& type() const { return type_; }

 private:
  std::string type_;
};

[[noreturn]] void raise(std::string type, const std::string& message);

class Value;
struct Interpreter;
using ValueList = std::vector<Value>;
// Python dict: insertion-ordered; keys are scalar Values (strings in practice).
using ValueDict = std::vector<std::pair<Value, Value>>;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using NativeFunction = std::function<Value(Interpreter&, CallArgs&)>;
struct Function {
  std::string name;
  NativeFunction call;
};

class Value {
 public:
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Tuple, Dict, Namespace, Function };

  Value() = default;  // Undefined
  static Value undefined(std::string message) {
    Value v;
    v.text_ = std::make_shared<std::string>(std::move(message));
    return v;
  }
  static Value none() { return Value(Kind::None); }
  Value(bool b) : kind_(Kind::Bool), int_(b) {}
  Value(int i) : kind_(Kind::Int), int_(i) {}
  Value(int64_t i) : kind_(Kind::Int), int_(i) {}
  Value(double f) : kind_(Kind::Float), float_(f) {}
  Value(std::string s) : kind_(Kind::String), text_(std::make_shared<std::string>(std::move(s))) {}
  Value(std::string_view s) : Value(std::string(s)) {}
  Value(const char* s) : Value(std::string(s)) {}
  static Value list(ValueList items = {}, Kind kind = Kind::List);
  static Value tuple(ValueList items) { return list(std::move(items), Kind::Tuple); }
  static Value dict(ValueDict items = {}, Kind kind = Kind::Dict);
  static Value function(std::string name, NativeFunction call);
  static Value from_json(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }
  bool is_mapping() const { return kind_ == Kind::Dict; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }           // Bool and Int
  double as_double() const { return kind_ == Kind::Float ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return *text_; }  // String
  const std::string& undefined_message() const;             // Undefined
  ValueList& items() const { return *list_; }               // List, Tuple
  ValueDict& entries() const { return *dict_; }             // Dict, Namespace
  const Function& as_function() const { return *function_; }

  // Dict / Namespace lookup by key; nullptr when absent.
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  const Value* find(const std::string& key) const { return find(std::string_view(key)); }
  const Value* find(const char* key) const { return find(std::string_view(key)); }
  void set(const Value& key, Value value) const;  // Dict / Namespace: insert or replace

  bool truthy() const;
  std::string str() const;   // Python str(): what {{ value }} prints
  std::string repr() const;  // Python repr()
  std::string type_name() const;  // Python's type name: 'str', 'int', 'NoneType', 'list', 'dict', ...
  bool same_object(const Value& other) const;  // Python `is`

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  Kind kind_ = Kind::Undefined;
  int64_t int_ = 0;
  double float_ = 0;
  std::shared_ptr<std::string> text_;  // String contents, or the Undefined's message
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<ValueDict> dict_;
  std::shared_ptr<Function> function_;
};

bool python_equal(const Value& a, const Value& b);
// Python's json.dumps(value, ensure_ascii=False, indent=, separators=, sort_keys=): what transformers' tojson does.
struct JsonStyle {
  std::optional<std::string> indent;  // nullopt: one line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string python_json_dumps(const Value& value, const JsonStyle& style = {});

struct RenderLimits {
  int max_depth = 200;                      // nested statements, expressions and macro calls
  int64_t max_loop_iterations = 1'000'000;  // all loop iterations of one render together (range() included)
  size_t max_output_bytes = 32u << 20;      // the rendered text, and any one string built while rendering
};

struct RenderOptions {
  RenderLimits limits;
  // The local time strftime_now() formats; nullopt: the real clock.
  std::optional<std::tm> now;
};

struct TemplateNode;

class Template {
 public:
  // Parses the template; syntax errors throw Error("TemplateSyntaxError" / "TemplateAssertionError").
  explicit Template(std::string_view source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `variables` (a Dict) as the context, on top of the globals (range, dict, namespace, cycler,
  // joiner, raise_exception, strftime_now).
  std::string render(const Value& variables, const RenderOptions& options = {}) const;

 private:
  std::unique_ptr<TemplateNode> root_;
};

}  // namespace guardkit::text::jinja
