#include "text/chat_format.h"

#include "util/error.h"
#include "util/printable.h"

namespace guardkit::text {

namespace {
void check_role(const std::string& role) {
  if (role.empty()) fail("chat message with an empty role");
  for (char c : role)
    if (static_cast<unsigned char>(c) < 0x20 || c == '<' || c == '|')
      fail("chat role '{}' may not contain control characters, '<' or '|'", printable(role));
}
}  // namespace

RenderedPrompt render_llama3_chat(const std::vector<ChatMessage>& messages, const ChatFormatOptions& options) {
  RenderedPrompt prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    check_role(message.role);
    if (i == 0 && !options.bos_token.empty()) prompt.add_special(options.bos_token);
    prompt.add_special("<|start_header_id|>");
    prompt.add_template(message.role);
    prompt.add_special("<|end_header_id|>");
    prompt.add_template("\n\n");
    prompt.add_user(python_strip(message.content));
    prompt.add_special("<|eot_id|>");
  }
  if (options.add_generation_prompt || options.assistant_prefix) {
    if (messages.empty() && !options.bos_token.empty()) prompt.add_special(options.bos_token);
    prompt.add_special("<|start_header_id|>");
    prompt.add_template("assistant");
    prompt.add_special("<|end_header_id|>");
    prompt.add_template("\n\n");
    if (options.assistant_prefix) prompt.add_user(*options.assistant_prefix);
  }
  return prompt;
}

}  // namespace guardkit::text
