#include "serve/categories.h"

namespace guardkit::serve {

const std::vector<HazardCategory>& llama_guard_categories() {
  static const std::vector<HazardCategory> categories = {
      {"S1", "Violent Crimes", {"violence", "illicit/violent"}},
      {"S2", "Non-Violent Crimes", {"illicit"}},
      {"S3", "Sex-Related Crimes", {"sexual", "illicit/violent"}},
      {"S4", "Child Sexual Exploitation", {"sexual/minors"}},
      {"S5", "Defamation", {"harassment"}},
      {"S6", "Specialized Advice", {}},
      {"S7", "Privacy", {}},
      {"S8", "Intellectual Property", {"illicit"}},
      {"S9", "Indiscriminate Weapons", {"violence", "illicit/violent"}},
      {"S10", "Hate", {"hate"}},
      {"S11", "Suicide & Self-Harm", {"self-harm"}},
      {"S12", "Sexual Content", {"sexual"}},
      {"S13", "Elections", {}},
      {"S14", "Code Interpreter Abuse", {"illicit"}},
  };
  return categories;
}

const std::vector<std::string_view>& openai_category_keys() {
  static const std::vector<std::string_view> keys = {
      "harassment", "harassment/threatening", "hate",    "hate/threatening", "illicit",
      "illicit/violent", "self-harm",          "self-harm/intent", "self-harm/instructions",
      "sexual",     "sexual/minors",          "violence", "violence/graphic"};
  return keys;
}

std::vector<std::string_view> openai_keys_for(std::string_view s_code) {
  for (const auto& category : llama_guard_categories())
    if (category.code == s_code) return category.openai_keys;
  return {};
}

std::string_view category_name(std::string_view s_code) {
  for (const auto& category : llama_guard_categories())
    if (category.code == s_code) return category.name;
  return {};
}

}  // namespace guardkit::serve
