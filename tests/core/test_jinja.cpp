// The Jinja engine on the language itself, beyond the fixture templates: statements, scoping, filters, tests,
// methods, literals, whitespace control and errors (expected outputs and error types recorded from jinja2 3.1.6 in
// transformers' environment: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, json.dumps
// tojson), plus the bounds that make untrusted templates safe to render.
#include <gtest/gtest.h>

#include "text/jinja.h"

using namespace guardkit::text;

namespace {

struct Case {
  const char* source;
  const char* variables;   // JSON object
  const char* expected;    // rendered text, or nullptr when an error is expected
  const char* error_type;  // jinja2's exception class name
};

const Case kCases[] = {
    {R"J({% for x in [1,2,3] %}{{ loop.index }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{% endfor %})J",
     R"J({})J",
     R"J(13TrueFalse322FalseFalse331FalseTrue3)J", nullptr},
    {R"J({% for x in [] %}a{% else %}empty{% endfor %})J",
     R"J({})J",
     R"J(empty)J", nullptr},
    {R"J({% for x in range(10) if x is odd %}{{ x }}{{ loop.index }},{% endfor %})J",
     R"J({})J",
     R"J(11,32,53,74,95,)J", nullptr},
    {R"J({% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %})J",
     R"J({})J",
     R"J(a=1;b=2;)J", nullptr},
    {R"J({% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %})J",
     R"J({})J",
     R"J(13)J", nullptr},
    {R"J({% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }})J",
     R"J({})J",
     R"J(Hello a! Hello b? Hello c.)J", nullptr},
    {R"J({% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, x=3) }})J",
     R"J({})J",
     R"J((1, 2){'x': 3})J", nullptr},
    {R"J({% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inner{% endcall %})J",
     R"J({})J",
     R"J(<inner>)J", nullptr},
    {R"J({% macro wrap() %}<{{ caller(5) }}>{% endmacro %}{% call(n) wrap() %}n={{ n }}{% endcall %})J",
     R"J({})J",
     R"J(<n=5>)J", nullptr},
    {R"J({% set ns = namespace(count=0) %}{% for x in range(3) %}{% set ns.count = ns.count + x %}{% endfor %}{{ ns.count }})J",
     R"J({})J",
     R"J(3)J", nullptr},
    {R"J({% set x %}block {{ 1 + 2 }}{% endset %}[{{ x }}])J",
     R"J({})J",
     R"J([block 3])J", nullptr},
    {R"J({% set x | upper %}shout{% endset %}{{ x }})J",
     R"J({})J",
     R"J(SHOUT)J", nullptr},
    {R"J({% filter upper %}hello {{ 'world' }}{% endfilter %})J",
     R"J({})J",
     R"J(HELLO WORLD)J", nullptr},
    {R"J({{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }})J",
     R"J({})J",
     R"J(['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a b', 'c'])J", nullptr},
    {R"J({{ 'Hello World'.lower() }} {{ 'hello world'.title() }} {{ 'hello'.capitalize() }} {{ 'x'.upper() }})J",
     R"J({})J",
     R"J(hello world Hello World Hello X)J", nullptr},
    {R"J({{ '  xx  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x','c')) }})J",
     R"J({})J",
     R"J(xx|hi|a|a|TrueTrue)J", nullptr},
    {R"J({{ [3,1,2]|sort }} {{ [3,1,2]|sort(reverse=true) }} {{ ['b','A','c']|sort }} {{ [1,2,2,3]|unique|list }})J",
     R"J({})J",
     R"J([1, 2, 3] [3, 2, 1] ['A', 'b', 'c'] [1, 2, 3])J", nullptr},
    {R"J({{ [1,2,3]|sum }} {{ [1,2,3]|max }} {{ [1,2,3]|min }} {{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ []|first }})J",
     R"J({})J",
     R"J(6 3 1 1 3 )J", nullptr},
    {R"J({{ [{'a':1},{'a':2}]|map(attribute='a')|list }} {{ ['a','b']|map('upper')|join(',') }})J",
     R"J({})J",
     R"J([1, 2] A,B)J", nullptr},
    {R"J({{ [{'t':'x','v':1},{'t':'y','v':2}]|selectattr('t','equalto','y')|list }} {{ [1,2,3,4]|select('even')|list }} {{ [1,2,3]|reject('odd')|list }})J",
     R"J({})J",
     R"J([{'t': 'y', 'v': 2}] [2, 4] [2])J", nullptr},
    {R"J({{ [{'t':'x'},{'u':1}]|selectattr('t','defined')|list }} {{ [{'t':'x'},{'u':1}]|rejectattr('t')|list }})J",
     R"J({})J",
     R"J([{'t': 'x'}] [{'u': 1}])J", nullptr},
    {R"J({{ {'b':1,'a':2}|dictsort }} {{ {'b':1,'a':2}|items|list }})J",
     R"J({})J",
     R"J([('a', 2), ('b', 1)] [('b', 1), ('a', 2)])J", nullptr},
    {R"J({{ 'abc'|length }} {{ [1,2]|count }} {{ {'a':1}|length }} {{ 'héllo'|length }} {{ 'héllo'[1] }} {{ 'héllo'[::-1] }})J",
     R"J({})J",
     R"J(3 2 1 5 é olléh)J", nullptr},
    {R"J({{ x|default('d') }} {{ ''|default('e', true) }} {{ none|default('n') }} {{ 0|d('z', boolean=true) }})J",
     R"J({})J",
     R"J(d e None z)J", nullptr},
    {R"J({{ 3|float }} {{ '3.5'|float }} {{ 'x'|int }} {{ '42'|int }} {{ 3.7|int }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.4|round(0,'ceil') }})J",
     R"J({})J",
     R"J(3.0 3.5 0 42 3 3 2.57 2.0 4.0 3.0)J", nullptr},
    {R"J({{ 'a\nb\nc'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }})J",
     R"J({})J",
     R"J(a
  b
  c|  a
  b|a
  
  b)J", nullptr},
    {R"J({{ 'hello world foo bar'|truncate(9) }}|{{ 'hello world foo bar'|truncate(9, true) }}|{{ 'hello'|truncate(9) }}|{{ 'one two three four five six'|truncate(15, leeway=0) }})J",
     R"J({})J",
     R"J(hello...|hello ...|hello|one two...)J", nullptr},
    {R"J({{ 'one two  three'|wordcount }} {{ '%s is %d'|format('x', 3) }} {{ '<a href="x">&</a>'|e }} {{ 'ab'|center(6) }}|)J",
     R"J({})J",
     R"J(3 x is 3 &lt;a href=&#34;x&#34;&gt;&amp;&lt;/a&gt;   ab  |)J", nullptr},
    {R"J({{ {'a': [1, 2.5, none, true, 'x"y'], 'b': {}}|tojson }} {{ [1,[2]]|tojson(indent=2) }} {{ {'k': 'ü'}|tojson }} {{ {'k':1}|tojson(separators=(',',':')) }})J",
     R"J({})J",
     R"J({"a": [1, 2.5, null, true, "x\"y"], "b": {}} [
  1,
  [
    2
  ]
] {"k": "ü"} {"k":1})J", nullptr},
    {R"J({{ {'b':1,'a':2}|tojson(sort_keys=true) }} {{ 'a\tb\u0001'|tojson }} {{ 1e20|tojson }} {{ 0.1|tojson }})J",
     R"J({})J",
     R"J({"a": 2, "b": 1} "a\tb\u0001" 1e+20 0.1)J", nullptr},
    {R"J({{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 1 ~ 2 }} {{ 'a' ~ none }})J",
     R"J({})J",
     R"J(7 9 64 3 -4 1 2 3.5 12 aNone)J", nullptr},
    {R"J({{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' in 'abc' }} {{ 2 not in [1,2] }} {{ not true }} {{ true and 'x' }} {{ false or 'y' }} {{ none or 0 }})J",
     R"J({})J",
     R"J(True False True False False x y 0)J", nullptr},
    {R"J({{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }} [{{ 'yes' if 0 }}])J",
     R"J({})J",
     R"J(yes no [])J", nullptr},
    {R"J({{ [1,2,3,4,5][1:3] }} {{ [1,2,3,4,5][::2] }} {{ [1,2,3,4,5][-2:] }} {{ 'abcdef'[1:-1] }} {{ [1,2,3][::-1] }} {{ [1,2,3][-1] }})J",
     R"J({})J",
     R"J([2, 3] [1, 3, 5] [4, 5] bcde [3, 2, 1] 3)J", nullptr},
    {R"J({{ (1, 2) }} {{ (1,) }} {{ [] }} {{ {} }} {{ {'a': 'b'} }} {{ "it's" }} {{ ['it\'s', "q\"q"] }} {{ 1.0 }} {{ 1.5e-7 }} {{ 123456789012345678.0 }})J",
     R"J({})J",
     R"J((1, 2) (1,) [] {} {'a': 'b'} it's ["it's", 'q"q'] 1.0 1.5e-07 1.2345678901234568e+17)J", nullptr},
    {R"J({{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ {} is mapping }} {{ [] is iterable }} {{ [] is sequence }})J",
     R"J({})J",
     R"J(False True True True True True True True True True)J", nullptr},
    {R"J({{ 4 is divisibleby 2 }} {{ 4 is divisibleby(3) }} {{ 3 is odd }} {{ 2 is even }} {{ 1 is sameas 1 }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 'a' is in 'abc' }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'abc' is lower }} {{ 'ABC' is upper }})J",
     R"J({})J",
     R"J(True False True True True True False True True True True True True)J", nullptr},
    {R"J({{ x is not defined }} {{ 1 is not string }})J",
     R"J({})J",
     R"J(True True)J", nullptr},
    {R"J({%- for m in messages -%}
  {{ m.role }}: {{ m['content'] }}
{% endfor -%})J",
     R"J({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})J",
     R"J(user: hi
