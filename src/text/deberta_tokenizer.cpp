#include "text/deberta_tokenizer.h"
#include "text/unicode.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view strip_left(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  return s;
}
std::string_view strip_right(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  return s;
}

json read_json_file(const fs::path& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
}

// A special-token entry is either "text" or {"content": "text", ...}.
std::optional<std::string> token_content(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return std::nullopt;
}

void read_special_tokens(const json& root, DebertaTokenizerConfig& config) {
  const std::pair<const char*, std::string*> fields[] = {
      {"cls_token", &config.cls_token}, {"sep_token", &config.sep_token},   {"pad_token", &config.pad_token},
      {"unk_token", &config.unk_token}, {"mask_token", &config.mask_token}, {"bos_token", &config.bos_token},
      {"eos_token", &config.eos_token}};
  for (const auto& [key, target] : fields)
    if (root.contains(key))
      if (auto content = token_content(root[key])) *target = *content;
  if (root.contains("additional_special_tokens") && root["additional_special_tokens"].is_array()) {
    config.additional_special_tokens.clear();
    for (const auto& token : root["additional_special_tokens"])
      if (auto content = token_content(token)) config.additional_special_tokens.push_back(*content);
  }
}

void read_tokenizer_config(const fs::path& path, DebertaTokenizerConfig& config) {
  const json root = read_json_file(path);
  if (!root.is_object()) fail("{}: expected a JSON object", path.string());
  try {
    read_special_tokens(root, config);
    if (root.contains("do_lower_case") && root["do_lower_case"].is_boolean())
      config.do_lower_case = root["do_lower_case"].get<bool>();
    if (root.contains("clean_up_tokenization_spaces") && root["clean_up_tokenization_spaces"].is_boolean())
      config.clean_up_tokenization_spaces = root["clean_up_tokenization_spaces"].get<bool>();
    if (root.value("split_by_punct", false))
      fail("{}: split_by_punct=true is not supported by guardkit's DeBERTa tokenizer", path.string());
    if (root.contains("added_tokens_decoder") && root["added_tokens_decoder"].is_object()) {
      for (const auto& [key, value] : root["added_tokens_decoder"].items()) {
        DebertaAddedToken token;
        try {
          token.id = std::stoi(key);
        } catch (const std::exception&) {
          fail("{}: added_tokens_decoder key \"{}\" is not an id", path.string(), key);
        }
        auto content = token_content(value);
        if (!content || content->empty()) fail("{}: added_tokens_decoder[{}] has no content", path.string(), key);
        token.content = *content;
        token.special = value.value("special", true);
        token.lstrip = value.value("lstrip", false);
        token.rstrip = value.value("rstrip", false);
        config.added_tokens.push_back(std::move(token));
      }
    }
  } catch (const json::exception& e) {
    fail("{}: unexpected content ({})", path.string(), e.what());
  }
}

void read_added_tokens_json(const fs::path& path, DebertaTokenizerConfig& config) {
  const json root = read_json_file(path);
  if (!root.is_object()) fail("{}: expected a JSON object of token -> id", path.string());
  for (const auto& [content, id] : root.items()) {
    if (!id.is_number_integer()) fail("{}: id of \"{}\" is not an integer", path.string(), content);
    if (content.empty()) fail("{}: empty added token", path.string());
    const bool known = std::any_of(config.added_tokens.begin(), config.added_tokens.end(),
                                   [&](const DebertaAddedToken& t) { return t.content == content; });
    if (!known) config.added_tokens.push_back(DebertaAddedToken{content, id.get<int32_t>(), false, false, false});
  }
}

// transformers' clean_up_tokenization.
std::string clean_up_tokenization(std::string text) {
  const std::pair<std::string_view, std::string_view> rules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : rules) {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (true) {
      const size_t hit = text.find(from, pos);
      if (hit == std::string::npos) break;
      out.append(text, pos, hit - pos).append(to);
      pos = hit + from.size();
    }
    out.append(text, pos);
    text = std::move(out);
  }
  return text;
}

char32_t lower_codepoint(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  if (c >= 0x100 && c <= 0x137) return (c % 2 == 0) ? c + 1 : c;
  if (c >= 0x139 && c <= 0x148) return (c % 2 == 1) ? c + 1 : c;
  if (c >= 0x14A && c <= 0x177) return (c % 2 == 0) ? c + 1 : c;
  if (c == 0x178) return 0xFF;
  if (c >= 0x179 && c <= 0x17E) return (c % 2 == 1) ? c + 1 : c;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x460 && c <= 0x4FF && c != 0x482 && !(c >= 0x483 && c <= 0x489)) {
    if (c >= 0x4C1 && c <= 0x4CE) return (c % 2 == 1) ? c + 1 : c;
    if (c == 0x4C0) return 0x4CF;
    return (c % 2 == 0) ? c + 1 : c;
  }
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if (c >= 0x1E00 && c <= 0x1EFF && c != 0x1E9E) return (c % 2 == 0) ? c + 1 : c;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;  // full-width A-Z
  return c;
}

}  // namespace

