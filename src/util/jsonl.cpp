#include "util/jsonl.h"

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace guardkit {

void for_each_jsonl(std::istream& in, const std::string& source,
                    const std::function<void(const nlohmann::json&, size_t)>& on_object) {
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: not valid JSON ({})", source, line_number, e.what());
    }
    if (!object.is_object()) fail("{}:{}: expected a JSON object, got {}", source, line_number, object.type_name());
    on_object(object, line_number);
  }
  if (in.bad()) fail("{}: read error after line {}", source, line_number);
}

void for_each_jsonl_file(const std::string& path, const std::function<void(const nlohmann::json&, size_t)>& on_object) {
  if (path == "-") return for_each_jsonl(std::cin, "<stdin>", on_object);
  std::ifstream in(path);
  if (!in) fail("{}: cannot open for reading", path);
  for_each_jsonl(in, path, on_object);
}

std::string to_jsonl_line(const nlohmann::json& object) {
  return object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace guardkit
