#include <algorithm>
#include <vector>

#include "cli/commands.h"

namespace guardkit::cli {
namespace {
struct Entry {
  int order;
  CommandAdder adder;
};
std::vector<Entry>& registry() {
  static std::vector<Entry> entries;  // function-local: safe from static initialisation order
  return entries;
}
}  // namespace

CommandRegistration::CommandRegistration(int order, CommandAdder adder) { registry().push_back({order, adder}); }

void add_registered_commands(CLI::App& app, GlobalOptions& global) {
  auto entries = registry();
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.order < b.order; });
  for (const auto& e : entries) e.adder(app, global);
}

}  // namespace guardkit::cli
