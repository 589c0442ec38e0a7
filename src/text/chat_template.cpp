#include "text/chat_template.h"

#include <algorithm>

#include "text/tokenizer.h"
#include "text/unicode.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

// A plain (sorted) json: tokenizer.json's vocabulary has 10^5 keys, too many for ordered_json's linear inserts.
nlohmann::json read_json_file(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
}

// The special tokens transformers passes to templates: special_tokens_map's entries, each a string or an
// AddedToken object {"content": ...}; additional_special_tokens as a list.
ojson special_token_variables(const fs::path& dir) {
  ojson tokens = ojson::object();
  auto take = [&](const nlohmann::json& config) {
    if (!config.is_object()) return;
    for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      if (tokens.contains(key) || !config.contains(key)) continue;
      const nlohmann::json& v = config[key];
      if (v.is_string()) tokens[key] = v.get<std::string>();
      if (v.is_object() && v.contains("content") && v["content"].is_string()) tokens[key] = v["content"].get<std::string>();
    }
    if (!tokens.contains("additional_special_tokens") && config.contains("additional_special_tokens") &&
        config["additional_special_tokens"].is_array()) {
      ojson list = ojson::array();
      for (const nlohmann::json& v : config["additional_special_tokens"]) {
        if (v.is_string()) list.push_back(v.get<std::string>());
        if (v.is_object() && v.contains("content") && v["content"].is_string()) list.push_back(v["content"].get<std::string>());
      }
      tokens["additional_special_tokens"] = list;
    }
  };
  if (fs::exists(dir / "tokenizer_config.json")) take(read_json_file(dir / "tokenizer_config.json"));
  if (fs::exists(dir / "special_tokens_map.json")) take(read_json_file(dir / "special_tokens_map.json"));
  return tokens;
}

// Text of every token the tokenizer treats as special: tokenizer.json added_tokens and tokenizer_config.json
// added_tokens_decoder entries marked "special", plus the special_tokens_map values.
std::vector<std::string> special_token_texts(const fs::path& dir, const ojson& variables) {
  std::vector<std::string> texts;
  auto add_marked = [&](const nlohmann::json& entries) {
    auto one = [&](const nlohmann::json& token) {
      if (token.is_object() && token.value("special", false) && token.contains("content") && token["content"].is_string())
        texts.push_back(token["content"]);
    };
    if (entries.is_array()) for (const nlohmann::json& token : entries) one(token);
    if (entries.is_object()) for (const auto& [id, token] : entries.items()) one(token);
  };
  if (fs::exists(dir / "tokenizer.json")) {
    const nlohmann::json tokenizer = read_json_file(dir / "tokenizer.json");
    if (tokenizer.contains("added_tokens")) add_marked(tokenizer["added_tokens"]);
  }
  if (fs::exists(dir / "tokenizer_config.json")) {
    const nlohmann::json config = read_json_file(dir / "tokenizer_config.json");
    if (config.contains("added_tokens_decoder")) add_marked(config["added_tokens_decoder"]);
  }
  for (const auto& [key, value] : variables.items()) {
    if (value.is_string()) texts.push_back(value);
    if (value.is_array())
      for (const ojson& v : value) texts.push_back(v);
  }
  return texts;
}

// A private-use noncharacter that marks defanged special-token text in untrusted strings (see render_prompt).
constexpr std::string_view kMark = "\xf4\x8f\xbf\xbe";  // U+10FFFE

std::string read_template_file(const fs::path& path) {
  std::string text = read_file(path);
  if (!unicode::is_valid_utf8(text)) fail("{}: the chat template is not valid UTF-8", path.string());
  return text;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, ojson special_tokens, std::vector<std::string> special_texts)
    : source_(std::move(source)), special_tokens_(std::move(special_tokens)), special_texts_(std::move(special_texts)) {
  template_ = std::make_shared<const jinja::Template>(source_);
  special_texts_.erase(std::remove(special_texts_.begin(), special_texts_.end(), ""), special_texts_.end());
  std::sort(special_texts_.begin(), special_texts_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size() || (a.size() == b.size() && a < b); });
  special_texts_.erase(std::unique(special_texts_.begin(), special_texts_.end()), special_texts_.end());
  for (const std::string& special : special_texts_) special_first_byte_[static_cast<unsigned char>(special[0])] = true;
}

