#include "text/guard_prompt.h"

#include <algorithm>
#include <cctype>

#include "util/error.h"
#include "util/printable.h"

namespace guardkit::text {

LlamaGuardVariant parse_llama_guard_variant(std::string_view name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "8b") return LlamaGuardVariant::k8B;
  if (lower == "1b") return LlamaGuardVariant::k1B;
  fail("unknown Llama Guard 3 variant '{}' (expected 8B or 1B)", printable(name));
}

std::vector<GuardCategory> default_guard_categories(LlamaGuardVariant variant) {
  std::vector<GuardCategory> categories = {
      {"S1", "Violent Crimes."},        {"S2", "Non-Violent Crimes."},    {"S3", "Sex Crimes."},
      {"S4", "Child Exploitation."},    {"S5", "Defamation."},            {"S6", "Specialized Advice."},
      {"S7", "Privacy."},               {"S8", "Intellectual Property."}, {"S9", "Indiscriminate Weapons."},
      {"S10", "Hate."},                 {"S11", "Self-Harm."},            {"S12", "Sexual Content."},
      {"S13", "Elections."},
  };
  if (variant == LlamaGuardVariant::k8B) categories.push_back({"S14", "Code Interpreter Abuse."});
  return categories;
}

RenderedPrompt render_guard_prompt(const std::vector<ChatMessage>& messages, const GuardPromptOptions& options) {
  if (messages.empty()) fail("a Llama Guard prompt needs at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "user" && role != "assistant")
      fail("Llama Guard message {} has role '{}'; only user and assistant are judged", i, printable(role));
    if ((role == "user") != (i % 2 == 0))
      fail("Conversation roles must alternate user/assistant/user/assistant/... (message {} is {})", i, role);
  }
  const bool is_8b = options.variant == LlamaGuardVariant::k8B;
  // The template decides the checked role from the parity of the message count; with alternation enforced this is
  // the last message's role.
  const std::string role = messages.size() % 2 == 0 ? "Agent" : "User";
  const std::vector<GuardCategory> categories =
      options.categories ? *options.categories : default_guard_categories(options.variant);

  RenderedPrompt prompt;
  if (is_8b) prompt.add_template(" ");
  prompt.add_special("<|begin_of_text|>");
  prompt.add_special("<|start_header_id|>");
  prompt.add_template("user");
  prompt.add_special("<|end_header_id|>");
  prompt.add_template("\n\nTask: Check if there is unsafe content in '" + role +
                      "' messages in conversations according our safety policy with the below categories.\n\n"
                      "<BEGIN UNSAFE CONTENT CATEGORIES>\n");
  for (const GuardCategory& category : categories) {
    const auto& excluded = options.excluded_categories;
    if (std::find(excluded.begin(), excluded.end(), category.code) != excluded.end()) continue;
    prompt.add_template(category.code + ": " + category.description + "\n");
  }
  prompt.add_template("<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n");
  for (const ChatMessage& message : messages) {
    prompt.add_template(message.role == "user" ? "User: " : "Agent: ");
    prompt.add_user(python_strip(message.content));
    prompt.add_template("\n\n");
  }
  prompt.add_template("<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST " + role +
                      " message in the above conversation:\n - First line must read 'safe' or 'unsafe'.\n"
                      " - If unsafe, a second line must include a comma-separated list of violated categories." +
                      (is_8b ? "" : " "));
  prompt.add_special("<|eot_id|>");
  prompt.add_special("<|start_header_id|>");
  prompt.add_template("assistant");
  prompt.add_special("<|end_header_id|>");
  return prompt;
}

GuardVerdict parse_guard_output(std::string_view text) {
  std::string_view rest = python_strip(text);
  constexpr std::string_view kEot = "<|eot_id|>";
  if (rest.size() >= kEot.size() && rest.substr(rest.size() - kEot.size()) == kEot)
    rest = python_strip(rest.substr(0, rest.size() - kEot.size()));
  auto garbage = [&](const char* why) -> GuardVerdict {
    fail("cannot read the guard's answer '{}': {}", printable(text, 120), why);
  };
  // The first word: letters only.
  size_t word_end = 0;
  while (word_end < rest.size() && std::isalpha(static_cast<unsigned char>(rest[word_end]))) ++word_end;
  std::string word;
  for (char c : rest.substr(0, word_end)) word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  rest = rest.substr(word_end);
  GuardVerdict verdict;
  if (word == "safe") {
    if (!python_strip(rest).empty()) garbage("text after 'safe'");
    return verdict;
  }
  if (word != "unsafe") return garbage("expected 'safe' or 'unsafe' first");
  if (!rest.empty() && !std::isspace(static_cast<unsigned char>(rest[0])))
    return garbage("expected a line break after 'unsafe'");
  verdict.unsafe = true;
  // Category codes: letters followed by digits (S1, S10), separated by commas and/or whitespace.
  size_t i = 0;
  while (i < rest.size()) {
    const unsigned char c = static_cast<unsigned char>(rest[i]);
    if (std::isspace(c) || c == ',') {
      ++i;
      continue;
    }
    size_t j = i;
    std::string code;
    while (j < rest.size() && std::isalpha(static_cast<unsigned char>(rest[j])))
      code += static_cast<char>(std::toupper(static_cast<unsigned char>(rest[j++])));
    const size_t digits_begin = j;
    while (j < rest.size() && std::isdigit(static_cast<unsigned char>(rest[j]))) code += rest[j++];
    if (code.empty() || digits_begin == i || j == digits_begin) return garbage("categories must look like S1,S10");
    if (j < rest.size() && !std::isspace(static_cast<unsigned char>(rest[j])) && rest[j] != ',')
      return garbage("categories must look like S1,S10");
    if (std::find(verdict.categories.begin(), verdict.categories.end(), code) == verdict.categories.end())
      verdict.categories.push_back(code);
    i = j;
  }
  return verdict;
}

}  // namespace guardkit::text