assistant: yo
)J", nullptr},
    {R"J(  {% if true %}
    indented
  {% endif %}
  {{ 'var' }}
  {%+ if true %}keep{% endif %}
end)J",
     R"J({})J",
     R"J(    indented
  var
  keepend)J", nullptr},
    {R"J(a {# comment #} b
{# line comment #}
c {#- strip -#}   d)J",
     R"J({})J",
     R"J(a  b
cd)J", nullptr},
    {R"J({% raw %}{{ not evaluated }}{% endraw %})J",
     R"J({})J",
     R"J({{ not evaluated }})J", nullptr},
    {R"J({{ "a" "b" }} {{ '\x41\u00e9\n' }})J",
     R"J({})J",
     R"J(ab Aé
)J", nullptr},
    {R"J({% set a, b = 1, 2 %}{{ a }}{{ b }})J",
     R"J({})J",
     R"J(12)J", nullptr},
    {R"J({% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %})J",
     R"J({})J",
     R"J(37)J", nullptr},
    {R"J({% for x in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %})J",
     R"J({})J",
     R"J(-2;1-3;2-;)J", nullptr},
    {R"J({% for x in 'ab' %}{{ loop.cycle('odd', 'even') }}{% endfor %})J",
     R"J({})J",
     R"J(oddeven)J", nullptr},
    {R"J({% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a }})J",
     R"J({})J",
     R"J(3)J", nullptr},
    {R"J({{ raise_exception('boom') }})J",
     R"J({})J",
     nullptr, "TemplateError"},
    {R"J({{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d') }})J",
     R"J({})J",
     R"J(15 Jan 2026 2026-01-15)J", nullptr},
    {R"J({{ 'abc'.foo }})J",
     R"J({})J",
     R"J()J", nullptr},
    {R"J({{ 'abc'.foo() }})J",
     R"J({})J",
     nullptr, "UndefinedError"},
    {R"J({{ x.y }})J",
     R"J({})J",
     nullptr, "UndefinedError"},
    {R"J({{ [1].append(2) }})J",
     R"J({})J",
     nullptr, "SecurityError"},
    {R"J({{ 'a' + 1 }})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({{ 1 + 'a' }})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({{ 1 / 0 }})J",
     R"J({})J",
     nullptr, "ZeroDivisionError"},
    {R"J({% for x in none %}{% endfor %})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({% if %})J",
     R"J({})J",
     nullptr, "TemplateSyntaxError"},
    {R"J({% for x in y %})J",
     R"J({})J",
     nullptr, "TemplateSyntaxError"},
    {R"J({% endif %})J",
     R"J({})J",
     nullptr, "TemplateSyntaxError"},
    {R"J({{ x | nonexistent }})J",
     R"J({})J",
     nullptr, "TemplateAssertionError"},
    {R"J({{ x is nonexistent }})J",
     R"J({})J",
     nullptr, "TemplateAssertionError"},
    {R"J({% set ns = 1 %}{% set ns.a = 2 %})J",
     R"J({})J",
     nullptr, "TemplateRuntimeError"},
    {R"J({{ {'a':1}.get('a') }} {{ {'a':1}.get('b', 'z') }} {{ {'a':1}.keys()|list }} {{ {'a':1}.values()|list }} {{ 'a' in {'a':1} }})J",
     R"J({})J",
     R"J(1 z ['a'] [1] True)J", nullptr},
    {R"J({{ d['items'] }} {{ d.x }} {{ d['x'] }})J",
     R"J({"d": {"items": 5, "x": 1}})J",
     R"J(5 1 1)J", nullptr},
    {R"J({{ 'x' * 3 }} {{ [0] * 3 }} {{ 'a-%s-%s' % ('x', 'y') }} {{ '%(a)s' % {'a': 1} }} {{ '{} and {}'.format(1, 2) }} {{ '{a}'.format(a='z') }})J",
     R"J({})J",
     R"J(xxx [0, 0, 0] a-x-y 1 1 and 2 z)J", nullptr},
    {R"J({{ 'a b'.replace(' ', '_') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'Hello'|lower }} {{ 'a'|upper }} {{ '  x '|trim }} {{ 'xxaxx'|trim('x') }})J",
     R"J({})J",
     R"J(a_b bba hello A x a)J", nullptr},
    {R"J({{ messages[0]['content'][0]['text'] }})J",
     R"J({"messages": [{"role": "user", "content": "hi"}]})J",
     R"J()J", nullptr},
    {R"J({{ guideline }}x)J",
     R"J({})J",
     R"J(x)J", nullptr},
    {R"J({% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }})J",
     R"J({})J",
     R"J(2)J", nullptr},
    {R"J({% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }})J",
     R"J({})J",
     R"J(21)J", nullptr},
    {R"J({% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }})J",
     R"J({})J",
     R"J(54321)J", nullptr},
    {R"J({% for item in tree recursive %}{{ item.name }}{% if item.children %}[{{ loop(item.children) }}]{% endif %}{% endfor %})J",
     R"J({"tree": [{"name": "a", "children": [{"name": "b"}, {"name": "c", "children": [{"name": "d"}]}]}, {"name": "e"}]})J",
     R"J(a[bc[d]]e)J", nullptr},
    {R"J({{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1) }} {{ namespace(a=1).a }})J",
     R"J({})J",
     R"J([0, 1, 2] [1, 4, 7] [5, 3, 1] {'a': 1} 1)J", nullptr},
    {R"J({{ -x }})J",
     R"J({"x": 3})J",
     R"J(-3)J", nullptr},
    {R"J({{ -3|abs }} {{ 10 - 2 - 3 }} {{ 2 * 3 % 4 }} {{ 'ab' < 'b' }} {{ [1,2] < [1,3] }} {{ 1 == 1.0 }} {{ [1] == [1] }} {{ (1,) == [1] }})J",
     R"J({})J",
     R"J(3 5 2 True True True True False)J", nullptr},
    {R"J({{ {'a': 1} == {'a': 1} }} {{ none == none }} {{ x == y }} {{ true + 1 }})J",
     R"J({})J",
     R"J(True True True 2)J", nullptr},
    {R"J({% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set loop_messages = messages[1:] %}{% else %}{% set sys = false %}{% set loop_messages = messages %}{% endif %}{{ sys }}|{{ loop_messages|length }})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]})J",
     R"J(S|1)J", nullptr},
    {R"J({{ '\n'.join(['a', 'b']) }}|{{ ', '.join(['x']) }})J",
     R"J({})J",
     R"J(a
b|x)J", nullptr},
    {R"J({%- set x = 'a' -%}
   {{- x -}}   
   b)J",
     R"J({})J",
     R"J(ab)J", nullptr},
    {R"J(line1
{% if true -%}
   x
{%- endif %}
line2)J",
     R"J({})J",
     R"J(line1
xline2)J", nullptr},
    {R"J({{ loop }})J",
     R"J({})J",
     R"J()J", nullptr},
    {R"J({% for x in [1] %}{{ loop.index0 }}{{ loop.depth }}{% endfor %})J",
     R"J({})J",
     R"J(01)J", nullptr},
    {R"J({{ 'abc'|list }} {{ {'a':1,'b':2}|list }} {{ 'abc'|reverse }} {{ [1,2]|reverse|list }})J",
     R"J({})J",
     R"J(['a', 'b', 'c'] ['a', 'b'] cba [2, 1])J", nullptr},
    {R"J({{ [1,2,3,4,5]|batch(2)|list }} {{ [1,2,3,4,5]|slice(2)|list }})J",
     R"J({})J",
     R"J([[1, 2], [3, 4], [5]] [[1, 2, 3], [4, 5]])J", nullptr},
    {R"J({{ tools|tojson(indent=4) }})J",
     R"J({"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]})J",
     R"J([
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {
                        "type": "string"
                    }
                },
                "required": [
                    "city"
                ]
            }
        }
    }
])J", nullptr},
    {R"J({{ 'x'.zfill(4) }} {{ 'ab'.center(7, '*') }} {{ 'x'.ljust(3) }}| {{ 'a'.rjust(3) }})J",
     R"J({})J",
     R"J(000x ***ab** x  |   a)J", nullptr},
    {R"J({{ 'a%' }} {{ '%%' % () }})J",
     R"J({})J",
     R"J(a% %)J", nullptr},
    {R"J({{ '{0}{1}{0}'.format('a', 'b') }} {{ '{:>5}'.format('x') }} {{ '{!r}'.format('x') }})J",
     R"J({})J",
     R"J(aba     x 'x')J", nullptr},
    {R"J({{ [1, 2] + [3] }} {{ (1,) + (2,) }} {{ 'ab' * 0 }})J",
     R"J({})J",
     R"J([1, 2, 3] (1, 2) )J", nullptr},
    {R"J({{ 1 if true }}{{ foo.bar if foo is defined else 'nofoo' }})J",
     R"J({})J",
     R"J(1nofoo)J", nullptr},
    {R"J({{ "multi
line" }})J",
     R"J({})J",
     R"J(multi
line)J", nullptr},
    {R"J({%- if x -%}yes{%- elif y -%}y{%- else -%}no{%- endif -%})J",
     R"J({"y": 1})J",
     R"J(y)J", nullptr},
    {R"J({{ messages | selectattr("role", "equalto", "user") | list | length }})J",
     R"J({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user"}]})J",
     R"J(2)J", nullptr},
    {R"J({{ x.y.z }})J",
     R"J({"x": {}})J",
     nullptr, "UndefinedError"},
    {R"J({{ x[0] }}|{{ x[5] }}|{{ x['a'] }})J",
     R"J({"x": [1]})J",
     R"J(1||)J", nullptr},
    {R"J({{ none.x }}|{{ none['a'] }})J",
     R"J({})J",
     R"J(|)J", nullptr},
    {R"J({{ 1.5|string }} {{ true|string }} {{ none|string }} {{ [1,'a']|string }} {{ 3|string|length }})J",
     R"J({})J",
     R"J(1.5 True None [1, 'a'] 1)J", nullptr},
    {R"J({{ 1 |join }})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({{ 'a' ~ 1 ~ [1] }})J",
     R"J({})J",
     R"J(a1[1])J", nullptr},
    {R"J({% for i in range(3) %}{% for j in range(2) %}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %})J",
     R"J({})J",
     R"J(121;122;123;)J", nullptr},
    {R"J({{ 5 > 3 and 'x' }} {{ not 1 == 2 }} {{ -2 ** 2 }} {{ (-2) ** 2 }} {{ 2 ** -1 }})J",
     R"J({})J",
     R"J(x True 4 4 0.5)J", nullptr},
    {R"J({{ 1e3 }} {{ 1_000 }} {{ 0.5 }} {{ .5 if false else 3 }}
)J",
     R"J({})J",
     nullptr, "TemplateSyntaxError"},
    {R"J(a
  {%- if true %}
b
  {% endif -%}
  c)J",
     R"J({})J",
     R"J(ab
