// `guardkit data list` / `guardkit data export NAME --out FILE`: the built-in labelled datasets (eval/datasets.h);
// `guardkit data fetch`: downloads them from their public GitHub sources (eval/data_fetch.h).
#include <fmt/format.h>

#include "cli/commands.h"
#include "eval/data_fetch.h"
#include "eval/datasets.h"
#include "util/error.h"

namespace guardkit::cli {

namespace {

struct DataOptions {
  std::string data_dir;
  std::string name;
  std::string out;
  std::vector<std::string> only;
  std::string mirror;
  bool force = false;
};

void list_datasets(const DataOptions& options) {
  const std::filesystem::path data_dir = options.data_dir.empty() ? eval::default_data_dir() : std::filesystem::path(options.data_dir);
  fmt::print("{:<26} {:>6} {:>9} {:>8}  {:<16} {}\n", "name", "rows", "positive", "with-rsp", "label",
             "licence; use; split");
  for (const auto& info : eval::dataset_registry()) {
    eval::DatasetSummary summary = eval::summarize(eval::load_dataset(info.name, data_dir));
    fmt::print("{:<26} {:>6} {:>8.1f}% {:>8}  {:<16} {}; {}; {}\n", info.name, summary.rows,
               100.0 * summary.positive_rate(), summary.with_response, eval::label_kind_name(info.kind), info.licence,
               info.use, info.split);
    fmt::print("{:<26} label 1: {}\n", "", info.label_meaning);
  }
  fmt::print("\nlabel 1 = unsafe. label kinds: prompt = prompt harmfulness, response = response harmfulness in context,\n"
             "refusal = the model refused (not harmfulness), harmful-prompts = behaviour list (all unsafe; recall only),\n"
             "benign = every row safe (measures over-flagging: the false-positive rate), preference = the worse reply of\n"
             "a pair (not an absolute harm label).\n"
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

void fetch_datasets(const DataOptions& options) {
  eval::FetchOptions fetch;
  fetch.out = !options.out.empty() ? std::filesystem::path(options.out)
              : options.data_dir.empty() ? eval::default_data_dir() : std::filesystem::path(options.data_dir);
  fetch.only = options.only;
  fetch.mirror = options.mirror;
  fetch.force = options.force;
  const eval::FetchSummary summary = eval::fetch_data(fetch);
  // The licence travels with the data: say which of the fetched folders may only be used for evaluation.
  for (const auto& folder : summary.folders)
    for (const auto& info : eval::dataset_registry())
      if (info.folder == folder && info.evaluation_only) {
        fmt::print("note: {} ({}, {}): {}; never train or ship on it\n", info.name, folder, info.licence, info.use);
        break;
      }
  fmt::print("summary: {} downloaded, {} already present, {} failed\n", summary.downloaded, summary.present,
             summary.failed);
  if (summary.failed > 0) fail("data fetch: {} file(s) failed (see above); rerun to retry them", summary.failed);
}

// Printed under `guardkit data fetch --help`.
constexpr const char* kFetchNotes =
    "\nEvery file is a byte-identical copy of a file of a public GitHub repository at a pinned commit (third-party\n"
    "copies where the authors' own is not on GitHub: see each folder's PROVENANCE.md); its size and sha256 are\n"
    "compiled in (scripts/gen_data_manifest.sh regenerates the table from shared/data).\n"
    "Not fetched: README.md and the PROVENANCE.md files (written for this collection, no upstream copy), and files\n"
    "guardkit does not read: harmbench/harmbench_behaviors_text_{test,val}.csv, gptfuzz/GPTFuzzer.csv,\n"
    "jailbreakbench_artifacts/attack-artifacts/*/attack-info.json.\n"
    "Non-commercial, evaluation only: toxicchat, beavertails_evaluation (CC-BY-NC-4.0), do_not_answer\n"
    "(CC-BY-NC-SA-4.0); they are fetched too and their licence is printed.\n"
    "Examples:\n"
    "  guardkit data fetch --out ~/guardkit-data && guardkit data --data-dir ~/guardkit-data list\n"
    "  guardkit data fetch --out data --only advbench toxicchat --mirror https://my-mirror.example/raw/\n";

void add_data_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<DataOptions>();
  auto* data = app.add_subcommand("data", "List, export and fetch the built-in labelled safety datasets");
  data->require_subcommand(1);
  data->add_option("--data-dir", options->data_dir, "Dataset folder (default: shared/data)");

  auto* list = data->add_subcommand("list", "Print every dataset: rows, positive (unsafe) rate, label kind, licence");
  list->callback([options]() { list_datasets(*options); });

  auto* exporter = data->add_subcommand("export", "Write a dataset (or re-validate a JSONL file) as guardkit JSONL");
  exporter->add_option("name", options->name, "Dataset name (see `guardkit data list`) or a JSONL file")->required();
  exporter->add_option("--out", options->out, "Output JSONL file ('-' = stdout)")->required();
  exporter->callback([options]() { export_dataset(*options); });

  auto* fetch = data->add_subcommand(
      "fetch", "Download the datasets from their public GitHub sources (sha256-checked; present files are skipped)");
  fetch->add_option("--out", options->out, "Data folder to fill (default: --data-dir, else shared/data)");
  fetch->add_option("--only", options->only, "Only these folders or dataset names (e.g. advbench toxicchat)")
      ->delimiter(',');
  fetch->add_option("--mirror", options->mirror,
                    fmt::format("URL prefix that replaces {} (a mirror)", eval::kGithubRawPrefix));
  fetch->add_flag("--force", options->force, "Download again even files present with the right sha256");
  fetch->footer(kFetchNotes);
  fetch->callback([options]() { fetch_datasets(*options); });
}

}  // namespace

GUARDKIT_COMMAND(30, add_data_command);

}  // namespace guardkit::cli
