// `guardkit merge --out DIR SHARD...`: joins the output folders of a job run as shards (--shard K/N, util/shard.h)
// after checking that every shard 0..N-1 is there, complete, and ran on the same inputs with the same options.
#include <fmt/format.h>

#include <filesystem>
#include <set>

#include "cli/commands.h"
#include "util/error.h"
#include "util/shard.h"

namespace guardkit::cli {

namespace {

namespace fs = std::filesystem;

struct MergeOptions {
  std::vector<std::string> shards;
  std::string out;
};

void run_merge(const MergeOptions& options) {
  std::vector<fs::path> folders(options.shards.begin(), options.shards.end());
  const std::vector<ShardManifest> manifests = check_shards(folders);
  const fs::path out = options.out;
  for (const auto& f : folders)
    if (fs::exists(out) && fs::equivalent(out, f)) fail("merge: --out {} is one of the shard folders", out.string());
  fs::create_directories(out);
  std::set<std::string> files;
  for (const auto& m : manifests)
    for (auto it = m.rows.begin(); it != m.rows.end(); ++it) files.insert(it.key());
  size_t rows = 0;
  for (const auto& file : files) rows += merge_shard_rows(folders, manifests, file, out / file);
  const ShardManifest& first = manifests.front();
  fmt::print(stderr, "merged {} shards of '{}' ({} rows in {} files) into {}\n", first.shard.count, first.job, rows,
             files.size(), out.string());
  if (first.job == "eval")
    fmt::print(stderr, "report on every row (scores nothing): guardkit eval --model {} --data {} --predictions {}\n",
               first.options.value("model", std::string("MODEL")),
               fmt::join(first.options.value("datasets", std::vector<std::string>{}), " "), out.string());
}

void add_merge_command(CLI::App& app, GlobalOptions&) {
  auto options = std::make_shared<MergeOptions>();
  auto* cmd = app.add_subcommand("merge", "Join the output folders of a job run as shards (--shard K/N)");
  cmd->add_option("shards", options->shards, "The shards' output folders (each holds a shard.json)")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--out", options->out, "Merged output folder")->required();
  cmd->footer(R"(Every shard 0..N-1 must be there and complete (a killed shard: rerun the same command, it resumes),
with the same inputs fingerprint and options; otherwise nothing is written and the first problem is named.

Examples:
  for k in 0 1 2 3; do guardkit eval --model harmaug --data toxicchat --shard $k/4 --predictions preds/$k & done; wait
  guardkit merge --out preds/all preds/0 preds/1 preds/2 preds/3
  guardkit eval --model harmaug --data toxicchat --predictions preds/all --json report.json)");
  cmd->callback([options]() { run_merge(*options); });
}

}  // namespace

GUARDKIT_COMMAND(33, add_merge_command);

}  // namespace guardkit::cli