c)J", nullptr},
    {R"J({% for m in [1,2] %}
  {{ m }}
{% endfor %}
done)J",
     R"J({})J",
     R"J(  1
  2
done)J", nullptr},
    {R"J(x {%+ if true %}y{% endif %}
  {%+ if true %}z{% endif %})J",
     R"J({})J",
     R"J(x y  z)J", nullptr},
    {R"J({# c #}
  {# c2 #}
text)J",
     R"J({})J",
     R"J(text)J", nullptr},
    {R"J({% raw -%}
  raw {{ x }}
{%- endraw %}
after)J",
     R"J({})J",
     R"J(raw {{ x }}after)J", nullptr},
    {R"J(  {% raw %}
  r
  {% endraw %}
end)J",
     R"J({})J",
     R"J(
  r
end)J", nullptr},
    {R"J({{ 'a' }}
{{ 'b' }})J",
     R"J({})J",
     R"J(a
b)J", nullptr},
    {R"J({% if true %}
{{- ' x ' -}}
{% endif %})J",
     R"J({})J",
     R"J( x )J", nullptr},
    {R"J({% macro m(a) -%}
  [{{ a }}]
{%- endmacro %}
{{ m(1) }}{{ m(2) }})J",
     R"J({})J",
     R"J([1][2])J", nullptr},
    {R"J({%- set ns = namespace(found=false) -%}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.found = true -%}
    {%- endif -%}
{%- endfor -%}
{{ ns.found }})J",
     R"J({"messages": [{"role": "user"}, {"role": "system"}]})J",
     R"J(True)J", nullptr},
    {R"J({{ messages[0]['content'] if messages[0]['content'] is string else messages[0]['content'][0]['text'] }})J",
     R"J({"messages": [{"role": "user", "content": [{"type": "text", "text": "T"}]}]})J",
     R"J(T)J", nullptr},
    {R"J({%- for tool in tools %}
{{- tool | tojson(indent=4) }}
{{- "\n\n" }}
{%- endfor %})J",
     R"J({"tools": [{"a": [1, {"b": null}], "c": "é\n"}]})J",
     R"J({
    "a": [
        1,
        {
            "b": null
        }
    ],
    "c": "é\n"
}

)J", nullptr},
    {R"J({{ "{\"name\": \"" + x + "\"}" }})J",
     R"J({"x": "f"})J",
     R"J({"name": "f"})J", nullptr},
    {R"J({{ ('a', 'b')|join('-') }} {{ {'a':1}|tojson }} {{ [1,2]|join }} {{ none|tojson }} {{ true|tojson }} {{ 1.0|tojson }} {{ -0.0 }} {{ 1e300*1e10 }})J",
     R"J({})J",
     R"J(a-b {"a": 1} 12 null true 1.0 -0.0 inf)J", nullptr},
    {R"J({{ 'x'|tojson(ensure_ascii=true) }} {{ 'é😀'|tojson(ensure_ascii=true) }} {{ [[], {}]|tojson(indent=2) }})J",
     R"J({})J",
     R"J("x" "\u00e9\ud83d\ude00" [
  [],
  {}
])J", nullptr},
    {R"J({{ "abc" | replace("b", "") }}{{ "a" in ["a"] }}{{ 3 in [1, 2] }}{{ "x" not in "y" }})J",
     R"J({})J",
     R"J(acTrueFalseTrue)J", nullptr},
    {R"J({% if not messages %}none{% endif %}{% if messages is not none and messages|length > 0 %}some{% endif %})J",
     R"J({"messages": []})J",
     R"J(none)J", nullptr},
    {R"J({{ messages | map(attribute='role') | join(', ') }} {{ messages|map(attribute='nope', default='d')|list }})J",
     R"J({"messages": [{"role": "user"}, {"role": "assistant"}]})J",
     R"J(user, assistant ['d', 'd'])J", nullptr},
    {R"J({{ messages[-1].role }} {{ messages[:-1]|length }} {{ (messages|last).role }})J",
     R"J({"messages": [{"role": "user"}, {"role": "assistant"}]})J",
     R"J(assistant 1 assistant)J", nullptr},
    {R"J({% set content = message.content %}{% if '</think>' in content %}{% set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}[{{ reasoning }}][{{ content }}])J",
     R"J({"message": {"content": "<think>\nhmm\n</think>\n\nAnswer"}})J",
     R"J([hmm][Answer])J", nullptr},
    {R"J({{ "%.2f"|format(3.14159) }} {{ "%5s|%-5s|"|format('a', 'b') }} {{ "%03d"|format(7) }} {{ '%x' % 255 }})J",
     R"J({})J",
     R"J(3.14     a|b    | 007 ff)J", nullptr},
    {R"J({{ 7 is divisibleby 7 }} {{ none is defined }} {{ x is none }} {{ [] is string }} {{ 'a' is sequence }} {{ 1 is iterable }})J",
     R"J({})J",
     R"J(True True False False True False)J", nullptr},
    {R"J({{ 'A B'|lower|replace(' ', '_') }} {{ 'ab cd'|title }} {{ 'hello WORLD'|capitalize }} {{ 'aXb'.swapcase() }})J",
     R"J({})J",
     R"J(a_b Ab Cd Hello world AxB)J", nullptr},
    {R"J({{ '  a\n b  '.splitlines() }} {{ 'a\r\nb\rc\n'.splitlines() }} {{ 'a,b'.partition(',') }} {{ 'abc'.find('c') }} {{ 'abcabc'.count('b') }})J",
     R"J({})J",
     R"J(['  a', ' b  '] ['a', 'b', 'c'] ('a', ',', 'b') 2 2)J", nullptr},
    {R"J({{ [1, 'a'] | sort }})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({{ {'b': 2, 'a': 1} | dictsort(by='value', reverse=true) }})J",
     R"J({})J",
     R"J([('b', 2), ('a', 1)])J", nullptr},
    {R"J({{ [{'n': 'b'}, {'n': 'a'}] | sort(attribute='n') | map(attribute='n') | join }})J",
     R"J({})J",
     R"J(ab)J", nullptr},
    {R"J({{ [3, 1] | max }} {{ ['b', 'A'] | max }} {{ [] | max }} {{ [1, 2] | sum(start=10) }})J",
     R"J({})J",
     R"J(3 b  13)J", nullptr},
    {R"J({{ x | default(none) is none }} {{ x | d }})J",
     R"J({})J",
     R"J(True )J", nullptr},
    {R"J({% set a = [1, 2] %}{% set b = a + [3] %}{{ a }} {{ b }})J",
     R"J({})J",
     R"J([1, 2] [1, 2, 3])J", nullptr},
    {R"J({{ "a" ~ 1.5 ~ true ~ none ~ [1] ~ {'k': 'v'} }})J",
     R"J({})J",
     R"J(a1.5TrueNone[1]{'k': 'v'})J", nullptr},
    {R"J({%- macro render(x, indent=0) -%}{{ ' ' * indent }}{{ x }}{%- endmacro -%}{{ render('a', 2) }}|{{ render(x='b') }})J",
     R"J({})J",
     R"J(  a|b)J", nullptr},
    {R"J({% macro m(a, b) %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}|{{ m(1, 2, 3) }})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }})J",
     R"J({})J",
     nullptr, "TypeError"},
    {R"J({{ range(3) | map('string') | join }} {{ [1.5, 2.5] | map('round') | list }} {{ ['1', 'x'] | map('int') | list }})J",
     R"J({})J",
     R"J(012 [2.0, 2.0] [1, 0])J", nullptr},
    {R"J({{ dict(a=1, b=2) | items | list }} {{ dict([('x', 1)]) }})J",
     R"J({})J",
     R"J([('a', 1), ('b', 2)] {'x': 1})J", nullptr},
    {R"J({% for x in [1, 2, 3] %}{% if loop.changed(x > 1) %}c{% endif %}{{ x }}{% endfor %})J",
     R"J({})J",
     R"J(c1c23)J", nullptr},
    {R"J({% set j = joiner(', ') %}{% for x in [1,2,3] %}{{ j() }}{{ x }}{% endfor %})J",
     R"J({})J",
     R"J(1, 2, 3)J", nullptr},
    {R"J({{ 'abc'[5] }}|{{ 'abc'[-1] }}|{{ 'abc'[1:] }}|{{ 'abc'[::2] }}|{{ 'abc'[10:] }}|{{ [1,2,3][-10:2] }})J",
     R"J({})J",
     R"J(|c|bc|ac||[1, 2])J", nullptr},
    {R"J({{ messages | selectattr('role', 'in', ['user', 'system']) | list | length }})J",
     R"J({"messages": [{"role": "user"}, {"role": "system"}, {"role": "tool"}]})J",
     R"J(2)J", nullptr},
    {R"J({{ messages | rejectattr('role', 'equalto', 'tool') | map(attribute='role') | list }})J",
     R"J({"messages": [{"role": "user"}, {"role": "system"}, {"role": "tool"}]})J",
     R"J(['user', 'system'])J", nullptr},
    {R"J({{ x.items() | list }} {{ x | length }} {{ x.get('a') }} {{ x['a'] }} {{ x.a }})J",
     R"J({"x": {"a": {"b": [1, 2]}}})J",
     R"J([('a', {'b': [1, 2]})] 1 {'b': [1, 2]} {'b': [1, 2]} {'b': [1, 2]})J", nullptr},
    {R"J({{ 0.1 + 0.2 }} {{ 1/3 }} {{ 2/3 }} {{ 1e16 }} {{ 123456.789e3 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ 100.0 }} {{ 3.0e-4 }})J",
     R"J({})J",
     R"J(0.30000000000000004 0.3333333333333333 0.6666666666666666 1e+16 123456789.0 1.5e-05 0.0001 100.0 0.0003)J", nullptr},
    {R"J({{ 10 // 3 }} {{ 10.0 // 3 }} {{ -10 // 3 }} {{ 10 % -3 }} {{ 5.5 % 2 }} {{ 2 ** 0.5 }} {{ 2 ** -2 }})J",
     R"J({})J",
     R"J(3 3.0 -4 -2 1.5 1.4142135623730951 0.25)J", nullptr},
    {R"J({{ 'a' if none else 'b' if 0 else 'c' }})J",
     R"J({})J",
     R"J(c)J", nullptr},
    {R"J({{ [1,2,3] | batch(2, 'x') | list }} {{ 'a b  c' | wordcount }})J",
     R"J({})J",
     R"J([[1, 2], [3, 'x']] 3)J", nullptr},
    {R"J({{ '<b>x</b> y' | striptags }} {{ 'x' | center(5) }}|)J",
     R"J({})J",
     R"J(x y   x  |)J", nullptr},
    {R"J({{ [1, 2] | first }}{{ 'abc' | first }}{{ 'abc' | last }}{{ {'a': 1} | first }})J",
     R"J({})J",
     R"J(1aca)J", nullptr},
    {R"J({{ "Hello" | truncate(3, end='') }} {{ "Hello world" | truncate(8, leeway=0) }})J",
     R"J({})J",
     R"J(Hello Hello...)J", nullptr},
    {R"J({{ xs | unique | list }} {{ ['A', 'a', 'b'] | unique | list }} {{ ['A', 'a'] | unique(case_sensitive=true) | list }})J",
     R"J({"xs": [1, 2, 1, 3]})J",
     R"J([1, 2, 3] ['A', 'b'] ['A', 'a'])J", nullptr},
    {R"J({{ '{{ raw }}' }} {{ "{% x %}" }})J",
     R"J({})J",
     R"J({{ raw }} {% x %})J", nullptr},
    {R"J({{ 1 == 1 == 1 }} {{ 1 < 2 > 0 }} {{ 'b' >= 'a' }} {{ [] == [] }} {{ () == () }} {{ none != false }})J",
     R"J({})J",
     R"J(True True True True True True)J", nullptr},
    {R"J({{ true and false or true }} {{ not false and not true }} {{ (1 and 0) }} {{ 0 or '' or 'z' }})J",
     R"J({})J",
     R"J(True False 0 z)J", nullptr},
    {R"J({{ - 3 + 4 }} {{ -(3 + 4) }} {{ +5 }} {{ --5 }})J",
     R"J({})J",
     R"J(1 -7 5 5)J", nullptr},
    {R"J({% for i in range(3) %}{{ loop.revindex0 }}{{ loop.length }}{% else %}never{% endfor %})J",
     R"J({})J",
     R"J(231303)J", nullptr},
    {R"J({% for a, b in {'x': 1}.items() %}{{ a }}{{ b }}{% endfor %}{% for a in {'x': 1} %}{{ a }}{% endfor %})J",
     R"J({})J",
     R"J(x1x)J", nullptr},
    {R"J({% for c in 'hé' %}[{{ c }}]{% endfor %})J",
     R"J({})J",
     R"J([h][é])J", nullptr},
    {R"J({% set x = 5 %}{% macro show() %}{{ x }}{% endmacro %}{% set x = 6 %}{{ show() }})J",
     R"J({})J",
     R"J(6)J", nullptr},
    {R"J({% for i in [1] %}{% set inner = 'v' %}{% endfor %}[{{ inner }}])J",
     R"J({})J",
     R"J([])J", nullptr},
    {R"J({% with %}{% set y = 1 %}{{ y }}{% endwith %}[{{ y }}])J",
     R"J({})J",
     R"J(1[])J", nullptr},
    {R"J({% if x %}{% set z = 1 %}{% endif %}{{ z }})J",
     R"J({"x": true})J",
     R"J(1)J", nullptr},
    {R"J({%- for message in messages %}{{ loop.index0 % 2 }}{% endfor %})J",
     R"J({"messages": [1, 2, 3]})J",
     R"J(010)J", nullptr},
    {R"J({{ "\u00e9\t\\" }} {{ '\'' }} {{ "\x41" }} {{ '\101' }} {{ "tab\tend" | tojson }}
)J",
     R"J({})J",
     R"J(é	\ ' A A "tab\tend")J", nullptr},
};

