// Every case of fixtures/chat_templates/ (37 real chat templates x conversations x add_generation_prompt, the error
// goldens too) rendered by our Jinja engine equals transformers' apply_chat_template byte for byte; each mismatch
// is reported with its case id.
#include <gtest/gtest.h>

#include "test_util.h"
#include "text/jinja.h"

using namespace guardkit;
using namespace guardkit::text;

namespace {

std::tm fixture_clock() {  // cases.json "fixed_now": 2026-01-15T00:00:00
  std::tm now{};
  now.tm_year = 2026 - 1900;
  now.tm_mon = 0;
  now.tm_mday = 15;
  now.tm_wday = 4;  // a Thursday
  now.tm_yday = 14;
  return now;
}

TEST(JinjaFixtures, EveryCaseRendersExactly) {
  const auto templates = nlohmann::ordered_json::parse(read_file(test::fixture("chat_templates/templates.json")));
  const auto cases = nlohmann::ordered_json::parse(read_file(test::fixture("chat_templates/cases.json")));
  std::map<std::string, jinja::Template> compiled;
  for (const auto& [key, entry] : templates["templates"].items())
    compiled.emplace(key, jinja::Template(entry["template"].get<std::string>()));

  jinja::RenderOptions options;
  options.now = fixture_clock();
  size_t checked = 0, errors = 0, failures = 0;
  for (const auto& c : cases["cases"]) {
    const std::string id = c["id"];
    nlohmann::ordered_json variables = nlohmann::ordered_json::object();
    variables["messages"] = c["messages"];
    for (const auto& [k, v] : c["variables"].items()) variables[k] = v;
    for (const auto& [k, v] : c["extra_kwargs"].items()) variables[k] = v;
    const jinja::Template& tmpl = compiled.at(c["template"].get<std::string>());
    std::string rendered, error_type, error_message;
    try {
      rendered = tmpl.render(jinja::Value::from_json(variables), options);
    } catch (const jinja::Error& e) {
      error_type = e.type();
      error_message = e.what();
    }
    ++checked;
    if (c.contains("error") && !c["error"].is_null()) {
      ++errors;
      const std::string want_type = c["error"]["type"];
      // TemplateError messages are the template's own and exact; jinja2/Python messages are informative only.
      const bool ok = error_type == want_type &&
                      (want_type != "TemplateError" || error_message == c["error"]["message"].get<std::string>());
      if (!ok) {
        ++failures;
        ADD_FAILURE() << id << ": expected " << want_type << " '" << c["error"]["message"].get<std::string>()
                      << "', got " << (error_type.empty() ? "a rendering" : error_type + " '" + error_message + "'");
      }
    } else if (!error_type.empty() || rendered != c["rendered"].get<std::string>()) {
      ++failures;
      if (!error_type.empty()) {
        ADD_FAILURE() << id << ": " << error_type << ": " << error_message;
      } else {
        const std::string want = c["rendered"];
        size_t at = 0;
        while (at < want.size() && at < rendered.size() && want[at] == rendered[at]) ++at;
        const size_t from = at > 40 ? at - 40 : 0;
        ADD_FAILURE() << id << ": differs at byte " << at << "\n  want: " << nlohmann::json(want.substr(from, 120)).dump()
                      << "\n  got:  " << nlohmann::json(rendered.substr(from, 120)).dump();
      }
    }
  }
  EXPECT_EQ(checked, 732u);
  EXPECT_EQ(errors, 56u);
  EXPECT_EQ(failures, 0u);
}

}  // namespace
