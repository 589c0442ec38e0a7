// Trains a byte-level BPE vocabulary the way Llama 3's tokenizer is built, and writes it as Hugging Face files
// (tokenizer.json, tokenizer_config.json with the Llama 3 chat template, special_tokens_map.json) that
// load_tokenizer, transformers and tokenizers all read.
//
//   text --Llama 3 split regex--> words --bytes as GPT-2 printable stand-ins--> symbols
//   repeat: merge the most frequent adjacent pair (ties: smallest left id, then smallest right id) into a new token
//   until the vocabulary (256 byte symbols + merges + special tokens) reaches vocab_size or no pair is frequent enough.
// Every one of the 256 byte symbols is always in the vocabulary, so any input (emoji, any script, invalid UTF-8 read
// as U+FFFD, as the tokenizer does) encodes and decodes back.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace guardkit::text {

// Llama 3's first special tokens in Llama 3's order (<|begin_of_text|>, <|end_of_text|>, reserved 0-3,
// <|start_header_id|>, <|end_header_id|>, reserved 4, <|eot_id|>), then reserved 5.. until `count` tokens.
std::vector<std::string> llama3_special_tokens(size_t count = 16);

struct BpeTrainerOptions {
  size_t vocab_size = 4000;         // every id: 256 bytes + merged tokens + special tokens
  uint64_t min_pair_frequency = 2;  // stop merging when the most frequent pair occurs fewer times
  std::vector<std::string> special_tokens = llama3_special_tokens();
  std::string bos_token = "<|begin_of_text|>";  // written to the post-processor and tokenizer_config.json
  std::string eos_token = "<|eot_id|>";         // tokenizer_config.json's eos (the chat turn end, as Llama 3 instruct)
  int64_t model_max_length = 2048;
};

struct TrainedBpe {
  std::vector<std::string> tokens;              // by id: byte-level token text (GPT-2 stand-ins); specials last
  std::vector<std::pair<int32_t, int32_t>> merges;  // rank order: the ids merged (result: tokens[a] + tokens[b])
  size_t num_special = 0;                       // the last num_special ids are the special tokens
  BpeTrainerOptions options;

  size_t size() const { return tokens.size(); }
  size_t first_special_id() const { return tokens.size() - num_special; }
  // tokenizer.json (model BPE, Llama 3 Split regex + ByteLevel pre-tokenizer and decoder, BOS post-processor).
  nlohmann::ordered_json tokenizer_json() const;
  // tokenizer_config.json: added_tokens_decoder, bos/eos, the Llama 3 chat template, no clean-up of spaces.
  nlohmann::ordered_json tokenizer_config_json() const;
  nlohmann::ordered_json special_tokens_map_json() const;
  // Writes the three files into `dir` (created when missing), each through a temporary file and a rename.
  void save(const std::filesystem::path& dir) const;
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainerOptions options = {});

  // Pre-splits `text` (invalid UTF-8 read as U+FFFD) and counts its words, `weight` times each.
  void add_text(std::string_view text, uint64_t weight = 1);
  size_t distinct_words() const { return word_counts_.size(); }

  // The merges and vocabulary; throws guardkit::Error when vocab_size cannot hold the bytes and special tokens.
  // Deterministic: the same texts (in any order) give the same result.
  TrainedBpe train() const;

 private:
  BpeTrainerOptions options_;
  std::map<std::string, uint64_t> word_counts_;  // ordered, so training never depends on hash order
};

// The Llama 3 chat template as Llama 3 tokenizer_config.json files carry it (bos_token, then per message
// <|start_header_id|>role<|end_header_id|>\n\n content|trim <|eot_id|>, then the assistant header when asked).
extern const char* const kLlama3ChatTemplate;

}  // namespace guardkit::text