// The clock the recorded cases ran with: 2026-01-15 00:00:00.
const jinja::RenderOptions& recorded_clock() {
  static const jinja::RenderOptions options = [] {
    jinja::RenderOptions o;
    std::tm now{};
    now.tm_year = 2026 - 1900;
    now.tm_mday = 15;
    o.now = now;
    return o;
  }();
  return options;
}

std::string render(const std::string& source, const std::string& variables = "{}",
                   const jinja::RenderOptions& options = recorded_clock()) {
  return jinja::Template(source).render(jinja::Value::from_json(nlohmann::ordered_json::parse(variables)), options);
}

// The error type a render raises ("" when it renders).
std::string error_of(const std::string& source, const std::string& variables = "{}",
                     const jinja::RenderOptions& options = recorded_clock()) {
  try {
    render(source, variables, options);
  } catch (const jinja::Error& e) {
    return e.type();
  }
  return "";
}

TEST(Jinja, LanguageCasesMatchJinja2) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.source);
    if (c.expected) {
      try {
        EXPECT_EQ(render(c.source, c.variables), c.expected);
      } catch (const jinja::Error& e) {
        ADD_FAILURE() << e.type() << ": " << e.what();
      }
    } else {
      EXPECT_EQ(error_of(c.source, c.variables), c.error_type);
    }
  }
}

