// RFC 4180 CSV: quoted fields, doubled quotes, newlines inside quotes, CRLF. The datasets and keyword files use it.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace guardkit {

using CsvRow = std::vector<std::string>;

// All rows, the header included. `source` names the input in errors (an unterminated quote names its line).
std::vector<CsvRow> parse_csv(std::string_view text, const std::string& source);

}  // namespace guardkit
