#include "text/bpe_trainer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "text/split_regex.h"
#include "text/unicode.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

const char* const kLlama3ChatTemplate =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

std::vector<std::string> llama3_special_tokens(size_t count) {
  std::vector<std::string> tokens = {"<|begin_of_text|>",        "<|end_of_text|>",
                                     "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                                     "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                                     "<|start_header_id|>",      "<|end_header_id|>",
                                     "<|reserved_special_token_4|>", "<|eot_id|>"};
  for (size_t reserved = 5; tokens.size() < count; ++reserved)
    tokens.push_back("<|reserved_special_token_" + std::to_string(reserved) + "|>");
  if (count < tokens.size()) tokens.resize(count);
  return tokens;
}

namespace {

// GPT-2's bytes_to_unicode in its own order: the printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves, the other 68 get U+0100 onwards. Index i of the result: (byte, its stand-in as UTF-8). Llama 3's
// vocabulary gives ids 0..255 in this order ("!" = 0).
std::vector<std::pair<uint8_t, std::string>> byte_alphabet() {
  std::vector<std::pair<uint8_t, std::string>> out;
  auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); };
  for (int b = 0; b < 256; ++b)
    if (printable(b)) {
      std::string s;
      unicode::append_utf8(s, static_cast<char32_t>(b));
      out.emplace_back(static_cast<uint8_t>(b), s);
    }
  int extra = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable(b)) {
      std::string s;
      unicode::append_utf8(s, static_cast<char32_t>(256 + extra++));
      out.emplace_back(static_cast<uint8_t>(b), s);
    }
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Candidate {
  int64_t count;
  int32_t left, right;
  // Priority: higher count first; on a tie the smaller (left, right) ids, so the order never depends on hashing.
  bool operator<(const Candidate& other) const {
    if (count != other.count) return count < other.count;
    if (left != other.left) return left > other.left;
    return right > other.right;
  }
};

ojson added_token_json(int64_t id, const std::string& content) {
  return ojson{{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", false},
               {"rstrip", false},  {"normalized", false}, {"special", true}};
}

}  // namespace

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : options_(std::move(options)) {}

void BpeTrainer::add_text(std::string_view text, uint64_t weight) {
  if (text.empty() || weight == 0) return;
  static const SplitRegex splitter(kLlama3SplitPattern);
  const std::string valid = unicode::is_valid_utf8(text) ? std::string(text) : unicode::make_valid_utf8(text);
  std::vector<std::pair<size_t, size_t>> matches;
  splitter.find_all(valid, matches);
  for (const auto& [begin, end] : matches) word_counts_[valid.substr(begin, end - begin)] += weight;
}

TrainedBpe BpeTrainer::train() const {
  const auto alphabet = byte_alphabet();
  const size_t num_special = options_.special_tokens.size();
  if (options_.vocab_size < alphabet.size() + num_special)
    fail("BPE training: vocab_size {} cannot hold the 256 byte symbols and {} special tokens (need at least {})",
         options_.vocab_size, num_special, alphabet.size() + num_special);
  {
    std::unordered_set<std::string> seen;
    for (const auto& s : options_.special_tokens) {
      if (s.empty()) fail("BPE training: a special token is empty");
      if (!seen.insert(s).second) fail("BPE training: special token '{}' is listed twice", s);
    }
  }
  for (const auto* role : {&options_.bos_token, &options_.eos_token})
    if (!role->empty() && std::find(options_.special_tokens.begin(), options_.special_tokens.end(), *role) ==
                              options_.special_tokens.end())
      fail("BPE training: '{}' (bos/eos) is not among the special tokens", *role);
  const size_t max_regular = options_.vocab_size - num_special;

  TrainedBpe out;
  out.options = options_;
  std::unordered_map<std::string, int32_t> token_ids;
  int32_t byte_id[256];
  for (const auto& [byte, text] : alphabet) {
    byte_id[byte] = static_cast<int32_t>(out.tokens.size());
    token_ids.emplace(text, static_cast<int32_t>(out.tokens.size()));
    out.tokens.push_back(text);
  }

  // Words as symbol sequences, with their counts.
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count;
  };
  std::vector<Word> words;
  words.reserve(word_counts_.size());
  for (const auto& [text, count] : word_counts_) {
    Word w{{}, static_cast<int64_t>(count)};
    for (unsigned char c : text) w.symbols.push_back(byte_id[c]);
    words.push_back(std::move(w));
  }

  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<uint32_t>> pair_words;  // words that contained the pair (may be stale)
  for (uint32_t wi = 0; wi < words.size(); ++wi) {
    const auto& s = words[wi].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const uint64_t key = pair_key(s[i], s[i + 1]);
      pair_counts[key] += words[wi].count;
      auto& list = pair_words[key];
      if (list.empty() || list.back() != wi) list.push_back(wi);
    }
  }
  std::priority_queue<Candidate> queue;
  for (const auto& [key, count] : pair_counts)
    queue.push({count, static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu)});

  const int64_t min_count = static_cast<int64_t>(std::max<uint64_t>(options_.min_pair_frequency, 1));
  std::unordered_set<uint64_t> changed;
  while (out.tokens.size() < max_regular && !queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const uint64_t key = pair_key(top.left, top.right);
    auto found = pair_counts.find(key);
    if (found == pair_counts.end() || found->second != top.count) continue;  // stale entry
    if (top.count < min_count) break;

    const std::string merged_text = out.tokens[static_cast<size_t>(top.left)] + out.tokens[static_cast<size_t>(top.right)];
    int32_t merged;
    if (auto it = token_ids.find(merged_text); it != token_ids.end()) {
      merged = it->second;  // the same string from another pair (as tokenizers' trainer: one id, both merges)
    } else {
      merged = static_cast<int32_t>(out.tokens.size());
      token_ids.emplace(merged_text, merged);
      out.tokens.push_back(merged_text);
    }
    out.merges.emplace_back(top.left, top.right);

    changed.clear();
    const std::vector<uint32_t> affected = std::move(pair_words[key]);
    pair_words.erase(key);
    for (uint32_t wi : affected) {
      Word& w = words[wi];
      auto& s = w.symbols;
      bool present = false;
      for (size_t i = 0; i + 1 < s.size() && !present; ++i) present = s[i] == top.left && s[i + 1] == top.right;
      if (!present) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        pair_counts[k] -= w.count;
        changed.insert(k);
      }
      std::vector<int32_t> next;
      next.reserve(s.size());
      for (size_t i = 0; i < s.size();) {  // left to right, non-overlapping (as BPE applies a merge)
        if (i + 1 < s.size() && s[i] == top.left && s[i + 1] == top.right) {
          next.push_back(merged);
          i += 2;
        } else {
          next.push_back(s[i++]);
        }
      }
      s = std::move(next);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        pair_counts[k] += w.count;
        changed.insert(k);
        auto& list = pair_words[k];
        if (list.empty() || list.back() != wi) list.push_back(wi);
      }
    }
    // The queue orders candidates by (count, ids) alone, so the order of these pushes does not matter.
    for (uint64_t k : changed) {
      auto it = pair_counts.find(k);
      if (it == pair_counts.end()) continue;
      if (it->second <= 0) {
        pair_counts.erase(it);
        continue;
      }
      if (k != key) queue.push({it->second, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xffffffffu)});
    }
    pair_counts.erase(key);
  }

  for (const auto& special : options_.special_tokens) {
    if (token_ids.count(special)) fail("BPE training: special token '{}' is also an ordinary token", special);
    out.tokens.push_back(special);
  }
  out.num_special = num_special;
  return out;
}

