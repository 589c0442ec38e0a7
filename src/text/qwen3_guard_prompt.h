// Qwen3Guard-Gen prompts, byte for byte as Qwen/Qwen3Guard-Gen-* render them (fixtures/qwen3/guard_cases.json: the
// text of a real `apply_chat_template` output), and the parser of the guard's answer lines.
//
//   prompt moderation   [user]:            <|im_start|>user\n# Task: ... 9 categories incl. Jailbreak ...
//                                          <BEGIN CONVERSATION>\n\nUSER: {content}\n\n<END CONVERSATION> ... 2 answer lines
//   response moderation [user, assistant]: ... 8 categories, a REFUSAL POLICY block ... USER: {user}\n\nASSISTANT:
//                                          {assistant}\n\n<END CONVERSATION> ... 3 answer lines
// both ending "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n" (thinking disabled). Content is inserted
// verbatim (no stripping). No public source shows how the real template renders system messages or more than one
// exchange, so only these two forms are rendered; a guard judges the last exchange of a longer conversation.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/prompt.h"

namespace guardkit::text {

// The categories Qwen3Guard-Gen names, in the prompt's order: 9 for prompts (the last is Jailbreak), 8 for responses.
const std::vector<std::string>& qwen3_guard_categories(bool judges_response);

// `assistant` empty: prompt moderation of `user`; set: response moderation of the assistant's reply to `user`.
RenderedPrompt render_qwen3_guard_prompt(std::string_view user, std::optional<std::string_view> assistant);

// The answer as Qwen's README parses it (regexes of QwenLM/Qwen3Guard): `safety` from the first "Safety: Safe|Unsafe|
// Controversial"; `categories` every category name (or "None") found anywhere in the text, in order, with repeats,
// case-sensitive (the response list has no Jailbreak); `refusal` from "Refusal: Yes|No" (response moderation only).
struct Qwen3GuardAnswer {
  std::optional<std::string> safety;
  std::vector<std::string> categories;
  std::optional<std::string> refusal;
};
Qwen3GuardAnswer parse_qwen3_guard_output(std::string_view text, bool judges_response);

}  // namespace guardkit::text