std::string unicode_lower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    size_t length = 0;
    char32_t c = 0;
    if (decode_utf8_char(text, &length, &c)) {
      if (c == 0x130) out.append("i\xCC\x87");  // İ -> i + combining dot, as Python does
      else unicode::append_utf8(out, lower_codepoint(c));
    } else {
      out.append(text.substr(0, length));  // malformed bytes stay for SentencePiece to replace
    }
    text.remove_prefix(length);
  }
  return out;
}

DebertaV2Tokenizer::DebertaV2Tokenizer(UnigramModel model, DebertaTokenizerConfig config, const std::string& source)
    : model_(std::move(model)), config_(std::move(config)) {
  int32_t next_id = static_cast<int32_t>(model_.size());
  for (const DebertaAddedToken& token : config_.added_tokens) {
    if (token.id < 0) fail("{}: added token \"{}\" has a negative id {}", source, token.content, token.id);
    next_id = std::max(next_id, token.id + 1);
  }
  auto add = [&](DebertaAddedToken token) {
    if (token.content.empty() || added_index_.count(token.content)) return;
    added_index_[token.content] = added_.size();
    added_by_id_[token.id] = token.content;
    added_.push_back(std::move(token));
  };
  for (const DebertaAddedToken& token : config_.added_tokens) add(token);
  // Special tokens not registered yet: their vocabulary id, else the next free id (as HF's _add_tokens).
  std::vector<std::string> specials = {config_.bos_token, config_.eos_token, config_.unk_token, config_.sep_token,
                                       config_.pad_token, config_.cls_token, config_.mask_token};
  specials.insert(specials.end(), config_.additional_special_tokens.begin(), config_.additional_special_tokens.end());
  for (const std::string& content : specials) {
    if (content.empty() || added_index_.count(content)) continue;
    const auto id = model_.find_piece(content);
    add(DebertaAddedToken{content, id ? *id : next_id++, true, false, false});
  }
  // Longest first, so the first match at a position is the longest.
  std::stable_sort(added_.begin(), added_.end(),
                   [](const DebertaAddedToken& a, const DebertaAddedToken& b) { return a.content.size() > b.content.size(); });
  added_index_.clear();
  for (size_t i = 0; i < added_.size(); ++i) {
    added_index_[added_[i].content] = i;
    added_first_byte_[static_cast<uint8_t>(added_[i].content[0])] = true;
  }
  vocab_size_ = static_cast<size_t>(next_id);
  for (const auto& [id, content] : added_by_id_) vocab_size_ = std::max(vocab_size_, static_cast<size_t>(id) + 1);

  cls_id_ = require_id(config_.cls_token, "cls_token", source);
  sep_id_ = require_id(config_.sep_token, "sep_token", source);
  unk_id_ = require_id(config_.unk_token, "unk_token", source);
  mask_id_ = require_id(config_.mask_token, "mask_token", source);
  if (auto pad = token_to_id(config_.pad_token)) pad_id_ = *pad;
  for (const std::string& content : specials)
    if (auto id = token_to_id(content); id && std::find(special_ids_.begin(), special_ids_.end(), *id) == special_ids_.end())
      special_ids_.push_back(*id);
}

int32_t DebertaV2Tokenizer::require_id(const std::string& token, const char* role, const std::string& source) const {
  auto id = token_to_id(token);
  if (!id) fail("{}: {} \"{}\" has no id", source, role, token);
  return *id;
}

std::unique_ptr<DebertaV2Tokenizer> DebertaV2Tokenizer::from_dir(const fs::path& dir) {
  fs::path spm_path = dir / "spm.model";
  if (!fs::exists(spm_path)) spm_path = dir / "tokenizer.model";
  if (!fs::exists(spm_path)) fail("{}: no spm.model or tokenizer.model in this directory", dir.string());
  DebertaTokenizerConfig config;
  if (fs::exists(dir / "tokenizer_config.json")) read_tokenizer_config(dir / "tokenizer_config.json", config);
  if (fs::exists(dir / "special_tokens_map.json")) {
    const json root = read_json_file(dir / "special_tokens_map.json");
    if (!root.is_object()) fail("{}: expected a JSON object", (dir / "special_tokens_map.json").string());
    read_special_tokens(root, config);
  }
  if (fs::exists(dir / "added_tokens.json")) read_added_tokens_json(dir / "added_tokens.json", config);
  return std::make_unique<DebertaV2Tokenizer>(UnigramModel::load(spm_path), std::move(config), spm_path.string());
}