TEST(Jinja, RaiseExceptionIsATypedErrorWithTheTemplatesMessage) {
  try {
    render("{% if messages|length > 1 %}{{ raise_exception('Only one message, got ' ~ messages|length) }}{% endif %}",
           R"({"messages": [1, 2]})");
    FAIL() << "no error";
  } catch (const jinja::Error& e) {
    EXPECT_EQ(e.type(), "TemplateError");
    EXPECT_STREQ(e.what(), "Only one message, got 2");
  }
}

TEST(Jinja, ErrorMessagesNameTheProblem) {
  auto message = [](const std::string& source) {
    try {
      render(source);
    } catch (const jinja::Error& e) {
      return std::string(e.what());
    }
    return std::string("(rendered)");
  };
  EXPECT_EQ(message("{{ guideline.text }}"), "'guideline' is undefined");
  EXPECT_EQ(message("{{ 'abc'.text.x }}"), "'str object' has no attribute 'text'");
  EXPECT_EQ(message("{{ 'a' + [1] }}"), "can only concatenate str (not \"list\") to str");
  EXPECT_NE(message("{% for x in y %}").find("'endfor' or 'else'"), std::string::npos);
  EXPECT_EQ(message("{{ x|nope }}"), "No filter named 'nope'.");
}

TEST(Jinja, TemplatesCannotReachFilesOrMutateData) {
  EXPECT_EQ(error_of("{% include 'x.j2' %}"), "SecurityError");
  EXPECT_EQ(error_of("{% extends 'base' %}"), "SecurityError");
  EXPECT_EQ(error_of("{{ m.pop('role') }}", R"({"m": {"role": "user"}})"), "SecurityError");
  EXPECT_EQ(error_of("{{ xs.append(1) }}", R"({"xs": []})"), "SecurityError");
  EXPECT_EQ(render("{{ 'x'.__class__ }}|{{ m._secret }}", R"({"m": {"_secret": 1}})"), "|");
}

