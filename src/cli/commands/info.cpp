// `guardkit info`: version, libtorch build, threads, BLAS — what a bug report needs.
#include <torch/torch.h>

#include <thread>

#include "cli/commands.h"

namespace guardkit::cli {

namespace {
void add_info_command(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("info", "Print the version, libtorch build and thread settings");
  cmd->callback([]() {
    fmt::print("guardkit 0.1.0\n");
    fmt::print("libtorch threads: {} (cores: {})\n", at::get_num_threads(), std::thread::hardware_concurrency());
    fmt::print("cuda available: {}\n", torch::cuda::is_available() ? "yes" : "no");
    fmt::print("{}\n", at::show_config());
  });
}
}  // namespace

GUARDKIT_COMMAND(10, add_info_command);

}  // namespace guardkit::cli
