// A rendered prompt as segments that remember where their text came from, so user content is never parsed for
// special tokens: a user who types "<|eot_id|>" gets the characters, not the control token.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::text {

class Tokenizer;

enum class SegmentKind {
  kSpecial,   // one special token written by the template, e.g. "<|begin_of_text|>"
  kTemplate,  // trusted template text (no special tokens in it)
  kUser,      // untrusted message content
};

struct PromptSegment {
  std::string text;
  SegmentKind kind = SegmentKind::kTemplate;
  bool is_user_content() const { return kind == SegmentKind::kUser; }
  bool is_special() const { return kind == SegmentKind::kSpecial; }
  bool operator==(const PromptSegment&) const = default;
};

// What to feed the tokenizer: special tokens one by one, and everything between them as one plain-text run.
// Adjacent template text and user content must be encoded together ("User: " + "How" pre-tokenizes as "User", ":",
// " How"), exactly as Hugging Face's tokenizer sees the rendered string.
struct TokenPiece {
  std::string text;
  bool special = false;
  bool operator==(const TokenPiece&) const = default;
};

struct RenderedPrompt {
  std::vector<PromptSegment> segments;

  std::string text() const;  // the whole rendered string
  std::vector<TokenPiece> token_pieces() const;

  // Appends, merging with the previous segment when it has the same kind (specials are never merged).
  void add(SegmentKind kind, std::string_view text);
  void add_special(std::string_view token) { add(SegmentKind::kSpecial, token); }
  void add_template(std::string_view text) { add(SegmentKind::kTemplate, text); }
  void add_user(std::string_view text) { add(SegmentKind::kUser, text); }
};

// Token ids of a rendered prompt: special pieces by their ids (an unknown special is an error naming it), plain runs
// encoded with no added token matched (Tokenizer::encode_plain). No BOS is added beyond what the template wrote.
std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const RenderedPrompt& prompt);

// Python's str.strip() (Jinja's trim): removes leading and trailing Unicode whitespace from UTF-8 text.
std::string_view python_strip(std::string_view text);

}  // namespace guardkit::text
