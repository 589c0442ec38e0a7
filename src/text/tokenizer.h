// The interface every guardkit tokenizer implements (SentencePiece Unigram for DeBERTa-v3, byte-level BPE for
// Llama 3), so commands and guards can take any checkpoint's tokenizer.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::text {

// Model inputs for one sequence (or a pair), as Hugging Face tokenizers return them.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;        // token_type_ids
  std::vector<int32_t> attention_mask;  // all 1 until padded
};

enum class Truncation { LongestFirst, OnlyFirst, OnlySecond, None };

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` without the model's special tokens around it. With parse_special (HF's default), the text of
  // special/added tokens inside `text` becomes their ids; without it, such text is tokenized as ordinary text, which
  // is how untrusted user content must be encoded.
  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const = 0;
  // Like encode(text, false), but no added token is matched at all, not even the non-special ones (Qwen3's `<think>`
  // stays text): how a guard encodes untrusted content between its template's own special tokens.
  virtual std::vector<int32_t> encode_plain(std::string_view text) const { return encode(text, false); }

  // The model's full input for a text or a (text, text_pair) pair: special tokens added ([CLS] a [SEP] b [SEP] for
  // DeBERTa, BOS + text for Llama), truncated to max_length (0 = no limit) with the given strategy.
  virtual Encoding encode_for_model(std::string_view text, std::optional<std::string_view> text_pair = std::nullopt,
                                    size_t max_length = 0, Truncation truncation = Truncation::LongestFirst,
                                    bool parse_special = true) const = 0;

  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;

  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;  // "" for out-of-range ids
  virtual size_t vocab_size() const = 0;                  // including added tokens
  virtual std::optional<int32_t> pad_id() const = 0;
};

// Loads the tokenizer of a Hugging Face model directory: tokenizer.json (BPE or Unigram) when present, else
// spm.model / tokenizer.model (SentencePiece) with tokenizer_config.json / added_tokens.json / special_tokens_map.json.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir);

}  // namespace guardkit::text
