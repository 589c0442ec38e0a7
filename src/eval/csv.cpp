#include "eval/csv.h"

#include <zlib.h>

#include <algorithm>

#include "eval/example.h"
#include "util/csv.h"
#include "util/error.h"

namespace guardkit::eval {

size_t CsvTable::column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  fail("{}: no column '{}' in the header", source, name);
}

std::string CsvTable::where(size_t row) const { return fmt::format("{}: record {}", source, row + 1); }

CsvTable parse_csv_table(std::string_view text, const std::string& source) {
  std::vector<CsvRow> records = parse_csv(text, source);
  if (records.empty()) fail("{}: empty CSV file (no header)", source);
  CsvTable table;
  table.source = source;
  table.header = std::move(records[0]);
  table.rows.reserve(records.size() - 1);
  for (size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != table.header.size())
      fail("{}: record {} has {} fields, the header has {}", source, r, records[r].size(), table.header.size());
    table.rows.push_back(std::move(records[r]));
  }
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
  return parse_csv_table(text, path.string());
}

}  // namespace guardkit::eval
