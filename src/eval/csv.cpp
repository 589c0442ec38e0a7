#include "eval/csv.h"

#include <zlib.h>

#include <algorithm>

#include "eval/example.h"
#include "util/error.h"

namespace guardkit::eval {

size_t CsvTable::column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  fail("{}: no column '{}' in the header", source, name);
}

CsvTable parse_csv(std::string_view text, const std::string& source) {
  CsvTable table;
  table.source = source;
  // A UTF-8 byte-order mark is not part of the first column name.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  std::vector<std::string> record;
  std::string field;
  size_t line = 1, record_line = 1;
  bool have_header = false;
  size_t i = 0;
  const size_t n = text.size();

  auto end_record = [&]() {
    record.push_back(std::move(field));
    field.clear();
    // A blank line (one empty field) is skipped, as every CSV reader does.
    if (!(record.size() == 1 && record[0].empty())) {
      if (!have_header) {
        table.header = std::move(record);
        have_header = true;
      } else {
        if (record.size() != table.header.size())
          fail("{}:{}: {} fields, the header has {}", source, record_line, record.size(), table.header.size());
        table.rows.push_back(std::move(record));
        table.row_lines.push_back(record_line);
      }
    }
    record.clear();
  };

  while (i < n) {
    // Start of a field.
    if (text[i] == '"') {
      const size_t quote_line = line;
      ++i;
      while (true) {
        if (i >= n) fail("{}:{}: unterminated quoted field", source, quote_line);
        char c = text[i];
        if (c == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            field.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (c == '\n') ++line;
        field.push_back(c);
        ++i;
      }
      if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
        fail("{}:{}: unexpected character after a closing quote", source, line);
    } else {
      while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field.push_back(text[i++]);
    }
    if (i >= n) break;
    if (text[i] == ',') {
      record.push_back(std::move(field));
      field.clear();
      ++i;
      if (i >= n) break;  // trailing comma at end of file: the last field is empty
      continue;
    }
    // End of line: \n, \r\n or a lone \r.
    if (text[i] == '\r') ++i;
    if (i < n && text[i] == '\n') ++i;
    end_record();
    ++line;
    record_line = line;
  }
  if (!field.empty() || !record.empty()) end_record();
  if (!have_header) fail("{}: empty CSV file (no header)", source);
  return table;
}

std::string read_maybe_gzip(const std::filesystem::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) fail("{}: cannot open file", path.string());
  std::string content;
  char buffer[1 << 16];
  while (true) {
    int got = gzread(file, buffer, sizeof(buffer));
    if (got < 0) {
      int code = 0;
      std::string message = gzerror(file, &code);
      gzclose(file);
      fail("{}: cannot decompress ({})", path.string(), message);
    }
    if (got == 0) break;
    content.append(buffer, static_cast<size_t>(got));
  }
  int code = Z_OK;
  gzerror(file, &code);
  gzclose(file);
  // zlib returns what it could decompress and flags a stream that ends early with Z_BUF_ERROR.
  if (code == Z_BUF_ERROR) fail("{}: truncated gzip file", path.string());
  return content;
}

CsvTable read_csv(const std::filesystem::path& path) {
  std::string text = read_maybe_gzip(path);
  if (auto bad = find_invalid_utf8(text)) {
    size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(*bad), '\n'));
    fail("{}:{}: invalid UTF-8 at byte offset {} of the file", path.string(), line, *bad);
  }
  return parse_csv(text, path.string());
}

}  // namespace guardkit::eval