std::unique_ptr<DebertaV2Tokenizer> DebertaV2Tokenizer::from_tokenizer_json(const fs::path& path) {
  bool lowercase = false;
  UnigramModel model = UnigramModel::from_tokenizer_json(path, &lowercase);
  DebertaTokenizerConfig config;
  const fs::path config_path = path.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path)) read_tokenizer_config(config_path, config);
  config.do_lower_case = config.do_lower_case || lowercase;
  // added_tokens of tokenizer.json: split on all of them, as the fast tokenizer does.
  const json root = read_json_file(path);
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const auto& token : root["added_tokens"]) {
      if (!token.is_object() || !token.contains("content") || !token["content"].is_string() ||
          !token.contains("id") || !token["id"].is_number_integer())
        fail("{}: added_tokens entries need \"content\" and \"id\"", path.string());
      DebertaAddedToken added{token["content"].get<std::string>(), token["id"].get<int32_t>(), token.value("special", true),
                       token.value("lstrip", false), token.value("rstrip", false)};
      if (added.content.empty()) fail("{}: empty added token", path.string());
      const bool known = std::any_of(config.added_tokens.begin(), config.added_tokens.end(),
                                     [&](const DebertaAddedToken& t) { return t.content == added.content; });
      if (!known) config.added_tokens.push_back(std::move(added));
    }
  }
  return std::make_unique<DebertaV2Tokenizer>(std::move(model), std::move(config), path.string());
}

void DebertaV2Tokenizer::split_added_tokens(std::string_view text, bool parse_special,
                                            std::vector<Chunk>& chunks) const {
  chunks.clear();
  if (!parse_special || added_.empty()) {
    chunks.push_back({text, -1});
    return;
  }
  size_t start = 0;  // start of the pending ordinary text
  size_t pos = 0;
  while (pos < text.size()) {
    const DebertaAddedToken* match = nullptr;
    if (added_first_byte_[static_cast<uint8_t>(text[pos])])
      for (const DebertaAddedToken& token : added_)  // longest first
        if (text.substr(pos).starts_with(token.content)) {
          match = &token;
          break;
        }
    if (!match) {
      ++pos;
      continue;
    }
    chunks.push_back({text.substr(start, pos - start), -1});
    chunks.push_back({std::string_view(text.data() + pos, match->content.size()), match->id});
    pos += match->content.size();
    start = pos;
  }
  chunks.push_back({text.substr(start), -1});
  // lstrip/rstrip of added tokens eat the whitespace next to them.
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i].added_id < 0) continue;
    const DebertaAddedToken& token = added_[added_index_.at(std::string(chunks[i].text))];
    if (token.rstrip && i + 1 < chunks.size() && chunks[i + 1].added_id < 0)
      chunks[i + 1].text = strip_left(chunks[i + 1].text);
    if (token.lstrip && i > 0 && chunks[i - 1].added_id < 0) chunks[i - 1].text = strip_right(chunks[i - 1].text);
  }
}

void DebertaV2Tokenizer::encode_chunks(std::string_view text, bool parse_special, std::vector<int32_t>& ids,
                                       std::vector<std::string>* pieces) const {
  thread_local std::vector<Chunk> chunks;
  split_added_tokens(text, parse_special, chunks);
  for (const Chunk& chunk : chunks) {
    if (chunk.added_id >= 0) {
      ids.push_back(chunk.added_id);
      if (pieces) pieces->emplace_back(chunk.text);
      continue;
    }
    if (chunk.text.empty()) continue;
    if (config_.do_lower_case) model_.encode(unicode_lower(chunk.text), ids, pieces);
    else model_.encode(chunk.text, ids, pieces);
  }
}

std::vector<int32_t> DebertaV2Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> ids;
  encode_chunks(text, parse_special, ids, nullptr);
  return ids;
}

std::vector<std::string> DebertaV2Tokenizer::tokenize(std::string_view text, bool parse_special) const {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  encode_chunks(text, parse_special, ids, &pieces);
  return pieces;
}

