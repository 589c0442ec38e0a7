// Each `guardkit <command>` lives in src/cli/commands/<command>.cpp and registers itself with
// GUARDKIT_COMMAND(order, adder): the files are compiled into the CLI executable itself, so no central list needs
// editing when a command is added. `order` sorts the commands in --help (workflow order: 10s inspect, 20s models,
// 30s guards/eval, 40s routing, 50s augmentation/training, 60s red-teaming, 70s serving).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace guardkit::cli {

// Options every command shares.
struct GlobalOptions {
  int threads = 0;          // 0 = all cores
  std::string log_level = "info";
};

using CommandAdder = void (*)(CLI::App& app, GlobalOptions& global);

struct CommandRegistration {
  CommandRegistration(int order, CommandAdder adder);
};

// Calls every registered adder, in order.
void add_registered_commands(CLI::App& app, GlobalOptions& global);

}  // namespace guardkit::cli

#define GUARDKIT_CONCAT_INNER(a, b) a##b
#define GUARDKIT_CONCAT(a, b) GUARDKIT_CONCAT_INNER(a, b)
#define GUARDKIT_COMMAND(order, adder) \
  static const ::guardkit::cli::CommandRegistration GUARDKIT_CONCAT(guardkit_command_, __LINE__){order, adder}
