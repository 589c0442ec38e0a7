// The one labelled-example schema every dataset is imported into, and its JSON Lines form:
//   {"id": str, "prompt": str, "response": str|null, "label": 0|1, "categories": [str], "source": str}
// label 1 = unsafe / harmful (the positive class everywhere in guardkit), 0 = safe. A missing or null response means
// the example is prompt-only (a prompt guard judges the prompt; a response guard judges the response in context).
#pragma once
#include <filesystem>
#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::eval {

struct Example {
  std::string id;
  std::string prompt;
  std::optional<std::string> response;
  int label = 0;                        // 1 = unsafe (positive), 0 = safe
  std::vector<std::string> categories;  // dataset-specific harm categories / types; may be empty
  std::string source;                   // dataset (and sub-part) the example came from

  bool operator==(const Example&) const = default;
};

nlohmann::json example_to_json(const Example& example);
// Validates types; `where` (e.g. "file.jsonl:12") prefixes every error.
Example example_from_json(const nlohmann::json& object, const std::string& where);

// Byte offset of the first invalid UTF-8 sequence in `text` (overlong forms, surrogates and code points above
// U+10FFFF are invalid), or nullopt when the text is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Reads examples from JSONL (one object per line, blank lines skipped). Errors name the source and the 1-based line:
// "<source>:<line>: invalid UTF-8 at byte <n>", "...: not valid JSON (...)", "...: 'label' must be 0 or 1", ...
std::vector<Example> read_examples_jsonl(std::istream& in, const std::string& source);
// A path ("-" = stdin); ".gz" files are decompressed.
std::vector<Example> read_examples_jsonl_file(const std::filesystem::path& path);

void write_examples_jsonl(std::ostream& out, const std::vector<Example>& examples);
// Writes to a temporary file next to `path` and renames it, so a killed export never leaves half a file.
void write_examples_jsonl_file(const std::filesystem::path& path, const std::vector<Example>& examples);

}  // namespace guardkit::eval
