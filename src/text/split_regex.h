// The regexes of Hugging Face pre-tokenizers ("Split" with a "Regex" pattern, ByteLevel's GPT-2 pattern): a small
// backtracking engine over UTF-8 with the semantics of the engines HF uses (leftmost-first alternation, greedy
// quantifiers, Unicode \p{..} / \s classes), plus hand-written matchers for the two patterns that nearly every
// byte-level BPE uses (Llama 3 / GPT-4 and GPT-2), which give the same matches several times faster.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace guardkit::text {

// The pre-tokenizer pattern of Llama 3 (identical to GPT-4's cl100k_base).
inline constexpr std::string_view kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
// The pattern of GPT-2's ByteLevel pre-tokenizer (use_regex: true).
inline constexpr std::string_view kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class SplitRegex {
 public:
  // Compiles `pattern`; throws guardkit::Error naming the unsupported construct. allow_fast_path=false forces the
  // general engine even for the known patterns (tests compare the two).
  explicit SplitRegex(std::string_view pattern, bool allow_fast_path = true);
  ~SplitRegex();
  SplitRegex(SplitRegex&&) noexcept;
  SplitRegex& operator=(SplitRegex&&) noexcept;

  // Byte ranges [begin, end) of the successive non-overlapping, non-empty matches in `text` (valid UTF-8).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

  const std::string& pattern() const { return pattern_; }
  bool uses_fast_path() const { return fast_ != FastPath::None; }

  struct Program;  // the compiled general-engine program

 private:
  enum class FastPath { None, Llama3, Gpt2 };
  std::string pattern_;
  FastPath fast_ = FastPath::None;
  std::unique_ptr<Program> program_;
};

}  // namespace guardkit::text
