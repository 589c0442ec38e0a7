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

const std::vector<HazardCategory>& qwen3_guard_categories() {
  // Qwen3Guard names the category itself, so the name is also the code.
  static const std::vector<HazardCategory> categories = {
      {"Violent", "Violent", {"violence", "illicit/violent"}},
      {"Non-violent Illegal Acts", "Non-violent Illegal Acts", {"illicit"}},
      {"Sexual Content or Sexual Acts", "Sexual Content or Sexual Acts", {"sexual"}},
      {"PII", "PII", {}},
      {"Suicide & Self-Harm", "Suicide & Self-Harm", {"self-harm"}},
      {"Unethical Acts", "Unethical Acts", {}},
      {"Politically Sensitive Topics", "Politically Sensitive Topics", {}},
      {"Copyright Violation", "Copyright Violation", {"illicit"}},
      {"Jailbreak", "Jailbreak", {}},
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

namespace {
const HazardCategory* find_category(std::string_view code) {
  for (const auto* list : {&llama_guard_categories(), &qwen3_guard_categories()})
    for (const auto& category : *list)
      if (category.code == code) return &category;
  return nullptr;
}
}  // namespace

std::vector<std::string_view> openai_keys_for(std::string_view code) {
  const HazardCategory* category = find_category(code);
  return category ? category->openai_keys : std::vector<std::string_view>{};
}

std::string_view category_name(std::string_view code) {
  const HazardCategory* category = find_category(code);
  return category ? category->name : std::string_view{};
}

}  // namespace guardkit::serve
