#include "util/paths.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace guardkit {

std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("GUARDKIT_SHARED"); env && *env) return env;
#ifdef GUARDKIT_SHARED_DIR
  return std::filesystem::path(GUARDKIT_SHARED_DIR);
#else
  return "../shared";
#endif
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open file", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return buffer.str();
}

void write_file_atomic(const std::filesystem::path& path, const std::string& content) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  const auto temp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot write", temp.string());
    out << content;
    out.flush();
    if (!out) fail("{}: write failed (disk full?)", temp.string());
  }
  std::filesystem::rename(temp, path);
}

}  // namespace guardkit