ojson TrainedBpe::tokenizer_json() const {
  ojson vocab = ojson::object();
  for (size_t id = 0; id < first_special_id(); ++id) vocab[tokens[id]] = static_cast<int64_t>(id);
  ojson merge_list = ojson::array();
  for (const auto& [a, b] : merges)
    merge_list.push_back(tokens[static_cast<size_t>(a)] + " " + tokens[static_cast<size_t>(b)]);
  ojson added = ojson::array();
  for (size_t id = first_special_id(); id < tokens.size(); ++id) added.push_back(added_token_json(static_cast<int64_t>(id), tokens[id]));

  ojson post = ojson::array();
  post.push_back(ojson{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}});
  auto bos = std::find(tokens.begin() + static_cast<std::ptrdiff_t>(first_special_id()), tokens.end(), options.bos_token);
  if (!options.bos_token.empty() && bos != tokens.end()) {
    const int64_t bos_id = bos - tokens.begin();
    ojson special_piece = {{"SpecialToken", {{"id", options.bos_token}, {"type_id", 0}}}};
    ojson special_piece_b = {{"SpecialToken", {{"id", options.bos_token}, {"type_id", 1}}}};
    post.push_back(ojson{
        {"type", "TemplateProcessing"},
        {"single", ojson::array({special_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", ojson::array({special_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, special_piece_b,
                               {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens",
         {{options.bos_token,
           {{"id", options.bos_token}, {"ids", ojson::array({bos_id})}, {"tokens", ojson::array({options.bos_token})}}}}}});
  }

  ojson root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = std::move(added);
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       ojson::array({ojson{{"type", "Split"},
                           {"pattern", {{"Regex", std::string(kLlama3SplitPattern)}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                     ojson{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
  root["post_processor"] = {{"type", "Sequence"}, {"processors", std::move(post)}};
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", false},
                   {"vocab", std::move(vocab)},
                   {"merges", std::move(merge_list)}};
  return root;
}

ojson TrainedBpe::tokenizer_config_json() const {
  ojson decoder = ojson::object();
  for (size_t id = first_special_id(); id < tokens.size(); ++id) {
    ojson entry = added_token_json(static_cast<int64_t>(id), tokens[id]);
    entry.erase("id");
    decoder[std::to_string(id)] = std::move(entry);
  }
  ojson config;
  config["added_tokens_decoder"] = std::move(decoder);
  config["bos_token"] = options.bos_token;
  config["chat_template"] = kLlama3ChatTemplate;
  // Off (Llama 3 ships true) so decode(encode(text)) gives the text back: " ." stays " .".
  config["clean_up_tokenization_spaces"] = false;
  config["eos_token"] = options.eos_token;
  config["model_input_names"] = ojson::array({"input_ids", "attention_mask"});
  config["model_max_length"] = options.model_max_length;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  return config;
}

ojson TrainedBpe::special_tokens_map_json() const {
  auto entry = [](const std::string& content) {
    return ojson{{"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}};
  };
  ojson map = ojson::object();
  if (!options.bos_token.empty()) map["bos_token"] = entry(options.bos_token);
  if (!options.eos_token.empty()) map["eos_token"] = entry(options.eos_token);
  return map;
}

void TrainedBpe::save(const fs::path& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory ({})", dir.string(), ec.message());
  write_file_atomic(dir / "tokenizer.json", tokenizer_json().dump(2) + "\n");
  write_file_atomic(dir / "tokenizer_config.json", tokenizer_config_json().dump(2) + "\n");
  write_file_atomic(dir / "special_tokens_map.json", special_tokens_map_json().dump(2) + "\n");
}

}  // namespace guardkit::text
