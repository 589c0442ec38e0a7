// A small RFC 4180 CSV reader (quoted fields, doubled quotes, newlines inside quotes, CRLF) for the dataset
// importers: the shared datasets are plain CSV, JSON and gzip-compressed JSONL, so no CSV/Parquet library is needed.
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
  std::vector<size_t> row_lines;               // 1-based line where each row starts (rows can span lines)

  // Index of a column; throws guardkit::Error naming the file and the missing column.
  size_t column(std::string_view name) const;
};

// Parses CSV text. The first record is the header. Throws guardkit::Error "<source>:<line>: ..." on an unterminated
// quote, text after a closing quote, or a record whose field count differs from the header's.
CsvTable parse_csv(std::string_view text, const std::string& source);

// Reads and parses a CSV file (gzip-compressed files are decompressed transparently).
CsvTable read_csv(const std::filesystem::path& path);

// The whole content of a file, decompressed when it is gzip (zlib reads plain files unchanged).
std::string read_maybe_gzip(const std::filesystem::path& path);

}  // namespace guardkit::eval
