// `guardkit tokenize`: JSONL texts in, JSONL token ids out — for debugging prompts and for checking our tokenizers
// against any other implementation line by line.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/jsonl.h"

namespace guardkit::cli {
namespace {

struct TokenizeOptions {
  std::string tokenizer_dir;
  std::string input = "-";
  bool plain_specials = false;
  bool pair = false;
  bool no_special_tokens = false;
  bool with_tokens = false;
  size_t max_length = 0;
  std::string truncation = "longest_first";
};

text::Truncation parse_truncation(const std::string& name) {
  if (name == "longest_first") return text::Truncation::LongestFirst;
  if (name == "only_first") return text::Truncation::OnlyFirst;
  if (name == "only_second") return text::Truncation::OnlySecond;
  if (name == "none") return text::Truncation::None;
  fail("unknown truncation \"{}\" (longest_first, only_first, only_second, none)", name);
}

void run_tokenize(const TokenizeOptions& opt) {
  const auto tokenizer = text::load_tokenizer(opt.tokenizer_dir);
  const bool parse_special = !opt.plain_specials;
  const auto truncation = parse_truncation(opt.truncation);
  for_each_jsonl_file(opt.input, [&](const nlohmann::json& line, size_t line_number) {
    auto text_field = [&](const char* key) -> std::string {
      if (!line.contains(key)) fail("{}:{}: missing \"{}\"", opt.input, line_number, key);
      if (!line[key].is_string()) fail("{}:{}: \"{}\" must be a string", opt.input, line_number, key);
      return line[key].get<std::string>();
    };
    const std::string text = text_field("text");
    if (line.contains("text_pair") && !opt.pair)
      fail("{}:{}: has \"text_pair\": pass --pair to encode pairs", opt.input, line_number);
    nlohmann::json out;
    if (opt.no_special_tokens) {
      if (opt.pair) fail("--pair and --no-special-tokens cannot be combined");
      out["ids"] = tokenizer->encode(text, parse_special);
    } else {
      std::optional<std::string> pair_text;
      if (opt.pair) pair_text = text_field("text_pair");
      std::optional<std::string_view> pair_view;
      if (pair_text) pair_view = *pair_text;
      const auto enc = tokenizer->encode_for_model(text, pair_view, opt.max_length, truncation, parse_special);
      out["ids"] = enc.ids;
      if (opt.pair) out["type_ids"] = enc.type_ids;
    }
    if (opt.with_tokens) {
      std::vector<std::string> tokens;
      for (int32_t id : out["ids"].get<std::vector<int32_t>>()) tokens.push_back(tokenizer->id_to_token(id));
      out["tokens"] = tokens;
    }
    std::cout << to_jsonl_line(out) << '\n';
  });
  std::cout.flush();
}

void add_tokenize_command(CLI::App& app, GlobalOptions&) {
  auto opt = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand("tokenize",
                                 "Tokenize JSONL lines {\"text\": ..., \"text_pair\": ...} into {\"ids\": [...]}");
  cmd->footer(
      "Examples:\n"
      "  echo '{\"text\":\"How do I bake bread?\"}' | guardkit tokenize --tokenizer models/default/small\n"
      "  guardkit tokenize --tokenizer DIR --pair --input pairs.jsonl --tokens\n"
      "The tokenizer is read from DIR: tokenizer.json (byte-level BPE, Unigram) or spm.model (DeBERTa-v3).\n"
      "By default special-token text such as <|eot_id|> or [SEP] inside the input becomes the special token, as\n"
      "Hugging Face does; --plain-specials tokenizes it as ordinary text, which is how guards encode user content.");
  cmd->add_option("--tokenizer", opt->tokenizer_dir, "Model or tokenizer directory")->required();
  cmd->add_option("--input", opt->input, "JSONL file to read ('-' = stdin)")->capture_default_str();
  cmd->add_flag("--plain-specials", opt->plain_specials, "Treat special-token text in the input as plain text");
  cmd->add_flag("--pair", opt->pair, "Encode (text, text_pair) as a pair");
  cmd->add_flag("--no-special-tokens", opt->no_special_tokens, "Do not add BOS/[CLS]/[SEP] around the text");
  cmd->add_flag("--tokens", opt->with_tokens, "Also print the token strings");
  cmd->add_option("--max-length", opt->max_length, "Truncate to this many tokens (0 = no limit)")
      ->capture_default_str();
  cmd->add_option("--truncation", opt->truncation, "longest_first, only_first, only_second or none")
      ->capture_default_str();
  cmd->callback([opt]() { run_tokenize(*opt); });
}

}  // namespace

GUARDKIT_COMMAND(11, add_tokenize_command);

}  // namespace guardkit::cli
