// Each `guardkit <command>` lives in src/cli/commands/<command>.cpp and registers itself here.
#pragma once
#include <CLI/CLI.hpp>

namespace guardkit::cli {

// Options every command shares.
struct GlobalOptions {
  int threads = 0;          // 0 = all cores
  std::string log_level = "info";
};

void add_info_command(CLI::App& app, GlobalOptions& global);

}  // namespace guardkit::cli
