// Helpers shared by the tests: fixture paths and JSON loading.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "util/paths.h"

namespace guardkit::test {

inline std::filesystem::path fixture(const std::string& relative) {
  return guardkit::shared_dir() / "fixtures" / relative;
}

inline nlohmann::json load_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// A fresh empty directory under the build tree's temp area, unique per test.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("guardkit_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace guardkit::test
