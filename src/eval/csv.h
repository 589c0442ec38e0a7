// CSV tables with a header for the dataset importers (parsing by util/csv.h), and gzip-transparent file reading:
// the shared datasets are plain CSV, JSON and gzip-compressed JSONL, so no CSV/Parquet library is needed.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::eval {

struct CsvTable {
  std::string source;                          // file name, for error messages
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // every row has header.size() fields

  // "<file>: record <n>" (1-based data record; records can span lines, so no line number) for error messages.
  std::string where(size_t row) const;

  // Index of a column; throws guardkit::Error naming the file and the missing column.
  size_t column(std::string_view name) const;
};

// Parses CSV text; the first record is the header. Throws guardkit::Error on an unterminated quote or a record whose
// field count differs from the header's.
CsvTable parse_csv_table(std::string_view text, const std::string& source);

// Reads and parses a CSV file (invalid UTF-8 is reported with its line) (gzip-compressed files are decompressed transparently).
CsvTable read_csv(const std::filesystem::path& path);

// The whole content of a file, decompressed when it is gzip (zlib reads plain files unchanged).
std::string read_maybe_gzip(const std::filesystem::path& path);

}  // namespace guardkit::eval
