// The Llama 3 chat template (tokenizer_config.json of Llama 3 / 3.1 instruct models and of fixtures/llama):
//   {bos}<|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|> ...
//   [<|start_header_id|>assistant<|end_header_id|>\n\n]   when a generation prompt is asked for
// rendered as segments so message content is encoded as plain text. An assistant prefix continues the assistant's
// turn from given text (HarmAug's prefix attack: "I have an idea for a prompt:").
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "text/prompt.h"

namespace guardkit::text {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (any role name without control text is rendered as given)
  std::string content;
};

struct ChatFormatOptions {
  bool add_generation_prompt = false;
  // When set, the assistant header follows (add_generation_prompt implied) and then this text, untrimmed, with no
  // <|eot_id|>: the model continues from it.
  std::optional<std::string> assistant_prefix;
  std::string bos_token = "<|begin_of_text|>";  // empty: no BOS
};

RenderedPrompt render_llama3_chat(const std::vector<ChatMessage>& messages, const ChatFormatOptions& options = {});

}  // namespace guardkit::text
