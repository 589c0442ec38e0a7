#include "util/jsonl.h"

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "util/error.h"
#include "util/paths.h"

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

std::vector<nlohmann::json> read_jsonl_log_for_resume(const std::filesystem::path& path) {
  std::vector<nlohmann::json> objects;
  if (!std::filesystem::exists(path)) return objects;
  const std::string content = read_file(path);
  size_t pos = 0, line_number = 0, good_end = 0;
  while (pos < content.size()) {
    const size_t newline = content.find('\n', pos);
    ++line_number;
    const bool complete = newline != std::string::npos;
    auto parsed = nlohmann::json::parse(content.substr(pos, complete ? newline - pos : std::string::npos), nullptr,
                                        false);
    if (!complete || parsed.is_discarded() || !parsed.is_object()) {
      const bool last = !complete || newline + 1 >= content.size();
      if (!last) fail("{}:{}: not a record of this job (the file is damaged; move it away to start over)",
                      path.string(), line_number);
      spdlog::warn("{}: dropping a torn last line (the previous run was killed mid-write); it will be redone",
                   path.string());
      break;
    }
    objects.push_back(std::move(parsed));
    good_end = newline + 1;
    pos = newline + 1;
  }
  if (good_end < content.size()) std::filesystem::resize_file(path, good_end);
  return objects;
}

std::string to_jsonl_line(const nlohmann::json& object) {
  return object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace guardkit
