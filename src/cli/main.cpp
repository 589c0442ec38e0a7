// guardkit: LLM safety guardrails (guard models, SafeRoute, HarmAug, BiasJailbreak) in one native binary.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "models/runtime.h"
#include "util/error.h"

int main(int argc, char** argv) {
  using namespace guardkit::cli;
  CLI::App app{
      "guardkit — native LLM safety guardrails: guard models, SafeRoute routing, HarmAug distillation,\n"
      "BiasJailbreak red-teaming and an OpenAI-compatible guard server.\n"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every command");
  GlobalOptions global;
  app.add_option("--threads", global.threads, "CPU threads for tensor math (default: all cores)");
  app.add_option("--log-level", global.log_level, "trace, debug, info, warn, error")->capture_default_str();

  add_registered_commands(app, global);

  app.parse_complete_callback([&]() {
    spdlog::set_level(spdlog::level::from_str(global.log_level));
    spdlog::set_default_logger(spdlog::stderr_color_mt("guardkit"));
    guardkit::models::init_runtime(global.threads);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const guardkit::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
