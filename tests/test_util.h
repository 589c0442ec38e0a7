// Helpers shared by the tests: fixture paths and JSON loading.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <array>
#include <cstdio>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "util/paths.h"

namespace guardkit::test {

inline std::filesystem::path fixture(const std::string& relative) {
  return guardkit::shared_dir() / "fixtures" / relative;
}

inline nlohmann::json load_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

struct CliResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// A fresh empty directory under the build tree's temp area, unique per test.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("guardkit_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs a shell command line; returns its exit code and its stdout and stderr together.
inline CliResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

#ifdef GUARDKIT_BUILD_DIR
// Runs the real `guardkit` binary of this build with `args`, `stdin_text` on its standard input.
inline CliResult run_guardkit(const std::string& args, const std::string& stdin_text) {
  auto dir = temp_dir("cli");
  std::ofstream(dir / "stdin.txt") << stdin_text;
  return run_command(std::string(GUARDKIT_BUILD_DIR) + "/guardkit " + args + " < " + (dir / "stdin.txt").string());
}
#endif

// The JSON objects of a JSONL text (blank lines skipped).
inline std::vector<nlohmann::json> parse_jsonl(const std::string& text) {
  std::vector<nlohmann::json> result;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) result.push_back(nlohmann::json::parse(line));
  return result;
}

}  // namespace guardkit::test
