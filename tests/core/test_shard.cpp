// util/shard.h: --shard parsing (K/N and the Slurm / Kubernetes Indexed Job environment), the stable row-to-shard
// hash (balanced, and a row stays in its shard when rows are added), and the checks `guardkit merge` makes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "test_util.h"
#include "util/error.h"
#include "util/shard.h"

using namespace guardkit;
namespace fs = std::filesystem;

namespace {

void clear_environment() {
  for (const char* v : {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX"})
    ::unsetenv(v);
}

}  // namespace

TEST(Shard, ParsesExplicitAndEnvironmentForms) {
  clear_environment();
  EXPECT_FALSE(parse_shard("").sharded());
  const Shard s = parse_shard("3/16");
  EXPECT_EQ(s.index, 3u);
  EXPECT_EQ(s.count, 16u);
  EXPECT_EQ(s.label(), "3/16");
  for (const char* bad : {"16/16", "3", "a/4", "-1/4", "1/0", "1/", "/4", "auto", "auto/4"})
    EXPECT_THROW(parse_shard(bad), Error) << bad;

  ::setenv("JOB_COMPLETION_INDEX", "5", 1);
  EXPECT_EQ(parse_shard("auto/8").index, 5u);
  EXPECT_THROW(parse_shard("auto"), Error);  // an Indexed Job does not export its count
  ::setenv("SLURM_ARRAY_TASK_ID", "12", 1);  // Slurm wins when both are set
  ::setenv("SLURM_ARRAY_TASK_MIN", "10", 1);
  ::setenv("SLURM_ARRAY_TASK_COUNT", "4", 1);
  const Shard slurm = parse_shard("auto");
  EXPECT_EQ(slurm.index, 2u);
  EXPECT_EQ(slurm.count, 4u);
  ::setenv("SLURM_ARRAY_TASK_ID", "14", 1);
  EXPECT_THROW(parse_shard("auto"), Error);  // 14 - 10 = 4 is not below 4
  clear_environment();
}

TEST(Shard, RowsSpreadEvenlyAndStayInTheirShard) {
  const Shard shards[4] = {{0, 4}, {1, 4}, {2, 4}, {3, 4}};
  std::vector<int> counts(4, 0);
  for (int row = 0; row < 4000; ++row) {
    const std::string id = "row-" + std::to_string(row);
    int owners = 0;
    for (int k = 0; k < 4; ++k)
      if (shards[k].owns(id)) ++owners, ++counts[k];
    EXPECT_EQ(owners, 1) << id;
  }
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(counts[k], 1000, 100) << k;
  // FNV-1a 64 of "a" (a published test vector): the hash cannot change between builds without this failing.
  EXPECT_EQ(stable_row_hash("a"), 0xaf63dc4c8601ec8cull);
}

TEST(Shard, MergeChecksEveryShardIsPresentCompleteAndConsistent) {
  const fs::path dir = test::temp_dir("shard_merge");
  auto write = [&](size_t k, size_t n, bool complete, const std::string& fingerprint, nlohmann::json options,
                   const std::vector<std::string>& ids) {
    static int folders = 0;
    const fs::path folder = dir / ("shard" + std::to_string(folders++));
    ShardManifest m{"eval", {k, n}, fingerprint, options, {{"rows.jsonl", ids.size()}}, complete};
    write_shard_manifest(folder, m);
    std::ofstream out(folder / "rows.jsonl");
    for (const auto& id : ids) out << nlohmann::json{{"id", id}, {"shard", k}}.dump() << "\n";
    return folder;
  };
  const nlohmann::json options = {{"model", "m"}};
  const fs::path a = write(0, 2, true, "f1", options, {"x", "y"});
  const fs::path b = write(1, 2, true, "f1", options, {"z"});
  auto message = [](const std::vector<fs::path>& folders) {
    try {
      check_shards(folders);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message({a}).find("shard 1/2 is missing"), std::string::npos) << message({a});
  EXPECT_NE(message({a, a}).find("given twice"), std::string::npos);
  EXPECT_NE(message({a, write(1, 2, false, "f1", options, {})}).find("not complete"), std::string::npos);
  EXPECT_NE(message({a, write(1, 2, true, "f2", options, {})}).find("other inputs"), std::string::npos);
  const fs::path other_options = dir / "other";
  write_shard_manifest(other_options, {"eval", {1, 2}, "f1", {{"model", "n"}}, {}, true});
  EXPECT_NE(message({a, other_options}).find("other options"), std::string::npos);
  EXPECT_NE(message({a, dir}).find("no shard.json"), std::string::npos);

  const auto manifests = check_shards({b, a});
  ASSERT_EQ(manifests.size(), 2u);
  EXPECT_EQ(manifests[0].shard.index, 0u);
  EXPECT_EQ(merge_shard_rows({b, a}, manifests, "rows.jsonl", dir / "merged.jsonl"), 3u);
  const auto merged = test::parse_jsonl(read_file(dir / "merged.jsonl"));
  ASSERT_EQ(merged.size(), 3u);
  EXPECT_EQ(merged[0]["id"], "x");
  EXPECT_EQ(merged[2]["id"], "z");

  // A shard folder changed after its run (a row removed) is refused.
  std::ofstream(b / "rows.jsonl", std::ios::trunc) << "";
  EXPECT_THROW(merge_shard_rows({a, b}, check_shards({a, b}), "rows.jsonl", dir / "merged.jsonl"), Error);
}