std::optional<ChatTemplate> ChatTemplate::from_dir(const fs::path& dir, const std::string& name) {
  if (!fs::is_directory(dir)) fail("{}: not a directory (expected a Hugging Face model or tokenizer directory)", dir.string());
  const ojson tokens = special_token_variables(dir);
  auto make = [&](std::string source, const std::string& where) {
    try {
      return ChatTemplate(std::move(source), tokens, special_token_texts(dir, tokens));
    } catch (const jinja::Error& e) {
      fail("{}: the chat template does not parse: {}: {}", where, e.type(), e.what());
    }
  };
  // Newer transformers save templates as files; they take precedence over tokenizer_config.json.
  const std::string wanted = name.empty() ? "default" : name;
  if (name.empty() && fs::exists(dir / "chat_template.jinja"))
    return make(read_template_file(dir / "chat_template.jinja"), (dir / "chat_template.jinja").string());
  if (!name.empty() && fs::exists(dir / "additional_chat_templates" / (name + ".jinja"))) {
    const fs::path file = dir / "additional_chat_templates" / (name + ".jinja");
    return make(read_template_file(file), file.string());
  }
  const fs::path config_path = dir / "tokenizer_config.json";
  if (!fs::exists(config_path)) {
    if (!name.empty()) fail("{}: no chat template named '{}' (no tokenizer_config.json)", dir.string(), name);
    return std::nullopt;
  }
  const nlohmann::json config = read_json_file(config_path);
  if (!config.is_object() || !config.contains("chat_template") || config["chat_template"].is_null()) {
    if (!name.empty()) fail("{}: no chat template named '{}'", config_path.string(), name);
    return std::nullopt;
  }
  const nlohmann::json& entry = config["chat_template"];
  if (entry.is_string()) {
    if (!name.empty() && name != "default")
      fail("{}: has a single chat template, not one named '{}'", config_path.string(), name);
    return make(entry.get<std::string>(), config_path.string());
  }
  if (!entry.is_array()) fail("{}: \"chat_template\" must be a string or a list of {{name, template}}", config_path.string());
  std::vector<std::string> names;
  for (const nlohmann::json& named : entry) {
    if (!named.is_object() || !named.contains("name") || !named["name"].is_string() || !named.contains("template") ||
        !named["template"].is_string())
      fail("{}: every entry of \"chat_template\" must be {{\"name\": ..., \"template\": ...}}", config_path.string());
    names.push_back(named["name"]);
    if (names.back() == wanted) return make(named["template"].get<std::string>(), config_path.string() + " (" + wanted + ")");
  }
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  if (name.empty())
    fail("{}: several chat templates and none named 'default'; pick one by name (available: {})", config_path.string(), list);
  fail("{}: no chat template named '{}' (available: {})", config_path.string(), name, list);
}

ChatTemplate ChatTemplate::from_file(const fs::path& template_file, const fs::path& tokenizer_dir) {
  if (!fs::is_directory(tokenizer_dir)) fail("{}: not a directory (expected a Hugging Face tokenizer directory)", tokenizer_dir.string());
  const ojson tokens = special_token_variables(tokenizer_dir);
  try {
    return ChatTemplate(read_template_file(template_file), tokens, special_token_texts(tokenizer_dir, tokens));
  } catch (const jinja::Error& e) {
    fail("{}: the chat template does not parse: {}: {}", template_file.string(), e.type(), e.what());
  }
}

const std::string* ChatTemplate::special_at(const std::string& text, size_t at) const {
  if (!special_first_byte_[static_cast<unsigned char>(text[at])]) return nullptr;
  for (const std::string& special : special_texts_)  // longest first
    if (text.compare(at, special.size(), special) == 0) return &special;
  return nullptr;
}

