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

}  // namespace guardkit