TEST(Jinja, UntrustedTemplatesAreBounded) {
  jinja::RenderOptions small;
  small.limits.max_loop_iterations = 1000;
  small.limits.max_output_bytes = 1000;
  small.limits.max_depth = 100;
  EXPECT_EQ(error_of("{% for i in range(10) %}{% for j in range(10) %}{% endfor %}{% endfor %}", "{}", small), "");
  EXPECT_EQ(error_of("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", "{}", small),
            "TemplateLimitError");
  EXPECT_EQ(error_of("{% for i in range(5000) %}{% endfor %}", "{}", small), "TemplateLimitError");
  EXPECT_EQ(error_of("{% for i in range(10**12) %}{% endfor %}"), "OverflowError");  // jinja2's sandbox MAX_RANGE
  EXPECT_EQ(error_of("{{ 'x' * 2000 }}", "{}", small), "TemplateLimitError");
  EXPECT_EQ(error_of("{% for i in range(500) %}xxxx{% endfor %}", "{}", small), "TemplateLimitError");
  EXPECT_EQ(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{}", small), "TemplateLimitError");
  // A namespace that holds itself cannot be printed forever.
  EXPECT_EQ(error_of("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"), "TemplateLimitError");
  // Deep nesting is refused by the parser instead of overflowing the stack.
  EXPECT_EQ(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"), "TemplateSyntaxError");
  EXPECT_EQ(error_of(std::string(3000, '{') ), "TemplateSyntaxError");
}

TEST(Jinja, BadTemplatesFailCleanly) {
  for (const char* source : {"{{", "{%", "{% if x %}", "{{ 'unterminated }}", "{{ 1 + }}", "{% for %}", "{#",
                             "{{ x[ }}", "{% endfor %}", "{% set %}", "{{ ) }}", "{% macro %}", "{{ a b }}"}) {
    SCOPED_TRACE(source);
    EXPECT_EQ(error_of(source), "TemplateSyntaxError");
  }
  EXPECT_EQ(error_of("\xff\xfe"), "TemplateSyntaxError");  // not UTF-8
}

TEST(Jinja, StrftimeNowUsesTheGivenClock) {
  jinja::RenderOptions options;
  std::tm now{};
  now.tm_year = 2025 - 1900;
  now.tm_mon = 1;
  now.tm_mday = 1;
  options.now = now;
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }}", "{}", options), "01 Feb 2025");
}

}  // namespace
