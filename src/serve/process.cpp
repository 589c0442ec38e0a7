#include "serve/process.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace guardkit::serve {

void ensure_passive_omp_wait() {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < raw.size();) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    args.push_back(raw.substr(start, end - start));
    start = end + 1;
  }
  if (args.empty()) {
    spdlog::warn("OMP_WAIT_POLICY is not set and /proc/self/cmdline is unreadable: set OMP_WAIT_POLICY=PASSIVE");
    return;
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv.data());
  spdlog::warn("could not re-execute with OMP_WAIT_POLICY=PASSIVE; set it in the environment for full speed");
}

}  // namespace guardkit::serve
