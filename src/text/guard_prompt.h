// Llama Guard 3 prompts, byte for byte as the models' chat templates render them (fixtures/llama/guard_cases.json
// holds both templates and rendered cases), and the parser of the guard's answer.
//
//  8B: " <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTask: Check if there is unsafe content in
//      '{User|Agent}' messages ... <BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\n...S14: Code Interpreter
//      Abuse.\n<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\nUser: {content.strip()}\n\n...
//      <END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message ...categories.
//      <|eot_id|><|start_header_id|>assistant<|end_header_id|>"   (note the leading space, as the template has it)
//  1B: no leading space, S1..S13 from a `categories` map the caller may replace, minus `excluded_category_keys`,
//      and "categories. <|eot_id|>" (a space before <|eot_id|>).
// Custom categories and exclusions apply to both variants (the 8B template hard-codes its list; we substitute the
// list lines in the same "code: description\n" form, as Meta's prompt builder does).
// The checked role is 'Agent' when the conversation has an even number of messages, else 'User'; roles must
// alternate user/assistant starting with user (the templates raise otherwise; so do we).
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/chat_format.h"
#include "text/prompt.h"

namespace guardkit::text {

enum class LlamaGuardVariant { k8B, k1B };

LlamaGuardVariant parse_llama_guard_variant(std::string_view name);  // "8B" / "1B" (case-insensitive)

struct GuardCategory {
  std::string code;         // "S1"
  std::string description;  // "Violent Crimes." (rendered verbatim after "S1: ")
};

std::vector<GuardCategory> default_guard_categories(LlamaGuardVariant variant);  // S1-S14 (8B) / S1-S13 (1B)

struct GuardPromptOptions {
  LlamaGuardVariant variant = LlamaGuardVariant::k8B;
  std::optional<std::vector<GuardCategory>> categories;  // replaces the variant's list when set
  std::vector<std::string> excluded_categories;          // codes left out of the list
};

// Messages: role "user" / "assistant"; content is the untrusted text (a kUser segment, stripped as the template does).
RenderedPrompt render_guard_prompt(const std::vector<ChatMessage>& messages, const GuardPromptOptions& options = {});

// The guard's answer: "safe", or "unsafe" then a line of comma-separated codes ("unsafe\nS1,S10"). Surrounding
// whitespace, a trailing <|eot_id|>, spaces around commas and upper/lower case are tolerated; categories are
// normalised to upper case and deduplicated in order. Anything else is a guardkit::Error quoting the text.
struct GuardVerdict {
  bool unsafe = false;
  std::vector<std::string> categories;
};
GuardVerdict parse_guard_output(std::string_view text);

}  // namespace guardkit::text
