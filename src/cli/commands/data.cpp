// `guardkit data list` / `guardkit data export NAME --out FILE`: the built-in labelled datasets (eval/datasets.h).
#include <fmt/format.h>

#include "cli/commands.h"
#include "eval/datasets.h"
#include "util/error.h"

namespace guardkit::cli {

namespace {

struct DataOptions {
  std::string data_dir;
  std::string name;
  std::string out;
};

void list_datasets(const DataOptions& options) {
  const std::filesystem::path data_dir = options.data_dir.empty() ? eval::default_data_dir() : std::filesystem::path(options.data_dir);
  fmt::print("{:<26} {:>6} {:>9} {:>8}  {:<16} {}\n", "name", "rows", "positive", "with-rsp", "label", "licence / use");
  for (const auto& info : eval::dataset_registry()) {
    eval::DatasetSummary summary = eval::summarize(eval::load_dataset(info.name, data_dir));
    fmt::print("{:<26} {:>6} {:>8.1f}% {:>8}  {:<16} {}{}\n", info.name, summary.rows, 100.0 * summary.positive_rate(),
               summary.with_response, eval::label_kind_name(info.kind), info.licence,
               info.evaluation_only ? " (non-commercial: evaluation only)" : "");
  }
  fmt::print("\nlabel 1 = unsafe. label kinds: prompt = prompt harmfulness, response = response harmfulness in context,\n"
             "refusal = the model refused (not harmfulness), harmful-prompts = behaviour list (all unsafe; recall only).\n"
             "Your own data: any JSONL file of {{id, prompt, response, label, categories, source}} wherever a name goes.\n");
}

void export_dataset(const DataOptions& options) {
  const std::filesystem::path data_dir = options.data_dir.empty() ? eval::default_data_dir() : std::filesystem::path(options.data_dir);
  auto examples = eval::load_dataset(options.name, data_dir);
  eval::write_examples_jsonl_file(options.out, examples);
  if (options.out != "-") {
    eval::DatasetSummary summary = eval::summarize(examples);
    fmt::print(stderr, "wrote {} examples ({} unsafe) to {}\n", summary.rows, summary.positives, options.out);
  }
}

void add_data_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<DataOptions>();
  auto* data = app.add_subcommand("data", "List and export the built-in labelled safety datasets");
  data->require_subcommand(1);
  data->add_option("--data-dir", options->data_dir, "Dataset folder (default: shared/data)");

  auto* list = data->add_subcommand("list", "Print every dataset: rows, positive (unsafe) rate, label kind, licence");
  list->callback([options]() { list_datasets(*options); });

  auto* exporter = data->add_subcommand("export", "Write a dataset (or re-validate a JSONL file) as guardkit JSONL");
  exporter->add_option("name", options->name, "Dataset name (see `guardkit data list`) or a JSONL file")->required();
  exporter->add_option("--out", options->out, "Output JSONL file ('-' = stdout)")->required();
  exporter->callback([options]() { export_dataset(*options); });
}

}  // namespace

GUARDKIT_COMMAND(30, add_data_command);

}  // namespace guardkit::cli