jinja::Value ChatTemplate::context(const ChatTemplateInput& input, bool defang) const {
  if (!input.messages.is_array()) raise_input_error("\"messages\" must be a list");
  if (!input.variables.is_object()) raise_input_error("\"variables\" must be an object");
  // Untrusted strings with every special-token text broken by kMark (and kMark itself doubled), so that the only
  // special-token text left in the rendered output is what the template wrote.
  std::function<ojson(const ojson&)> mark = [&](const ojson& v) -> ojson {
    if (v.is_string()) {
      std::string s = v.get<std::string>(), out;
      for (size_t i = 0; i < s.size();) {
        if (s.compare(i, kMark.size(), kMark) == 0) {
          out += kMark;
          out += kMark;
          i += kMark.size();
          continue;
        }
        const std::string* special = special_at(s, i);
        if (special) {
          const size_t first = unicode::valid_utf8_length(*special, 0);
          out += special->substr(0, first);
          out += kMark;
          out += special->substr(first);
          i += special->size();
          continue;
        }
        out += s[i++];
      }
      return out;
    }
    if (v.is_array()) {
      ojson out = ojson::array();
      for (const ojson& item : v) out.push_back(mark(item));
      return out;
    }
    if (v.is_object()) {
      ojson out = ojson::object();
      for (const auto& [k, item] : v.items()) out[k] = mark(item);
      return out;
    }
    return v;
  };
  ojson vars = ojson::object();
  vars["messages"] = defang ? mark(input.messages) : input.messages;
  vars["tools"] = nullptr;
  vars["documents"] = nullptr;
  vars["add_generation_prompt"] = input.add_generation_prompt;
  for (const auto& [k, v] : special_tokens_.items()) vars[k] = v;
  for (const auto& [k, v] : input.variables.items()) vars[k] = defang ? mark(v) : v;
  return jinja::Value::from_json(vars);
}

void ChatTemplate::raise_input_error(const std::string& message) { jinja::raise("InputError", message); }

std::string ChatTemplate::render(const ChatTemplateInput& input, const jinja::RenderOptions& options) const {
  return template_->render(context(input, false), options);
}

RenderedPrompt ChatTemplate::render_prompt(const ChatTemplateInput& input, const jinja::RenderOptions& options) const {
  const std::string text = template_->render(context(input, true), options);
  RenderedPrompt prompt;
  std::string plain;
  auto flush = [&] {
    prompt.add_user(plain);
    plain.clear();
  };
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, kMark.size(), kMark) == 0) {  // a defang mark: drop it; a doubled one was a real U+10FFFE
      i += kMark.size();
      if (text.compare(i, kMark.size(), kMark) == 0) {
        plain += kMark;
        i += kMark.size();
      }
      continue;
    }
    const std::string* special = special_at(text, i);
    if (special) {
      flush();
      prompt.add_special(*special);
      i += special->size();
      continue;
    }
    plain += text[i++];
  }
  flush();
  return prompt;
}

ChatPromptFormat ChatPromptFormat::llama3() {
  ChatPromptFormat format;
  format.description_ = "the built-in Llama 3 format";
  return format;
}

ChatPromptFormat ChatPromptFormat::for_checkpoint(const fs::path& model_dir, const Tokenizer& tokenizer) {
  if (auto found = ChatTemplate::from_dir(model_dir)) {
    ChatPromptFormat format;
    format.template_ = std::make_shared<const ChatTemplate>(std::move(*found));
    format.description_ = "the chat template of " + model_dir.string();
    return format;
  }
  if (tokenizer.token_to_id("<|start_header_id|>") && tokenizer.token_to_id("<|end_header_id|>") &&
      tokenizer.token_to_id("<|eot_id|>"))
    return llama3();
  fail("{}: the checkpoint has no chat template (no \"chat_template\" in tokenizer_config.json, no "
       "chat_template.jinja) and its tokenizer is not Llama 3's, so its prompt format is unknown; add the model's "
       "chat template to tokenizer_config.json", model_dir.string());
}

RenderedPrompt ChatPromptFormat::render(const std::vector<ChatMessage>& messages, const ChatFormatOptions& options) const {
  if (!template_) return render_llama3_chat(messages, options);
  ChatTemplateInput input;
  for (const ChatMessage& m : messages) input.messages.push_back({{"role", m.role}, {"content", m.content}});
  input.add_generation_prompt = options.add_generation_prompt || options.assistant_prefix.has_value();
  RenderedPrompt prompt;
  try {
    prompt = template_->render_prompt(input);
  } catch (const jinja::Error& e) {
    fail("{} refused the conversation: {}: {}", description_, e.type(), e.what());
  }
  if (options.assistant_prefix) prompt.add_user(*options.assistant_prefix);
  return prompt;
}

}  // namespace guardkit::text
