// The Jinja syntax tree shared by the parser (jinja_parser.cpp) and the evaluator (jinja_render.cpp). One node type;
// what `kids` and `names` hold depends on the kind, as listed next to each kind.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "text/jinja.h"

namespace guardkit::text::jinja {

enum class NodeKind {
  // expressions
  Literal,    // value
  Name,       // name
  GetAttr,    // kids[0] . name
  GetItem,    // kids[0] [ kids[1] ]
  Slice,      // kids[0]:kids[1]:kids[2], each may be null
  Call,       // kids[0](kids[1 .. 1+positional), keyword kids named by `names`), star_args, star_kwargs
  Filter,     // kids[0] | name(args as Call); kids[0] is null inside {% filter %} / {% set x | f %}
  Test,       // kids[0] is [not] name(args as Call); negated
  Unary,      // name ("-", "+", "not") kids[0]
  Binary,     // kids[0] name kids[1]: + - * / // % ** ~ and or
  Compare,    // kids[0] names[i] kids[i+1] ...: == != < <= > >= in notin (chained as Python)
  CondExpr,   // kids[1] if kids[0] else kids[2] (kids[2] may be null: undefined)
  ListLit,    // [kids...]
  TupleLit,   // (kids...)
  DictLit,    // {kids[0]: kids[1], kids[2]: kids[3], ...}
  // statements
  Body,         // kids: statements
  Text,         // value: literal template text
  Print,        // {{ kids[0] }}
  If,           // kids: cond, body, cond, body, ..., [null, else-body]
  For,          // for kids[0] in kids[1] [if kids[2]] : kids[3] [else kids[4]]; recursive
  Set,          // set kids[0] = kids[1]  (target: Name, TupleLit of Names, or GetAttr of a Name)
  SetBlock,     // set kids[0] [| kids[2]] : body kids[1]
  Macro,        // macro name(names...) body kids[0], defaults kids[1+i] (null: none)
  CallBlock,    // call(names...) kids[0] (a Call) : body kids[1], defaults kids[2+i]
  FilterBlock,  // filter kids[0] (Filter chain, innermost operand null) : body kids[1]
  With,         // with names[i] = kids[i] ... : body kids.back()
  Break,
  Continue,
  Scoped,       // {% block %} / {% generation %}: renders body kids[0]
};

struct Node {
  NodeKind kind;
  int line = 0;
  std::string name;
  Value value;
  std::vector<std::unique_ptr<Node>> kids;
  std::vector<std::string> names;
  size_t positional = 0;  // Call / Filter / Test: how many of the argument kids are positional
  std::unique_ptr<Node> star_args, star_kwargs;
  bool negated = false;    // Test
  bool recursive = false;  // For
  Node(NodeKind k, int l) : kind(k), line(l) {}
};
using NodePtr = std::unique_ptr<Node>;

struct TemplateNode {
  NodePtr body;
};

NodePtr parse_template(std::string_view source);

// The filters and tests the evaluator implements (jinja2 rejects unknown names when it compiles a template).
bool has_filter(std::string_view name);
bool has_test(std::string_view name);

}  // namespace guardkit::text::jinja