Encoding DebertaV2Tokenizer::encode_for_model(std::string_view text, std::optional<std::string_view> text_pair,
                                              size_t max_length, Truncation truncation, bool parse_special) const {
  std::vector<int32_t> a = encode(text, parse_special);
  std::vector<int32_t> b;
  const bool pair = text_pair.has_value();
  if (pair) b = encode(*text_pair, parse_special);
  const size_t num_special = pair ? 3 : 2;

  // transformers' truncate_sequences (truncation_side "right", stride 0).
  if (max_length > 0 && truncation != Truncation::None && a.size() + b.size() + num_special > max_length) {
    const size_t to_remove = a.size() + b.size() + num_special - max_length;
    auto cannot = [&](const char* what) {
      fail("cannot truncate to max_length {}: {} (first sequence {} tokens, second {}, {} special tokens)",
           max_length, what, a.size(), b.size(), num_special);
    };
    if (truncation == Truncation::OnlyFirst || (truncation == Truncation::LongestFirst && !pair)) {
      if (a.size() <= to_remove) cannot("the first sequence is too short to remove enough tokens");
      a.resize(a.size() - to_remove);
    } else if (truncation == Truncation::LongestFirst) {
      if (a.size() + b.size() < to_remove) cannot("the two sequences are too short");
      for (size_t i = 0; i < to_remove; ++i) {
        if (a.size() > b.size()) a.pop_back();
        else b.pop_back();
      }
    } else if (truncation == Truncation::OnlySecond) {
      if (!pair) cannot("only_second truncation needs a second sequence");
      if (b.size() <= to_remove) cannot("the second sequence is too short to remove enough tokens");
      b.resize(b.size() - to_remove);
    }
  }

  Encoding encoding;
  encoding.ids.reserve(a.size() + b.size() + num_special);
  encoding.ids.push_back(cls_id_);
  encoding.ids.insert(encoding.ids.end(), a.begin(), a.end());
  encoding.ids.push_back(sep_id_);
  encoding.type_ids.assign(encoding.ids.size(), 0);
  if (pair) {
    encoding.ids.insert(encoding.ids.end(), b.begin(), b.end());
    encoding.ids.push_back(sep_id_);
    encoding.type_ids.resize(encoding.ids.size(), 1);
  }
  encoding.attention_mask.assign(encoding.ids.size(), 1);
  return encoding;
}

std::string DebertaV2Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  // PreTrainedTokenizer._decode: tokens (special ones dropped when asked); added tokens that are not special stand
  // alone; the rest goes through SPMTokenizer.decode, which keeps special tokens out of SentencePiece.
  auto is_special_id = [&](int32_t id) {
    return std::find(special_ids_.begin(), special_ids_.end(), id) != special_ids_.end();
  };
  auto spm_decode = [&](const std::vector<std::string>& tokens) {
    std::string out;
    std::vector<std::string> current;
    bool prev_is_special = false;
    for (const std::string& token : tokens) {
      const auto it = added_index_.find(token);
      if (it != added_index_.end() && added_[it->second].special) {
        if (!prev_is_special) out.push_back(' ');
        out += model_.decode_pieces(current) + token;
        prev_is_special = true;
        current.clear();
      } else {
        current.push_back(token);
        prev_is_special = false;
      }
    }
    out += model_.decode_pieces(current);
    return std::string(strip_right(strip_left(out)));
  };

  std::vector<std::string> sub_texts;
  std::vector<std::string> current;
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= vocab_size_)
      fail("cannot decode id {}: outside the vocabulary of {} tokens", id, vocab_size_);
    if (skip_special_tokens && is_special_id(id)) continue;
    const std::string token = id_to_token(id);
    const auto it = added_index_.find(token);
    const bool legacy_added = it != added_index_.end() && !added_[it->second].special;
    if (legacy_added) {
      if (!current.empty()) {
        std::string text = spm_decode(current);
        if (!text.empty()) sub_texts.push_back(std::move(text));
        current.clear();
      }
      sub_texts.push_back(token);
    } else {
      current.push_back(token);
    }
  }
  if (!current.empty()) sub_texts.push_back(spm_decode(current));
  std::string text;
  for (size_t i = 0; i < sub_texts.size(); ++i) {
    if (i) text.push_back(' ');
    text += sub_texts[i];
  }
  return config_.clean_up_tokenization_spaces ? clean_up_tokenization(std::move(text)) : text;
}

std::optional<int32_t> DebertaV2Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_index_.find(std::string(token)); it != added_index_.end()) return added_[it->second].id;
  return model_.find_piece(token);
}

std::string DebertaV2Tokenizer::id_to_token(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return it->second;
  if (model_.valid(id)) return model_.id_to_piece(id);
  return "";
}

}  // namespace guardkit::text
