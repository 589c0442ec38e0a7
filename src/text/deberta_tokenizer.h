// The tokenizer of DeBERTa-v3 checkpoints, as Hugging Face's slow DebertaV2Tokenizer (transformers 4.36) behaves:
// special/added-token text split out first (each remaining chunk goes through SentencePiece on its own), then
// `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` with token_type_ids 0/1, truncation as truncate_sequences does it, and
// decoding through SentencePiece with special tokens kept apart.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/tokenizer.h"
#include "text/unigram.h"

namespace guardkit::text {

struct DebertaAddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;
  bool lstrip = false;  // eat whitespace on the left of the token's text
  bool rstrip = false;  // ... and on its right
};

struct DebertaTokenizerConfig {
  std::string cls_token = "[CLS]", sep_token = "[SEP]", pad_token = "[PAD]", unk_token = "[UNK]",
              mask_token = "[MASK]", bos_token = "[CLS]", eos_token = "[SEP]";
  std::vector<std::string> additional_special_tokens;
  std::vector<DebertaAddedToken> added_tokens;  // from tokenizer_config's added_tokens_decoder and added_tokens.json
  bool do_lower_case = false;
  bool clean_up_tokenization_spaces = true;
};

class DebertaV2Tokenizer : public Tokenizer {
 public:
  DebertaV2Tokenizer(UnigramModel model, DebertaTokenizerConfig config, const std::string& source);

  // A model directory: spm.model (or tokenizer.model) with tokenizer_config.json, added_tokens.json and
  // special_tokens_map.json when present.
  static std::unique_ptr<DebertaV2Tokenizer> from_dir(const std::filesystem::path& dir);
  // A tokenizer.json whose model is Unigram (tokenizer_config.json next to it is read too, when present).
  static std::unique_ptr<DebertaV2Tokenizer> from_tokenizer_json(const std::filesystem::path& path);

  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const override;
  Encoding encode_for_model(std::string_view text, std::optional<std::string_view> text_pair = std::nullopt,
                            size_t max_length = 0, Truncation truncation = Truncation::LongestFirst,
                            bool parse_special = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  size_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> pad_id() const override { return pad_id_; }

  // HF's tok.tokenize(text): the pieces, special-token text as itself, unknown runs as their own text.
  std::vector<std::string> tokenize(std::string_view text, bool parse_special = true) const;

  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t mask_id() const { return mask_id_; }
  int32_t unk_id() const { return unk_id_; }
  const UnigramModel& model() const { return model_; }

 private:
  struct Chunk {
    std::string_view text;
    int32_t added_id;  // -1 for ordinary text
  };
  void split_added_tokens(std::string_view text, bool parse_special, std::vector<Chunk>& chunks) const;
  void encode_chunks(std::string_view text, bool parse_special, std::vector<int32_t>& ids,
                     std::vector<std::string>* pieces) const;
  int32_t require_id(const std::string& token, const char* role, const std::string& source) const;

  UnigramModel model_;
  DebertaTokenizerConfig config_;
  std::vector<DebertaAddedToken> added_;                        // every token the text is split on, longest first
  std::unordered_map<std::string, size_t> added_index_;  // content -> index in added_
  std::unordered_map<int32_t, std::string> added_by_id_;
  std::vector<int32_t> special_ids_;  // all_special_ids
  bool added_first_byte_[256] = {};
  int32_t cls_id_ = -1, sep_id_ = -1, unk_id_ = -1, mask_id_ = -1;
  std::optional<int32_t> pad_id_;
  size_t vocab_size_ = 0;
};

// Python-style str.lower() for the scripts DeBERTa checkpoints meet most (Latin, Greek, Cyrillic, Armenian);
// other characters pass unchanged.
std::string unicode_lower(std::string_view text);

}  // namespace guardkit::text
