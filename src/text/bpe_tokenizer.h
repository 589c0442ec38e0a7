// Byte-level BPE from a Hugging Face tokenizer.json (Llama 3, GPT-2 style): the normalizer, pre-tokenizer,
// BPE model, added/special tokens, post-processor and decoder that the file describes. Components the file names
// but this implementation does not know give a one-line error at load time instead of silently different ids.
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "text/tokenizer.h"

namespace guardkit::text {

class BpeTokenizer : public Tokenizer {
 public:
  // Reads tokenizer.json and, when it exists next to it, tokenizer_config.json (clean_up_tokenization_spaces,
  // bos/eos/pad tokens). Throws guardkit::Error naming the file and what is wrong or unsupported.
  static std::unique_ptr<BpeTokenizer> from_file(const std::filesystem::path& tokenizer_json);
  // From an already parsed tokenizer.json (and optional tokenizer_config.json); `source` names it in errors.
  static std::unique_ptr<BpeTokenizer> from_json(const nlohmann::json& tokenizer_json, const nlohmann::json* config,
                                                 const std::string& source);
  ~BpeTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const override;
  std::vector<int32_t> encode_plain(std::string_view text) const override;
  Encoding encode_for_model(std::string_view text, std::optional<std::string_view> text_pair = std::nullopt,
                            size_t max_length = 0, Truncation truncation = Truncation::LongestFirst,
                            bool parse_special = true) const override;
  // Uses the tokenizer_config.json's clean_up_tokenization_spaces (true when absent, as transformers 4.36 does).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens, bool clean_up_tokenization_spaces) const;

  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  size_t vocab_size() const override;
  std::optional<int32_t> pad_id() const override;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace guardkit::text
