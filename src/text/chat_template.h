// A model's own chat template, as transformers' apply_chat_template renders it: the Jinja `chat_template` of the
// checkpoint's tokenizer_config.json (a string, or the list-of-named-templates form), or chat_template.jinja /
// additional_chat_templates/NAME.jinja next to it as newer transformers save it, with the tokenizer's special
// tokens (bos_token, eos_token, ...) in the context.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/chat_format.h"
#include "text/jinja.h"
#include "text/prompt.h"

namespace guardkit::text {

struct ChatTemplateInput {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // OpenAI-style [{role, content, ...}]
  bool add_generation_prompt = false;
  // Everything else the template reads (tools, documents, enable_thinking, date_string, ...); these override the
  // defaults (tools and documents None, the special tokens).
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // `special_tokens`: the context variables transformers passes from the tokenizer's special_tokens_map
  // (bos_token, eos_token, ...); `special_texts`: the text of every special token the tokenizer matches, which
  // render_prompt() keeps special only where the template itself wrote them.
  ChatTemplate(std::string source, nlohmann::ordered_json special_tokens, std::vector<std::string> special_texts);

  // The checkpoint's template from a model / tokenizer directory; `name` picks one of several named templates
  // ("" = "default"). nullopt when the checkpoint ships none. Throws guardkit::Error for a template that does not
  // parse or a name that is not there.
  static std::optional<ChatTemplate> from_dir(const std::filesystem::path& dir, const std::string& name = "");
  // A template file given by the user, with the special tokens of the tokenizer in `tokenizer_dir`.
  static ChatTemplate from_file(const std::filesystem::path& template_file, const std::filesystem::path& tokenizer_dir);

  // apply_chat_template(tokenize=False). Throws jinja::Error (type TemplateError for the template's own
  // raise_exception, UndefinedError, TypeError, TemplateLimitError, ...).
  std::string render(const ChatTemplateInput& input, const jinja::RenderOptions& options = {}) const;

  // The same text as segments for the tokenizer: a special token counts as special only where the template wrote
  // it (its literals, bos_token, ...); special-token text inside messages or variables becomes plain text. (Hugging
  // Face tokenizes the whole rendered string with special tokens parsed, so a user who types "<|im_end|>" can end
  // their turn early; guardkit does not let them.)
  RenderedPrompt render_prompt(const ChatTemplateInput& input, const jinja::RenderOptions& options = {}) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const jinja::Template> template_;
  nlohmann::ordered_json special_tokens_;
  std::vector<std::string> special_texts_;  // longest first
  bool special_first_byte_[256] = {};      // the first bytes of special_texts_, to skip most positions fast
  jinja::Value context(const ChatTemplateInput& input, bool defang) const;
  const std::string* special_at(const std::string& text, size_t at) const;  // the special token starting there
  [[noreturn]] static void raise_input_error(const std::string& message);
};

class Tokenizer;

// How a local checkpoint's prompts are built from messages: its own chat template when it ships one, else the
// built-in Llama 3 format (chat_format.h) for a tokenizer with the Llama 3 header tokens; any other checkpoint is
// refused, since a prompt in the wrong format gives plausible-looking output instead of an error.
class ChatPromptFormat {
 public:
  // The format of the checkpoint in `model_dir` (its tokenizer already loaded). Throws guardkit::Error naming the
  // checkpoint when it has no chat template and is not Llama 3, or when its template does not parse.
  static ChatPromptFormat for_checkpoint(const std::filesystem::path& model_dir, const Tokenizer& tokenizer);
  static ChatPromptFormat llama3();

  // With a template, options.bos_token is ignored (the template writes what the model expects) and an
  // assistant_prefix follows the generation prompt. A conversation the template refuses (its raise_exception)
  // throws guardkit::Error with the template's message.
  RenderedPrompt render(const std::vector<ChatMessage>& messages, const ChatFormatOptions& options = {}) const;
  // "the chat template of DIR" or "the built-in Llama 3 format", for logs and errors.
  const std::string& description() const { return description_; }

 private:
  std::shared_ptr<const ChatTemplate> template_;  // null: the Llama 3 format
  std::string description_;
};

}  // namespace guardkit::text
