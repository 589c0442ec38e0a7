// JSON Lines input/output for the commands: one object per line, errors that name the file and line.
#pragma once
#include <functional>
#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <filesystem>
#include <string>
#include <vector>

namespace guardkit {

// Calls `on_object(object, line_number)` for every non-blank line of `in`. A line that is not a JSON object (bad
// JSON, invalid UTF-8, an array...) throws guardkit::Error "<source>:<line>: ...". `source` names the input in errors.
void for_each_jsonl(std::istream& in, const std::string& source,
                    const std::function<void(const nlohmann::json& object, size_t line_number)>& on_object);

// Opens `path` ("-" = stdin) and reads it as above.
void for_each_jsonl_file(const std::string& path,
                         const std::function<void(const nlohmann::json& object, size_t line_number)>& on_object);

// The objects of an append-only JSONL log that a long job writes and resumes. A kill can leave a torn last line:
// it is cut off (with a warning) so the job redoes that row; a bad line anywhere else means the file is damaged or
// not ours, which is an error. A missing file is an empty log.
std::vector<nlohmann::json> read_jsonl_log_for_resume(const std::filesystem::path& path);

// One compact line; invalid UTF-8 in strings is replaced (U+FFFD), never an exception mid-output.
std::string to_jsonl_line(const nlohmann::json& object);

}  // namespace guardkit
