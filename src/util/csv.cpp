#include "util/csv.h"

#include "util/error.h"

namespace guardkit {

std::vector<CsvRow> parse_csv(std::string_view text, const std::string& source) {
  std::vector<CsvRow> rows;
  CsvRow row;
  std::string field;
  bool in_quotes = false, field_started = false;
  size_t line = 1, quote_line = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
  auto end_field = [&]() {
    row.push_back(std::move(field));
    field.clear();
    field_started = false;
  };
  auto end_row = [&]() {
    end_field();
    if (!(row.size() == 1 && row[0].empty())) rows.push_back(std::move(row));  // blank lines are skipped
    row.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    switch (c) {
      case '"':
        if (!field_started) {
          in_quotes = true;
          quote_line = line;
          field_started = true;
        } else {
          field += c;  // a stray quote inside an unquoted field is kept, as Python's csv does
        }
        break;
      case ',': end_field(); break;
      case '\r':
        if (i + 1 < text.size() && text[i + 1] == '\n') break;
        end_row();
        ++line;
        break;
      case '\n': end_row(); ++line; break;
      default: field += c; field_started = true;
    }
  }
  if (in_quotes) fail("{}:{}: unterminated quoted field", source, quote_line);
  if (field_started || !row.empty()) end_row();
  return rows;
}

}  // namespace guardkit
