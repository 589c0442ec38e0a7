// JSON Lines input/output for the commands: one object per line, errors that name the file and line.
#pragma once
#include <functional>
#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace guardkit {

// Calls `on_object(object, line_number)` for every non-blank line of `in`. A line that is not a JSON object (bad
// JSON, invalid UTF-8, an array...) throws guardkit::Error "<source>:<line>: ...". `source` names the input in errors.
void for_each_jsonl(std::istream& in, const std::string& source,
                    const std::function<void(const nlohmann::json& object, size_t line_number)>& on_object);

// Opens `path` ("-" = stdin) and reads it as above.
void for_each_jsonl_file(const std::string& path,
                         const std::function<void(const nlohmann::json& object, size_t line_number)>& on_object);

// One compact line; invalid UTF-8 in strings is replaced (U+FFFD), never an exception mid-output.
std::string to_jsonl_line(const nlohmann::json& object);

}  // namespace guardkit
