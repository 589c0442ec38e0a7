#include "eval/example.h"

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/csv.h"
#include "util/error.h"

namespace guardkit::eval {

nlohmann::json example_to_json(const Example& example) {
  nlohmann::json object;
  object["id"] = example.id;
  object["prompt"] = example.prompt;
  object["response"] = example.response ? nlohmann::json(*example.response) : nlohmann::json(nullptr);
  object["label"] = example.label;
  object["categories"] = example.categories;
  object["source"] = example.source;
  return object;
}

Example example_from_json(const nlohmann::json& object, const std::string& where) {
  if (!object.is_object()) fail("{}: expected a JSON object, got {}", where, object.type_name());
  Example example;

  auto id = object.find("id");
  if (id == object.end() || id->is_null()) {
    example.id = where;
  } else if (id->is_string()) {
    example.id = id->get<std::string>();
  } else if (id->is_number_integer()) {
    example.id = std::to_string(id->get<int64_t>());
  } else {
    fail("{}: 'id' must be a string or an integer, got {}", where, id->type_name());
  }

  auto prompt = object.find("prompt");
  if (prompt == object.end()) fail("{}: missing 'prompt'", where);
  if (!prompt->is_string()) fail("{}: 'prompt' must be a string, got {}", where, prompt->type_name());
  example.prompt = prompt->get<std::string>();

  auto response = object.find("response");
  if (response != object.end() && !response->is_null()) {
    if (!response->is_string()) fail("{}: 'response' must be a string or null, got {}", where, response->type_name());
    example.response = response->get<std::string>();
  }

  auto label = object.find("label");
  if (label == object.end()) fail("{}: missing 'label' (1 = unsafe, 0 = safe)", where);
  if (label->is_boolean()) {
    example.label = label->get<bool>() ? 1 : 0;
  } else if (label->is_number_integer() && (label->get<int64_t>() == 0 || label->get<int64_t>() == 1)) {
    example.label = static_cast<int>(label->get<int64_t>());
  } else {
    fail("{}: 'label' must be 0 or 1 (1 = unsafe), got {}", where, label->dump());
  }

  auto categories = object.find("categories");
  if (categories != object.end() && !categories->is_null()) {
    if (!categories->is_array()) fail("{}: 'categories' must be a list of strings", where);
    for (const auto& category : *categories) {
      if (!category.is_string()) fail("{}: 'categories' must be a list of strings, found {}", where, category.dump());
      example.categories.push_back(category.get<std::string>());
    }
  }

  auto source = object.find("source");
  if (source != object.end() && !source->is_null()) {
    if (!source->is_string()) fail("{}: 'source' must be a string, got {}", where, source->type_name());
    example.source = source->get<std::string>();
  }
  return example;
}

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    unsigned char lead = bytes[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code_point;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      code_point = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      code_point = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      code_point = lead & 0x07;
    } else {
      return i;  // continuation byte without a lead, C0/C1 (overlong 2-byte) or F5..FF
    }
    if (i + length > n) return i;
    for (size_t k = 1; k < length; ++k) {
      if ((bytes[i + k] & 0xC0) != 0x80) return i;
      code_point = (code_point << 6) | (bytes[i + k] & 0x3F);
    }
    if ((length == 3 && code_point < 0x800) || (length == 4 && code_point < 0x10000) || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF))
      return i;  // overlong, beyond Unicode, or a UTF-16 surrogate
    i += length;
  }
  return std::nullopt;
}

std::vector<Example> read_examples_jsonl(std::istream& in, const std::string& source) {
  std::vector<Example> examples;
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", source, line_number);
    // Checked before parsing so the message says what is wrong instead of a generic parse error.
    if (auto bad = find_invalid_utf8(line)) fail("{}: invalid UTF-8 at byte {}", where, *bad + 1);
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}: not valid JSON ({})", where, e.what());
    }
    examples.push_back(example_from_json(object, where));
  }
  if (in.bad()) fail("{}: read error after line {}", source, line_number);
  return examples;
}

std::vector<Example> read_examples_jsonl_file(const std::filesystem::path& path) {
  if (path == "-") return read_examples_jsonl(std::cin, "<stdin>");
  if (!std::filesystem::is_regular_file(path)) fail("{}: no such file", path.string());
  std::istringstream in(read_maybe_gzip(path));
  return read_examples_jsonl(in, path.string());
}

void write_examples_jsonl(std::ostream& out, const std::vector<Example>& examples) {
  for (const auto& example : examples) {
    // Written in schema order (ordered_json), which reads better than nlohmann's sorted keys.
    nlohmann::ordered_json object;
    object["id"] = example.id;
    object["prompt"] = example.prompt;
    object["response"] = example.response ? nlohmann::ordered_json(*example.response) : nlohmann::ordered_json(nullptr);
    object["label"] = example.label;
    object["categories"] = example.categories;
    object["source"] = example.source;
    out << object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
  }
}

void write_examples_jsonl_file(const std::filesystem::path& path, const std::vector<Example>& examples) {
  if (path == "-") {
    write_examples_jsonl(std::cout, examples);
    std::cout.flush();
    return;
  }
  std::filesystem::path temporary = path;
  temporary += ".partial";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot open for writing", temporary.string());
    write_examples_jsonl(out, examples);
    out.flush();
    if (!out) fail("{}: write error", temporary.string());
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) fail("{}: cannot rename to {} ({})", temporary.string(), path.string(), error.message());
}

}  // namespace guardkit::eval
