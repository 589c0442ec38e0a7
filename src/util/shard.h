// Long data jobs as shards of a job array (Slurm --array, a Kubernetes Indexed Job, or N processes by hand), in one
// place for every command that takes --shard: which rows a shard owns, and the manifest `guardkit merge` checks.
// A row belongs to shard hash(row id) mod N (FNV-1a, the same on every machine and build): shards are balanced,
// and adding rows to a dataset never moves an existing row to another shard.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit {

uint64_t stable_row_hash(std::string_view row_id);

struct Shard {
  size_t index = 0;
  size_t count = 1;  // 1: not sharded
  bool sharded() const { return count > 1; }
  bool owns(std::string_view row_id) const { return stable_row_hash(row_id) % count == index; }
  std::string label() const;  // "K/N"
};

// "K/N" with 0 <= K < N. Either part may be "auto" ("auto" alone is "auto/auto"): K from $SLURM_ARRAY_TASK_ID
// (minus $SLURM_ARRAY_TASK_MIN) or $JOB_COMPLETION_INDEX, N from $SLURM_ARRAY_TASK_COUNT. Empty: not sharded.
// Throws guardkit::Error naming the problem (a missing variable, K >= N, not a number).
Shard parse_shard(const std::string& text);

// What a shard's output folder records (shard.json), so that a merge can check the shards belong together.
struct ShardManifest {
  std::string job;                 // the command, e.g. "eval"
  Shard shard;
  std::string inputs_fingerprint;  // of every input row of the whole job, not only this shard's
  nlohmann::json options;          // the options that change results
  nlohmann::json rows;             // rows written, per output file name
  bool complete = false;           // false while running (or killed): rerun the shard, it resumes
};

void write_shard_manifest(const std::filesystem::path& folder, const ShardManifest& manifest);
ShardManifest read_shard_manifest(const std::filesystem::path& folder);

// The manifests of shard folders: one per index 0..N-1, all complete, same job, count, inputs and options.
// Returns them ordered by index; throws guardkit::Error naming the first folder that does not fit.
std::vector<ShardManifest> check_shards(const std::vector<std::filesystem::path>& folders);

// Joins one JSONL output file (rows with an "id") of checked shards (check_shards' order) into `out`: shard by
// shard, each shard's rows in its file's order (a torn last line of a killed run is not a row). Checks that each
// shard holds as many distinct rows as its manifest says and that no id is in two shards. Returns the rows written.
size_t merge_shard_rows(const std::vector<std::filesystem::path>& folders, const std::vector<ShardManifest>& manifests,
                        const std::string& file, const std::filesystem::path& out);

// Accumulates an inputs fingerprint (FNV-1a 64 over the fields, each length-prefixed), as 16 hex digits.
class Fingerprint {
 public:
  Fingerprint& add(std::string_view field);
  std::string hex() const;

 private:
  uint64_t state_ = 0xCBF29CE484222325ULL;  // FNV-1a 64 offset basis
};

}  // namespace guardkit
